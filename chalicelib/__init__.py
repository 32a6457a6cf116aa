"""Audio stitching service: business logic behind app.py, the worker and the CLI."""
