"""End to end over HTTP against the running local stack: API, worker, moto, real ffmpeg."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from chalicelib.options import ENGINE_VERSION
from tests.audio import decoded_duration, make_tone

from .conftest import WEBHOOK_SECRET, download_seconds, http, wait_for_job

pytestmark = pytest.mark.usefixtures("show_log_on_failure")

SAMPLE_SECONDS = {"samples/intro.mp3": 1.0, "samples/middle.mp3": 1.5, "samples/outro.mp3": 1.0}
# mp3 parts joined frame by frame keep each part's encoder delay and padding: up to two 26 ms
# frames per part. Far below the shortest part (1 s), so a lost or doubled part still fails.
MP3_SLACK = 0.06  # per part


def test_health_and_seeded_samples(stack):
    reply = http("GET", f"{stack.api}/health")
    assert reply.status == 200
    assert reply.json()["engine_version"] == ENGINE_VERSION
    state = stack.run_state()
    assert state["samples"] == list(SAMPLE_SECONDS)
    assert state["ready"] is True and state["api_url"] == stack.api
    s3 = stack.boto("s3")
    for key in SAMPLE_SECONDS:
        assert s3.head_object(Bucket="audio-stitch-input-dev", Key=key)["ContentLength"] > 1000
        assert key in stack.log()  # printed for the user to paste


def test_printed_curl_stitches_the_samples_inline_then_from_cache(stack, tmp_path):
    printed = next(line for line in stack.log().splitlines() if "curl -s -X POST" in line and "/stitch" in line)
    body = json.loads(printed.split("-d '", 1)[1].rstrip("'"))
    assert body == {"message_parts": list(SAMPLE_SECONDS)}

    first = http("POST", f"{stack.api}/stitch", body)
    assert first.status == 200, first.body
    result = first.json()
    assert result["cached"] is False
    assert result["format"] == "mp3"
    assert [p["index"] for p in result["parts"]] == [0, 1, 2]
    assert result["duration_s"] == pytest.approx(3.5, abs=3 * MP3_SLACK)
    measured = download_seconds(result["public_url"], tmp_path, "mp3")
    assert measured == pytest.approx(result["duration_s"], abs=MP3_SLACK)

    second = http("POST", f"{stack.api}/stitch", body)
    assert second.status == 200, second.body
    again = second.json()
    assert again["cached"] is True
    assert again["cache_key"] == result["cache_key"]
    assert again["size_bytes"] == result["size_bytes"]
    assert download_seconds(again["public_url"], tmp_path, "mp3") == pytest.approx(measured, abs=0.001)


def test_upload_over_presigned_post_then_async_job(stack, tmp_path):
    import requests

    upload = http("POST", f"{stack.api}/uploads", {"filename": "tone.wav"})
    assert upload.status == 201, upload.body
    slot = upload.json()
    assert slot["key"].startswith("uploads/") and slot["key"].endswith(".wav")
    tone = make_tone(tmp_path / "tone.wav", 2.0, fmt="wav")
    assert slot["method"] == "POST" and slot["max_bytes"] > tone.stat().st_size
    sent = requests.post(slot["upload_url"], data=slot["fields"], files={"file": ("tone.wav", tone.read_bytes())},
                         timeout=30)
    assert sent.status_code in (200, 204), sent.text

    queued = http("POST", f"{stack.api}/stitch",
                  {"message_parts": [slot["key"], "samples/intro.mp3"], "format": "wav", "async": True})
    assert queued.status == 202, queued.body
    ticket = queued.json()
    assert ticket["status"] == "queued" and ticket["status_url"] == f"/jobs/{ticket['job_id']}"

    job = wait_for_job(stack, ticket["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["cached"] is False and job["result"]["format"] == "wav"
    # A wav tone is exact; the mp3 part may carry about one frame of codec padding.
    seconds = download_seconds(job["result"]["public_url"], tmp_path, "wav")
    assert seconds == pytest.approx(3.0, abs=0.05)
    assert f"group={ticket['job_id'][:16]}" in stack.log()  # the worker's one line per job
    assert "ok in" in stack.log()


@pytest.mark.parametrize("body, field", [
    ({"message_parts": [{"key": "samples/intro.mp3", "start_s": "soon"}]}, "message_parts[0].start_s"),
    ({"message_parts": ["samples/intro.mp3"], "format": "aiff"}, "format"),
    ({"message_parts": []}, "message_parts"),
    ({"message_parts": ["samples/intro.mp3"], "colour": "blue"}, "colour"),
])
def test_bad_request_is_a_400_naming_the_field(stack, body, field):
    reply = http("POST", f"{stack.api}/stitch", body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["field"] == field
    assert field in error["message"]


def test_missing_key_is_a_400_naming_the_part(stack):
    reply = http("POST", f"{stack.api}/stitch", {"message_parts": ["samples/intro.mp3", "nowhere/gone.mp3"]})
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["part"] == 1
    assert "nowhere/gone.mp3" in error["message"]


def test_unknown_job_is_404(stack):
    assert http("GET", f"{stack.api}/jobs/{'0' * 64}").status == 404


def test_not_audio_fails_the_queued_job_naming_the_part(stack):
    stack.boto("s3").put_object(Bucket="audio-stitch-input-dev", Key="e2e/notes.mp3", Body=b"not audio at all " * 64)
    queued = http("POST", f"{stack.api}/stitch",
                  {"message_parts": ["samples/outro.mp3", "e2e/notes.mp3"], "async": True})
    assert queued.status == 202, queued.body
    job = wait_for_job(stack, queued.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["part"] == 1
    assert job["error"]["message"]


def test_url_part_is_fetched_by_the_worker(stack, tmp_path):
    from tests.httpserver import LocalServer

    tone = make_tone(tmp_path / "remote.mp3", 1.2)
    with LocalServer() as server:
        url = server.add_file("/remote.mp3", tone.read_bytes())
        reply = http("POST", f"{stack.api}/stitch", {"message_parts": [{"url": url}, "samples/outro.mp3"]})
        assert reply.status == 202, reply.body  # URL parts always go through the queue
        job = wait_for_job(stack, reply.json()["job_id"])
        assert server.hits("/remote.mp3", "GET") >= 1
    assert job["status"] == "succeeded", job
    seconds = download_seconds(job["result"]["public_url"], tmp_path, "mp3")
    assert seconds == pytest.approx(2.2, abs=2 * MP3_SLACK)


def test_webhook_is_delivered_signed_and_email_sent(stack, tmp_path):
    from tests.httpserver import LocalServer

    sent_before = len(_emails_to(stack, "listener@example.com"))
    with LocalServer() as receiver:
        hook = receiver.url("/hook")
        reply = http("POST", f"{stack.api}/stitch", {
            "message_parts": ["samples/middle.mp3", "samples/intro.mp3"], "format": "ogg", "async": True,
            "webhook_url": hook, "notify_email": "listener@example.com",
        })
        assert reply.status == 202, reply.body
        job_id = reply.json()["job_id"]
        job = wait_for_job(stack, job_id)
        assert job["status"] == "succeeded", job
        deadline = time.monotonic() + 30  # notification follows the status change
        while receiver.hits("/hook", "POST") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        posts = [(h, b) for (m, p, h), b in zip(receiver.requests, receiver.bodies, strict=True)
                 if m == "POST" and p == "/hook"]
    assert len(posts) == 1, receiver.requests
    headers, body = posts[0]
    signature = {k.lower(): v for k, v in headers.items()}["x-signature"]
    t = signature.split(",")[0].removeprefix("t=")
    assert abs(time.time() - int(t)) < 300
    expected = f"t={t},v1=" + hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == "succeeded"
    emails = _emails_to(stack, "listener@example.com")
    assert len(emails) == sent_before + 1
    assert emails[-1]["source"] == "noreply@example.com"
    assert "http://127.0.0.1" in emails[-1]["body"]  # the download link
    out = tmp_path / "joined.ogg"
    out.write_bytes(http("GET", job["result"]["public_url"]).body)
    assert decoded_duration(out) == pytest.approx(2.5, abs=2 * MP3_SLACK)


def _emails_to(stack, address: str) -> list[dict]:
    """E-mails moto's SES accepted for ``address``, read from its model dump."""
    messages = http("GET", f"{stack.moto}/moto-api/data.json").json()["ses"]["Message"]
    return [m for m in messages if address in m["destinations"].get("ToAddresses", [])]


def test_one_log_line_per_request(stack):
    before = len(stack.log())
    assert http("GET", f"{stack.api}/health?probe=log").status == 200
    unknown = http("POST", f"{stack.api}/no-such-route", {})
    # In the service's error shape (deployed, API Gateway answers 403 before Lambda runs).
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "not_found", unknown.body
    assert unknown.json()["error"]["field"] == "path" and "POST /stitch" in unknown.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while "/no-such-route" not in stack.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = stack.log()[before:].splitlines()
    assert len([line for line in lines if "GET /health" in line]) == 1  # app.py's line, not doubled
    assert len([line for line in lines if "POST /no-such-route" in line and " 404" in line]) == 1
