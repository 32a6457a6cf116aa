"""The Chalice entrypoints through chalice.test.Client, with every AWS resource in moto."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from chalice.test import Client

import app as app_module
from chalicelib.bootstrap import build_service
from chalicelib.config import Settings
from chalicelib.errors import TransientError
from tests.integration.stitchenv import make_env

PROJECT_DIR = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def env(tmp_path):
    from moto import mock_aws

    with mock_aws():
        e = make_env(tmp_path)
        app_module.set_service(e.service)
        try:
            with Client(app_module.app, project_dir=PROJECT_DIR) as client:
                e.client = client
                yield e
        finally:
            app_module.set_service(None)


def post(client, path, body, *, raw=None):
    data = raw if raw is not None else json.dumps(body)
    return client.http.post(path, headers={"Content-Type": "application/json"}, body=data)


def sqs_event(client, body: dict, receive_count: int = 1) -> dict:
    event = client.events.generate_sqs_event(message_bodies=[json.dumps(body)], queue_name=Settings.queue_name)
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return event


def test_health_reports_the_engine_version(env):
    from chalicelib.options import ENGINE_VERSION

    r = env.client.http.get("/health")
    assert r.status_code == 200 and r.json_body["engine_version"] == ENGINE_VERSION


def test_stitch_inline_then_cached(env):
    env.put_tone("a.mp3", 1.0)
    env.put_tone("b.mp3", 0.5, freq=660)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3", "b.mp3"]})
    assert r.status_code == 200, r.body
    assert r.json_body["cached"] is False and r.json_body["duration_s"] == pytest.approx(1.5, abs=0.1)
    assert set(r.json_body) >= {"public_url", "cached", "cache_key", "duration_s", "format", "size_bytes",
                                "parts", "expires_at"}
    assert r.headers["Content-Type"] == "application/json"
    again = post(env.client, "/stitch", {"message_parts": ["a.mp3", "b.mp3"]})
    assert again.status_code == 200 and again.json_body["cached"] is True
    assert again.json_body["cache_key"] == r.json_body["cache_key"]


def test_queued_job_through_the_sqs_handler(env):
    env.put_tone("a.mp3", 1.0)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3", "a.mp3"], "async": True})
    assert r.status_code == 202 and r.json_body["status"] == "queued"
    job_id = r.json_body["job_id"]
    status = env.client.http.get(r.json_body["status_url"])
    assert status.status_code == 200 and status.json_body["status"] == "queued"

    [msg] = env.messages()
    event = env.client.events.generate_sqs_event(message_bodies=[msg["Body"]], queue_name=Settings.queue_name)
    env.client.lambda_.invoke("process_job", event)
    done = env.client.http.get(f"/jobs/{job_id}").json_body
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["result"]["duration_s"] == pytest.approx(2.0, abs=0.1) and done["result"]["public_url"]
    assert set(done) >= {"job_id", "status", "progress", "result", "created_at", "updated_at"}

    # Redelivery of the same message: nothing changes.
    env.client.lambda_.invoke("process_job", event)
    assert env.client.http.get(f"/jobs/{job_id}").json_body["attempts"] == 1


def test_last_receive_marks_failed_and_the_handler_raises_for_the_dlq(env):
    def failing(*args, **kwargs):
        raise TransientError("ffmpeg was killed (simulated)")

    svc = build_service(env.settings, stitch=failing)
    app_module.set_service(svc)
    env.put_tone("a.mp3", 0.5)
    job_id = post(env.client, "/stitch", {"message_parts": ["a.mp3"], "async": True}).json_body["job_id"]
    with pytest.raises(TransientError):
        env.client.lambda_.invoke("process_job", sqs_event(env.client, {"job_id": job_id}, receive_count=1))
    assert env.client.http.get(f"/jobs/{job_id}").json_body["status"] == "queued"
    last = env.settings.max_receive_count
    with pytest.raises(TransientError):
        env.client.lambda_.invoke("process_job", sqs_event(env.client, {"job_id": job_id}, receive_count=last))
    failed = env.client.http.get(f"/jobs/{job_id}").json_body
    assert failed["status"] == "failed" and f"after {last} attempts" in failed["error"]["message"]


def test_malformed_messages_are_not_retried(env):
    for body in ("not json", json.dumps({"nope": 1}), json.dumps([1])):
        event = env.client.events.generate_sqs_event(message_bodies=[body])
        env.client.lambda_.invoke("process_job", event)  # no exception: SQS deletes it


def test_bodies_that_are_not_json_objects_are_400(env):
    for raw in ("{not json", "[1, 2]", "", '"text"'):
        r = post(env.client, "/stitch", None, raw=raw)
        assert r.status_code == 400 and r.json_body["error"]["field"] == "body", raw
        assert r.json_body["error"]["code"] == "bad_request"


BAD_FIELDS = [
    ({"message_parts": []}, "message_parts"),
    ({"message_parts": ["a"], "speed": 2}, "speed"),
    ({"message_parts": ["a", "b", "c", {"key": "d", "start_s": "x"}]}, "message_parts[3].start_s"),
    ({"message_parts": ["a", {"key": "../secret"}]}, "message_parts[1].key"),
    ({"message_parts": [{"url": "ftp://example.com/a.mp3"}]}, "message_parts[0].url"),
    ({"message_parts": ["a"], "format": "aiff"}, "format"),
    ({"message_parts": ["a"], "notify_email": "nobody"}, "notify_email"),
    ({"message_parts": ["a"], "webhook_url": "http://10.0.0.1/hook"}, "webhook_url"),
    ({"message_parts": [{"url": "http://169.254.169.254/latest/meta-data/"}]}, "message_parts[0].url"),
    ({"message_parts": ["a"], "async": 1}, "async"),
]


def test_bad_fields_are_400_naming_the_field(env):
    for body, field in BAD_FIELDS:
        r = post(env.client, "/stitch", body)
        assert r.status_code == 400, (body, r.body)
        assert r.json_body["error"]["field"] == field and r.json_body["error"]["message"]
    assert env.messages() == []


def test_missing_key_and_non_audio_are_400_naming_the_part(env):
    env.put_tone("a.mp3", 0.5)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3", "missing.mp3"]})
    assert r.status_code == 400 and r.json_body["error"] == {
        "code": "part_not_found", "part": 1,
        "message": f"part 1 (missing.mp3): no such key in bucket {env.settings.bucket_input}"}
    env.put_bytes("readme.txt", b"hello, not audio\n" * 10)
    r = post(env.client, "/stitch", {"message_parts": ["readme.txt", "a.mp3"]})
    assert r.status_code == 400 and r.json_body["error"]["part"] == 0
    assert r.json_body["error"]["code"] == "unsupported_audio"


def test_unknown_job_is_404(env):
    r = env.client.http.get("/jobs/" + "0" * 64)
    assert r.status_code == 404 and r.json_body["error"]["code"] == "not_found"
    assert env.client.http.get("/jobs/not-a-job").status_code == 404


def test_uploads_returns_a_presigned_post(env):
    r = post(env.client, "/uploads", {"filename": "intro.mp3"})
    assert r.status_code == 201
    assert r.json_body["key"].startswith("uploads/") and r.json_body["fields"]["key"] == r.json_body["key"]
    assert r.json_body["method"] == "POST" and r.json_body["max_bytes"] == env.settings.max_upload_bytes
    assert post(env.client, "/uploads", {"filename": "../../x"}).status_code == 400


def test_unexpected_errors_are_a_generic_500(env):
    broken = build_service(dataclasses.replace(env.settings, jobs_table="no-such-table"))
    app_module.set_service(broken)
    env.put_tone("a.mp3", 0.5)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3"], "async": True})
    assert r.status_code == 500
    assert r.json_body == {"error": {"code": "internal_error", "message": "internal error"}}


def test_transient_errors_are_503_with_retry_after(env):
    # SQS unreachable (queue deleted under us): the job record exists, the send fails => retry later.
    env.put_tone("a.mp3", 0.5)
    svc = build_service(dataclasses.replace(env.settings))

    def refuse(*_a, **_k):
        raise TransientError("SQS is throttling (simulated)")

    svc.queue.send = refuse
    app_module.set_service(svc)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3"], "async": True})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    # The client's retry finds the queued job and sends its message after all.
    app_module.set_service(env.service)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3"], "async": True})
    assert r.status_code == 202 and len(env.messages()) == 1


def test_one_log_line_per_request_and_per_job(env, caplog):
    import logging

    app_module.log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        env.put_tone("a.mp3", 0.5)
        post(env.client, "/stitch", {"message_parts": ["a.mp3", "nope.mp3"]})
        job_id = post(env.client, "/stitch", {"message_parts": ["a.mp3"], "async": True}).json_body["job_id"]
        env.client.lambda_.invoke("process_job", sqs_event(env.client, {"job_id": job_id}))
    finally:
        app_module.log.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name in (app_module.log.name, "chalicelib.service")]
    requests = [m for m in lines if m.startswith("POST /stitch")]
    assert len(requests) == 2
    assert " 400 " in requests[0] and "error=part_not_found" in requests[0]
    assert " 202 " in requests[1] and job_id in requests[1]
    jobs = [m for m in lines if m.startswith(f"job={job_id}")]
    assert len(jobs) == 1 and "outcome=succeeded" in jobs[0] and "attempt=1" in jobs[0]


def test_untyped_stitch_errors_are_500_without_details(env):
    from chalicelib.errors import StitchError

    def broken_engine(*_a, **_k):
        raise StitchError("ffmpeg exited 1: /tmp/stitch-abc/part-000.mp3: Invalid data")

    app_module.set_service(build_service(env.settings, stitch=broken_engine))
    env.put_tone("a.mp3", 0.5)
    r = post(env.client, "/stitch", {"message_parts": ["a.mp3"]})
    assert r.status_code == 500 and r.json_body["error"]["code"] == "internal_error"
    message = r.json_body["error"]["message"]
    assert message.startswith("the audio engine failed") and "ffmpeg" not in message and "/tmp" not in message
    assert env.work_dir_entries() == []
