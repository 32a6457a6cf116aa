"""The in-process API the bad-input corpus and the fuzzer drive: chalice.test.Client over app.py,
every AWS resource in moto, one parts file in the input bucket."""
from __future__ import annotations

import json
from pathlib import Path

from chalice.test import Client

import app as app_module

PROJECT_DIR = str(Path(__file__).resolve().parents[2])
REAL_KEY = "in/tone.mp3"


def api_client(tmp_path):
    """A context manager yielding (client, env): moto active, the service injected."""
    import contextlib

    from moto import mock_aws

    from tests.integration.stitchenv import make_env

    @contextlib.contextmanager
    def running():
        with mock_aws():
            env = make_env(tmp_path)
            env.put_tone(REAL_KEY, 0.5)
            app_module.set_service(env.service)
            try:
                with Client(app_module.app, project_dir=PROJECT_DIR) as client:
                    yield client, env
            finally:
                app_module.set_service(None)

    return running()


def send(client, method: str, path: str, body=None, *, raw: str | bytes | None = None,
         content_type: str | None = "application/json"):
    """One request; ``body`` is JSON-encoded unless ``raw`` is given."""
    headers = {"Content-Type": content_type} if content_type else {}
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return client.http.request(method, path, headers=headers, body=data or b"")


def assert_error_shape(response, *, names_what: bool = True) -> dict:
    """The documented ``{"error": {"code", "message", "field"|"part"}}``; returns the inner dict."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = json.loads(response.body)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and error["message"], error
    assert set(error) <= {"code", "message", "field", "part"}, error
    if names_what:
        assert "field" in error or "part" in error, error
    return error
