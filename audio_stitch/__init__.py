"""`audio-stitch`: the command line (local stitching, the local stack, provisioning)."""
