"""The files the API serves as they are: the web page and the OpenAPI document.

Read on the first request that needs them, not at import: `import app` stays cheap (cold start).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".js": "text/javascript",
                 ".css": "text/css"}


@lru_cache(maxsize=8)
def asset(name: str) -> tuple[str, str]:
    """(text, content type) of ``static/<name>``; the name is the route's, never the client's."""
    path = STATIC_DIR / name
    return path.read_text(encoding="utf-8"), CONTENT_TYPES[path.suffix]
