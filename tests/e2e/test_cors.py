"""CORS on the local stack: the API's preflight (chalice local, CORS_ALLOW_ORIGINS) and the input
bucket's rule for the page's direct uploads (moto applying the bucket's own rules, as S3 does)."""
from __future__ import annotations

import pytest

from .conftest import CORS_ORIGIN, http

pytestmark = pytest.mark.usefixtures("show_log_on_failure")


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def test_api_answers_the_preflight_for_the_configured_origin(stack):
    pre = http("OPTIONS", f"{stack.api}/stitch", headers={
        "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key"})
    headers = _lower(pre.headers)
    assert pre.status == 200
    assert headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in headers["access-control-allow-methods"].split(",")
    assert {"content-type", "x-api-key"} <= {h.lower() for h in headers["access-control-allow-headers"].split(",")}
    post = http("POST", f"{stack.api}/stitch", {"message_parts": []}, headers={"Origin": CORS_ORIGIN})
    assert post.status == 400 and _lower(post.headers)["access-control-allow-origin"] == CORS_ORIGIN


def test_input_bucket_answers_an_upload_preflight_and_the_output_bucket_does_not(stack):
    slot = http("POST", f"{stack.api}/uploads", {"filename": "a.mp3"}).json()
    url = slot.get("upload_url") or slot["url"]
    ask = {"Origin": "http://127.0.0.1:1234", "Access-Control-Request-Method": slot["method"],
           "Access-Control-Request-Headers": "content-type"}
    pre = http("OPTIONS", url, headers=ask)
    assert pre.status == 200, pre.body
    assert _lower(pre.headers)["access-control-allow-origin"] in ("*", ask["Origin"])
    # Control: a bucket without a rule allows no origin (moto says 200 with no CORS headers where S3
    # says 403; a browser refuses both), so the answer above is the input bucket's rule.
    out = http("OPTIONS", f"{stack.moto}/audio-stitch-output-dev/cache/x.mp3", headers=ask)
    assert "access-control-allow-origin" not in _lower(out.headers)
