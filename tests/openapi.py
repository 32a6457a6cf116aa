"""Checks a real HTTP answer against chalicelib/static/openapi.json (the document the API serves)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from openapi_schema_validator import OAS31Validator

DOC_PATH = Path(__file__).resolve().parents[1] / "chalicelib" / "static" / "openapi.json"


@lru_cache(maxsize=1)
def document() -> dict:
    return json.loads(DOC_PATH.read_text())


def response_schema(route: str, method: str, status: int, content_type: str = "application/json") -> dict:
    """The documented schema of one answer; KeyError when that status is not documented."""
    responses = document()["paths"][route][method.lower()]["responses"]
    media = responses[str(status)]["content"]
    return media[content_type.split(";")[0].strip()]["schema"]


def check(route: str, method: str, status: int, body, content_type: str = "application/json") -> None:
    """Raise if ``body`` (parsed JSON, or text) is not what the document says ``route`` answers."""
    schema = response_schema(route, method, status, content_type)
    # The fragment's #/components/... references resolve against the whole document.
    OAS31Validator({**schema, "components": document()["components"]}).validate(body)
