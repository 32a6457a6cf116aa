"""The service wired to its real adapters: moto for AWS, ffmpeg for the engine, yt-dlp for URL parts.

One test per seam the fakes in test_service.py stand in for; the branches themselves are tested there.
"""
from __future__ import annotations

import pytest

from chalicelib.bootstrap import build_service
from chalicelib.errors import UnsupportedAudio
from chalicelib.notify import verify
from chalicelib.service import Queued
from tests.audio import decoded_duration
from tests.integration.stitchenv import SECRET, Receiver, make_env


@pytest.fixture
def env(tmp_path):
    from moto import mock_aws

    with mock_aws():
        yield make_env(tmp_path)


def _submit(service, body):
    """The outcome as (status, body), the status being the one app.py answers with."""
    outcome = service.submit(body)
    return (202 if isinstance(outcome, Queued) else 200), outcome.body()


def _ab(env, a=1.0, b=1.5):
    env.put_tone("a.mp3", a, freq=440)
    env.put_tone("b.mp3", b, freq=660)


def test_miss_renders_inline_then_the_same_request_is_a_cache_hit(env):
    _ab(env)
    status, body = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"]})
    assert status == 200 and body["cached"] is False
    assert body["duration_s"] == pytest.approx(2.5, abs=0.1) and body["format"] == "mp3"
    assert [p["index"] for p in body["parts"]] == [0, 1]
    assert body["parts"][1]["end_s"] == pytest.approx(body["duration_s"], abs=0.01)
    key = f"cache/{body['cache_key']}.mp3"
    head = env.s3.head_object(Bucket=env.settings.bucket_output, Key=key)
    assert head["ContentType"] == "audio/mpeg" and head["ContentLength"] == body["size_bytes"]
    assert f'filename="stitched-{body["cache_key"][:12]}.mp3"' in head["ContentDisposition"]
    assert key in body["public_url"] and "X-Amz-Expires=3600" in body["public_url"]
    assert decoded_duration(env.download_output(key, "out.mp3")) == pytest.approx(2.5, abs=0.1)
    assert env.work_dir_entries() == []  # the inline work dir is removed

    status, hit = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"]})
    assert status == 200 and hit["cached"] is True and hit["cache_key"] == body["cache_key"]
    for name in ("size_bytes", "duration_s", "parts", "format", "mode", "join", "added_silence_ms"):
        assert hit[name] == body[name], name
    assert env.messages() == []  # nothing was queued


def test_not_audio_inline_is_a_400_naming_the_part_and_writes_nothing(env):
    env.put_tone("a.mp3", 0.5)
    env.put_bytes("notes.txt", b"this is not audio at all\n" * 20)
    with pytest.raises(UnsupportedAudio) as info:
        _submit(env.service, {"message_parts": ["a.mp3", "notes.txt"]})
    assert info.value.part == 1 and info.value.status == 400
    assert env.s3.list_objects_v2(Bucket=env.settings.bucket_output).get("KeyCount") == 0
    assert env.work_dir_entries() == []


def test_webhook_receives_the_signed_job_once(tmp_path):
    from moto import mock_aws

    with mock_aws(), Receiver() as rx:
        e = make_env(tmp_path, allow_loopback_urls=True)
        _ab(e)
        _, body = _submit(e.service, {"message_parts": ["a.mp3", "b.mp3"], "webhook_url": rx.url, "async": True})
        assert e.service.run_job(body["job_id"]) == "succeeded"
        assert e.service.run_job(body["job_id"], receive_count=2) == "noop"
    [req] = rx.requests
    assert verify(req["body"], SECRET, req["headers"]["X-Signature"])
    [payload] = rx.bodies()
    assert payload["job_id"] == body["job_id"] and payload["status"] == "succeeded"
    assert payload["result"]["public_url"] and payload["result"]["duration_s"] == pytest.approx(2.5, abs=0.1)


def test_url_parts_always_go_to_the_queue_and_the_worker_fetches_them(tmp_path):
    from moto import mock_aws

    from tests.audio import make_tone
    from tests.httpserver import LocalServer

    with mock_aws(), LocalServer() as srv:
        e = make_env(tmp_path, allow_loopback_urls=True)
        e.put_tone("a.mp3", 1.0)
        srv.add_file("/talk.mp3", make_tone(tmp_path / "talk.mp3", 1.5, freq=330).read_bytes())
        request = {"message_parts": ["a.mp3", {"url": srv.url("/talk.mp3"), "end_s": 1.0}]}
        status, body = _submit(e.service, {**request, "notify_email": "first@example.com"})
        assert status == 202  # even though it is small and not async
        assert e.service.run_job(body["job_id"]) == "succeeded"
        result = e.service.job_status(body["job_id"])["result"]
        assert result["duration_s"] == pytest.approx(2.0, abs=0.1)
        # The result is stored under the content key (source id), not the job id (URL string).
        assert result["cache_key"] != body["job_id"]
        assert decoded_duration(e.download_output(f"cache/{result['cache_key']}.mp3", "u.mp3")) == pytest.approx(
            2.0, abs=0.1)
        assert e.work_dir_entries() == []
        assert srv.hits("/talk.mp3") >= 1
        messages = len(e.messages())

        # Asked again: the finished job answers; nothing is queued or fetched.
        status, again = _submit(e.service, request)
        assert (status, again["job_id"], again["status"]) == (202, body["job_id"], "succeeded")
        assert len(e.messages()) == messages

        # Asked again by someone new who wants an e-mail: a new run (served from the cache) tells only them.
        _, third = _submit(e.service, {**request, "notify_email": "second@example.com"})
        assert third["status"] == "queued" and e.service.jobs.get(body["job_id"]).run == 2
        assert e.service.run_job(body["job_id"]) == "succeeded"
        assert e.service.job_status(body["job_id"])["result"]["cached"] is True
        assert sorted(m.destinations["ToAddresses"][0] for m in e.sent_emails()) == [
            "first@example.com", "second@example.com"]


def test_create_upload_presigns_a_capped_post_under_uploads(env):
    import base64
    import json

    import requests

    body = env.service.create_upload({"filename": "intro.mp3"})
    assert body["key"].startswith("uploads/") and body["key"].endswith("/intro.mp3")
    assert body["method"] == "POST" and body["expires_at"].endswith("Z")
    assert body["fields"]["key"] == body["key"] and body["max_bytes"] == env.settings.max_upload_bytes
    policy = json.loads(base64.b64decode(body["fields"]["policy"]))
    assert ["content-length-range", 1, env.settings.max_upload_bytes] in policy["conditions"]
    # The link really accepts the form (moto intercepts the HTTP call in-process).
    r = requests.post(body["upload_url"], data=body["fields"], files={"file": ("intro.mp3", b"ID3 fake")}, timeout=5)
    assert r.status_code in (200, 204), r.text
    assert env.s3.head_object(Bucket=env.settings.bucket_input, Key=body["key"])["ContentLength"] == 8
    assert env.service.create_upload({"filename": "intro.mp3"})["key"] != body["key"]


def test_a_cache_hit_builds_only_the_s3_client(env):
    _ab(env)
    _submit(env.service, {"message_parts": ["a.mp3"]})
    fresh = build_service(env.settings)  # a cold API container
    status, body = _submit(fresh, {"message_parts": ["a.mp3"]})
    assert status == 200 and body["cached"] is True
    assert fresh.store.s3._client is not None
    assert (fresh.jobs.db._client, fresh.queue.sqs._client, fresh.notifier.ses._client) == (None, None, None)
