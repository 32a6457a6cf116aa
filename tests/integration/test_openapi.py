"""openapi.json: a valid OpenAPI 3.1 document that matches the routes, the request contract and
the error codes, served at GET /openapi.json; real answers validate against it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import validate

import app as app_module
from chalicelib import errors
from chalicelib.options import PartOptions
from chalicelib.spec import PART_SOURCES, TOP_LEVEL_FIELDS
from tests import openapi
from tests.integration.test_app import env, post  # noqa: F401 - env is a fixture

ROOT = Path(__file__).resolve().parents[2]
DOC = openapi.document()
SCHEMAS = DOC["components"]["schemas"]


def test_document_is_valid_openapi_3_1():
    assert DOC["openapi"].startswith("3.1")
    validate(DOC)


def test_every_route_is_documented_and_nothing_else():
    routes = {(path, method.lower()) for path, methods in app_module.app.routes.items() for method in methods}
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert routes == documented


def test_request_fields_match_the_validator():
    # join is the engine's join policy (issue 9); the document has it whether or not this checkout's
    # Options does yet.
    assert set(SCHEMAS["StitchRequest"]["properties"]) == set(TOP_LEVEL_FIELDS) | {"join"}
    for name in ("KeyPart", "UrlPart"):
        assert set(SCHEMAS[name]["properties"]) - set(PART_SOURCES) == set(PartOptions.FIELDS)


def test_every_error_code_is_documented():
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.StitchError)}
    assert codes <= set(SCHEMAS["Error"]["properties"]["code"]["enum"])


def test_checker_rejects_a_wrong_answer():
    # Control: the validation below is able to fail.
    with pytest.raises(ValidationError):
        openapi.check("/stitch", "POST", 400, {"error": {"code": "not_found", "message": "x"}})
    with pytest.raises(ValidationError):
        openapi.check("/health", "GET", 200, {"status": "ok"})
    with pytest.raises(KeyError):
        openapi.check("/health", "GET", 404, {})


def test_real_answers_match_the_document(env):  # noqa: F811
    c = env.client
    env.put_tone("a.mp3", 1.0)
    env.put_tone("b.mp3", 0.5, freq=660)
    answers = []

    def record(route, method, r):
        headers = {k.lower(): v for k, v in r.headers.items()}
        answers.append((route, method, r.status_code, headers.get("content-type", ""), r.body))
        return r

    record("/health", "GET", c.http.get("/health"))
    record("/openapi.json", "GET", c.http.get("/openapi.json"))
    record("/", "GET", c.http.get("/"))
    body = {"message_parts": ["a.mp3", {"key": "b.mp3", "gain_db": -3}], "gap_ms": 100}
    record("/stitch", "POST", post(c, "/stitch", body))  # 200, made inline
    record("/stitch", "POST", post(c, "/stitch", body))  # 200, cached
    queued = record("/stitch", "POST", post(c, "/stitch", {**body, "format": "wav", "async": True}))
    record("/jobs/{job_id}", "GET", c.http.get(f"/jobs/{json.loads(queued.body)['job_id']}"))
    record("/jobs/{job_id}", "GET", c.http.get("/jobs/nope"))
    record("/stitch", "POST", post(c, "/stitch", {"message_parts": ["a.mp3"], "gap_ms": -1}))
    record("/stitch", "POST", post(c, "/stitch", {"message_parts": ["a.mp3", "missing.mp3"]}))
    record("/stitch", "POST", post(c, "/stitch", None, raw="{not json"))
    record("/uploads", "POST", post(c, "/uploads", {"filename": "x.wav"}))
    record("/uploads", "POST", post(c, "/uploads", {"filename": "../x.wav"}))

    statuses = [(route, status) for route, _, status, _, _ in answers]
    assert statuses == [("/health", 200), ("/openapi.json", 200), ("/", 200), ("/stitch", 200), ("/stitch", 200),
                        ("/stitch", 202), ("/jobs/{job_id}", 200), ("/jobs/{job_id}", 404), ("/stitch", 400),
                        ("/stitch", 400), ("/stitch", 400), ("/uploads", 201), ("/uploads", 400)]
    for route, method, status, content_type, raw in answers:
        text = raw.decode()
        parsed = text if content_type.startswith("text/html") else json.loads(text)
        openapi.check(route, method, status, parsed, content_type)
    assert json.loads(answers[1][4]) == DOC  # the served document is the file


def _fresh_app(extra: dict) -> dict:
    """A preflight and a GET through chalice's LocalGateway (what `chalice local` serves), in a new
    interpreter with ``extra`` in its environment: CORS is read when Chalice loads the app."""
    script = """\
import json, app
from chalice.config import Config
from chalice.local import LocalGateway
gw = LocalGateway(app.app, Config())
pre = gw.handle_request("OPTIONS", "/stitch", {"origin": "https://app.example", "access-control-request-method":
                        "POST", "access-control-request-headers": "content-type,x-api-key"}, b"")
get = gw.handle_request("GET", "/health", {"origin": "https://app.example"}, b"")
print(json.dumps({"pre": [pre["statusCode"], pre["headers"]], "get": [get["statusCode"], get["headers"]]}))
"""
    base = {k: v for k, v in os.environ.items() if k != "CORS_ALLOW_ORIGINS"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**base, **extra}, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cors_is_off_without_origins():
    out = _fresh_app({"CORS_ALLOW_ORIGINS": ""})
    assert out["get"][0] == 200
    assert not any(k.lower().startswith("access-control-allow-origin") for k in out["get"][1])
    assert not any(k.lower().startswith("access-control-allow-origin") for k in out["pre"][1])


def test_cors_origin_answers_preflight_and_requests():
    out = _fresh_app({"CORS_ALLOW_ORIGINS": "https://app.example"})
    status, headers = out["pre"]
    headers = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in headers["access-control-allow-methods"]
    assert {"content-type", "x-api-key"} <= {h.lower() for h in headers["access-control-allow-headers"].split(",")}
    assert headers["access-control-max-age"] == "600"
    get_headers = {k.lower(): v for k, v in out["get"][1].items()}
    assert get_headers["access-control-allow-origin"] == "https://app.example"
    assert get_headers["access-control-expose-headers"] == "Retry-After"
