"""The use cases against moto and the real engine: cache hit/miss, inline, queued jobs, the worker."""
from __future__ import annotations

import threading

import pytest

from chalicelib import results
from chalicelib.bootstrap import build_service
from chalicelib.errors import NotFound, PartNotFound, TransientError, UnsupportedAudio
from chalicelib.jobs import QUEUED, RUNNING
from chalicelib.notify import verify
from chalicelib.service import ProgressReporter
from chalicelib.store import Store
from tests.audio import decoded_duration
from tests.unit.stitchenv import SECRET, Receiver, make_env


@pytest.fixture
def env(tmp_path):
    from moto import mock_aws

    with mock_aws():
        yield make_env(tmp_path)


def _ab(env, a=1.0, b=1.5):
    env.put_tone("a.mp3", a, freq=440)
    env.put_tone("b.mp3", b, freq=660)


def test_miss_renders_inline_then_the_same_request_is_a_cache_hit(env):
    _ab(env)
    status, body = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
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

    status, hit = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert status == 200 and hit["cached"] is True and hit["cache_key"] == body["cache_key"]
    for name in ("size_bytes", "duration_s", "parts", "format", "mode", "join", "added_silence_ms"):
        assert hit[name] == body[name], name
    assert env.messages() == []  # nothing was queued


def test_join_policy_reaches_the_engine_and_the_body(env):
    _ab(env)
    _, exact = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "join": "exact"})
    assert (exact["join"], exact["mode"], exact["added_silence_ms"]) == ("exact", "encode", 0.0)
    _, copy = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "join": "copy"})
    assert copy["cache_key"] != exact["cache_key"]  # join is an option: part of the key
    assert (copy["join"], copy["mode"]) == ("copy", "copy") and copy["added_silence_ms"] > 20
    _, hit = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "join": "copy"})
    assert hit["cached"] is True and hit["join"] == "copy" and hit["added_silence_ms"] == copy["added_silence_ms"]


def test_order_matters_and_a_replaced_input_changes_the_key(env):
    _ab(env)
    _, ab = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    _, ba = env.service.submit({"message_parts": ["b.mp3", "a.mp3"]})
    assert ab["cache_key"] != ba["cache_key"] and ba["cached"] is False
    assert ba["parts"][0]["end_s"] == pytest.approx(1.5, abs=0.06)
    env.put_tone("a.mp3", 2.0, freq=550)  # same key, new content => new ETag
    _, again = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert again["cached"] is False and again["cache_key"] != ab["cache_key"]
    assert again["duration_s"] == pytest.approx(3.5, abs=0.1)


def test_trim_gain_and_format_reach_the_engine(env):
    env.put_tone("a.wav", 2.0, fmt="wav")
    status, body = env.service.submit({"message_parts": [{"key": "a.wav", "start_s": 0.5, "end_s": 1.25,
                                                          "gain_db": -6}], "format": "wav"})
    assert status == 200 and body["format"] == "wav"
    out = env.download_output(f"cache/{body['cache_key']}.wav", "t.wav")
    assert decoded_duration(out) == pytest.approx(0.75, abs=0.02)


def test_missing_key_is_a_400_naming_the_part(env):
    env.put_tone("a.mp3", 0.5)
    with pytest.raises(PartNotFound) as info:
        env.service.submit({"message_parts": ["a.mp3", "nope/missing.mp3"]})
    assert info.value.part == 1 and info.value.status == 400 and "nope/missing.mp3" in info.value.message


def test_not_audio_inline_is_a_400_naming_the_part_and_writes_nothing(env):
    env.put_tone("a.mp3", 0.5)
    env.put_bytes("notes.txt", b"this is not audio at all\n" * 20)
    with pytest.raises(UnsupportedAudio) as info:
        env.service.submit({"message_parts": ["a.mp3", "notes.txt"]})
    assert info.value.part == 1 and info.value.status == 400
    assert env.s3.list_objects_v2(Bucket=env.settings.bucket_output).get("KeyCount") == 0
    assert env.work_dir_entries() == []


def test_queued_job_runs_in_the_worker_and_then_serves_from_cache(env):
    _ab(env)
    status, body = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True})
    assert status == 202 and body["status"] == "queued" and body["status_url"] == f"/jobs/{body['job_id']}"
    assert env.service.job_status(body["job_id"])["status"] == "queued"
    [msg] = env.messages()
    assert msg["Attributes"]["MessageGroupId"] == body["job_id"] == msg["Attributes"]["MessageDeduplicationId"]

    assert env.service.run_job(body["job_id"]) == "succeeded"
    view = env.service.job_status(body["job_id"])
    assert view["status"] == "succeeded" and view["progress"] == 1.0 and view["attempts"] == 1
    result = view["result"]
    assert result["cache_key"] == body["job_id"] and result["duration_s"] == pytest.approx(2.5, abs=0.1)
    assert result["public_url"] and result["expires_at"].endswith("Z")
    out = env.download_output(f"cache/{body['job_id']}.mp3", "q.mp3")
    assert decoded_duration(out) == pytest.approx(2.5, abs=0.1)
    assert env.work_dir_entries() == []

    status, hit = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert status == 200 and hit["cached"] is True and hit["cache_key"] == body["job_id"]


def test_inputs_over_the_inline_limit_are_queued(tmp_path):
    from moto import mock_aws

    with mock_aws():
        e = make_env(tmp_path, inline_max_bytes=1000)
        _ab(e)
        status, body = e.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
        assert status == 202 and len(e.messages()) == 1


def test_work_that_needs_a_re_encode_has_a_smaller_inline_budget(tmp_path):
    from moto import mock_aws

    with mock_aws():
        e = make_env(tmp_path, inline_max_bytes=10_000_000, inline_encode_max_bytes=10_000)
        _ab(e)  # ~40 KB of MP3
        assert e.service.submit({"message_parts": ["a.mp3", "b.mp3"]})[0] == 200  # a frame-level copy
        for variant in ({"message_parts": ["a.mp3", "b.mp3"], "gap_ms": 100},
                        {"message_parts": ["a.mp3", {"key": "b.mp3", "end_s": 1}]},
                        {"message_parts": ["a.mp3", "b.mp3"], "format": "wav"}):
            assert e.service.submit(variant)[0] == 202, variant


def test_identical_concurrent_requests_share_one_job_and_each_target_is_notified_once(env):
    _ab(env)
    n = 4
    barrier = threading.Barrier(n)
    answers = [None] * n

    def submit(i):
        barrier.wait()
        answers[i] = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True,
                                         "notify_email": f"user{i}@example.com"})

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    job_id = answers[0][1]["job_id"]
    assert len(env.messages()) == 1
    assert env.service.jobs.get(job_id).emails == {f"user{i}@example.com" for i in range(n)}

    assert env.service.run_job(job_id) == "succeeded"
    sent = env.sent_emails()
    assert sorted(m.destinations["ToAddresses"][0] for m in sent) == [f"user{i}@example.com" for i in range(n)]
    assert all(job_id in m.body for m in sent)

    # A redelivered message for the finished job changes nothing and sends nothing.
    assert env.service.run_job(job_id, receive_count=2) == "noop"
    assert len(env.sent_emails()) == n
    assert env.service.jobs.get(job_id).attempts == 1


def test_webhook_receives_the_signed_job_once(tmp_path):
    from moto import mock_aws

    with mock_aws(), Receiver() as rx:
        e = make_env(tmp_path, allow_loopback_urls=True)
        _ab(e)
        _, body = e.service.submit({"message_parts": ["a.mp3", "b.mp3"], "webhook_url": rx.url, "async": True})
        assert e.service.run_job(body["job_id"]) == "succeeded"
        assert e.service.run_job(body["job_id"], receive_count=2) == "noop"
    [req] = rx.requests
    assert verify(req["body"], SECRET, req["headers"]["X-Signature"])
    [payload] = rx.bodies()
    assert payload["job_id"] == body["job_id"] and payload["status"] == "succeeded"
    assert payload["result"]["public_url"] and payload["result"]["duration_s"] == pytest.approx(2.5, abs=0.1)


def test_permanent_failure_fails_the_job_at_once_and_notifies_the_reason(env):
    env.put_tone("a.mp3", 0.5)
    env.put_bytes("notes.txt", b"plain text, no audio\n" * 20)
    _, body = env.service.submit({"message_parts": ["a.mp3", "notes.txt"], "async": True,
                                  "notify_email": "me@example.com"})
    assert env.service.run_job(body["job_id"]) == "failed"  # no exception: SQS must not retry
    view = env.service.job_status(body["job_id"])
    assert view["status"] == "failed" and view["error"]["part"] == 1 and "result" not in view
    assert view["error"]["code"] == "unsupported_audio"
    [mail] = env.sent_emails()
    assert "failed" in mail.subject and "(part 1)" in mail.body
    assert env.work_dir_entries() == []


def test_resubmitting_a_failed_job_runs_it_again(env):
    env.put_bytes("bad.mp3", b"\x00" * 2000)
    _, body = env.service.submit({"message_parts": ["bad.mp3"], "async": True, "notify_email": "a@example.com"})
    assert env.service.run_job(body["job_id"]) == "failed"
    _, again = env.service.submit({"message_parts": ["bad.mp3"], "async": True, "notify_email": "b@example.com"})
    assert again["job_id"] == body["job_id"]
    job = env.service.jobs.get(body["job_id"])
    assert job.status == QUEUED and job.run == 2 and job.error is None
    assert job.emails == {"b@example.com"}  # a@ was told about run 1 already
    dedup = sorted(m["Attributes"]["MessageDeduplicationId"] for m in env.messages())
    assert dedup == [body["job_id"], f"{body['job_id']}-2"]


class Flaky:
    """The real engine, behind a fault injector: the first ``failures`` calls raise ``exc``."""

    def __init__(self, failures, exc=None):
        from chalicelib.engine import stitch

        self.real, self.failures, self.calls = stitch, failures, 0
        self.exc = exc or TransientError("ffmpeg was killed (simulated)")

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.real(*args, **kwargs)


def _flaky_service(env, flaky):
    svc = build_service(env.settings, stitch=flaky)
    svc.notifier.sleep = lambda _s: None
    return svc


def test_transient_failure_raises_releases_the_job_and_the_retry_succeeds(env):
    _ab(env)
    svc = _flaky_service(env, Flaky(1))
    _, body = svc.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True, "notify_email": "me@example.com"})
    with pytest.raises(TransientError):
        svc.run_job(body["job_id"], receive_count=1)
    job = svc.jobs.get(body["job_id"])
    assert job.status == QUEUED and job.attempts == 1 and env.sent_emails() == []
    assert env.work_dir_entries() == []
    assert svc.run_job(body["job_id"], receive_count=2) == "succeeded"
    assert svc.jobs.get(body["job_id"]).attempts == 2
    assert len(env.sent_emails()) == 1


def test_unexpected_errors_are_retried_like_transient_ones(env):
    _ab(env)
    svc = _flaky_service(env, Flaky(1, RuntimeError("bug")))
    _, body = svc.submit({"message_parts": ["a.mp3"], "async": True})
    with pytest.raises(RuntimeError):
        svc.run_job(body["job_id"])
    assert svc.jobs.get(body["job_id"]).status == QUEUED


def test_last_receive_marks_the_job_failed_then_lets_the_message_dead_letter(env):
    _ab(env)
    svc = _flaky_service(env, Flaky(99))
    _, body = svc.submit({"message_parts": ["a.mp3"], "async": True, "notify_email": "me@example.com"})
    last = env.settings.max_receive_count
    with pytest.raises(TransientError):
        svc.run_job(body["job_id"], receive_count=last)
    view = svc.job_status(body["job_id"])
    assert view["status"] == "failed" and f"gave up after {last} attempts" in view["error"]["message"]
    assert "simulated" in view["error"]["message"]
    [mail] = env.sent_emails()
    assert "failed" in mail.subject


def test_expired_lease_is_taken_over_but_a_live_one_is_not(env):
    _ab(env)
    _, body = env.service.submit({"message_parts": ["a.mp3"], "async": True})
    job_id = body["job_id"]
    live = env.service.jobs.claim(job_id, lease_seconds=600)  # another worker is busy with it
    with pytest.raises(TransientError):
        env.service.run_job(job_id, receive_count=1)
    assert env.service.run_job(job_id, receive_count=env.settings.max_receive_count) == "busy"
    assert env.service.jobs.get(job_id).status == RUNNING and env.service.jobs.get(job_id).attempts == live.attempts
    env.service.jobs.release(live)
    env.service.jobs.claim(job_id, lease_seconds=-1)  # a worker that died: its lease is already over
    assert env.service.run_job(job_id, receive_count=2) == "succeeded"
    assert env.service.jobs.get(job_id).attempts == 3


def test_message_for_an_unknown_job_is_dropped(env):
    assert env.service.run_job("0" * 64) == "missing"


def test_url_parts_always_go_to_the_queue_and_the_worker_fetches_them(tmp_path):
    from moto import mock_aws

    from tests.audio import make_tone
    from tests.httpserver import LocalServer

    with mock_aws(), LocalServer() as srv:
        e = make_env(tmp_path, allow_loopback_urls=True)
        e.put_tone("a.mp3", 1.0)
        srv.add_file("/talk.mp3", make_tone(tmp_path / "talk.mp3", 1.5, freq=330).read_bytes())
        request = {"message_parts": ["a.mp3", {"url": srv.url("/talk.mp3"), "end_s": 1.0}]}
        status, body = e.service.submit({**request, "notify_email": "first@example.com"})
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
        status, again = e.service.submit(request)
        assert (status, again["job_id"], again["status"]) == (202, body["job_id"], "succeeded")
        assert len(e.messages()) == messages

        # Asked again by someone new who wants an e-mail: a new run (served from the cache) tells only them.
        _, third = e.service.submit({**request, "notify_email": "second@example.com"})
        assert third["status"] == "queued" and e.service.jobs.get(body["job_id"]).run == 2
        assert e.service.run_job(body["job_id"]) == "succeeded"
        assert e.service.job_status(body["job_id"])["result"]["cached"] is True
        assert sorted(m.destinations["ToAddresses"][0] for m in e.sent_emails()) == [
            "first@example.com", "second@example.com"]


def test_unreachable_url_part_fails_the_job_naming_the_part(tmp_path):
    from moto import mock_aws

    from tests.httpserver import LocalServer

    with mock_aws(), LocalServer() as srv:
        e = make_env(tmp_path, allow_loopback_urls=True)
        e.put_tone("a.mp3", 0.5)
        _, body = e.service.submit({"message_parts": ["a.mp3", {"url": srv.url("/missing.mp3")}]})
        assert e.service.run_job(body["job_id"]) == "failed"
        error = e.service.job_status(body["job_id"])["error"]
        assert error["part"] == 1 and error["message"]


class ExpiringStore(Store):
    """S3 reports lifecycle expiry in HEAD's x-amz-expiration header, which moto does not emit."""

    expires_in = 60.0

    def head(self, bucket, key):
        import dataclasses

        info = super().head(bucket, key)
        return info and dataclasses.replace(info, expires_at=self.clock() + self.expires_in)


def test_cache_object_expiring_before_the_link_would_is_a_miss(env):
    _ab(env)
    _, first = env.service.submit({"message_parts": ["a.mp3"]})
    env.service.store = store = ExpiringStore(env.s3)
    _, again = env.service.submit({"message_parts": ["a.mp3"]})
    assert again["cached"] is False and again["cache_key"] == first["cache_key"]
    store.expires_in = 10 * env.settings.presign_ttl_seconds  # on the instance: the class keeps its 60 s
    _, third = env.service.submit({"message_parts": ["a.mp3"]})
    assert third["cached"] is True


def test_cache_object_without_metadata_is_rendered_again(env):
    _ab(env)
    _, first = env.service.submit({"message_parts": ["a.mp3"]})
    key = f"cache/{first['cache_key']}.mp3"
    env.s3.put_object(Bucket=env.settings.bucket_output, Key=key, Body=b"foreign object")
    _, again = env.service.submit({"message_parts": ["a.mp3"]})
    assert again["cached"] is False and again["size_bytes"] == first["size_bytes"]


def test_long_part_lists_keep_their_spans_in_a_sidecar(env, monkeypatch):
    monkeypatch.setattr(results, "MAX_PARTS_METADATA", 10)
    _ab(env)
    _, first = env.service.submit({"message_parts": ["a.mp3", "b.mp3", "a.mp3"]})
    sidecar = f"cache/{first['cache_key']}.mp3.json"
    assert env.s3.head_object(Bucket=env.settings.bucket_output, Key=sidecar)["ContentLength"] > 0
    _, hit = env.service.submit({"message_parts": ["a.mp3", "b.mp3", "a.mp3"]})
    assert hit["cached"] is True and hit["parts"] == first["parts"]


def test_job_status_unknown_and_malformed_ids_are_not_found(env):
    for job_id in ("0" * 64, "../etc", "ABC"):
        with pytest.raises(NotFound) as info:
            env.service.job_status(job_id)
        assert info.value.status == 404


def test_create_upload_presigns_a_put_under_uploads(env):
    import requests

    body = env.service.create_upload({"filename": "intro.mp3"})
    assert body["key"].startswith("uploads/") and body["key"].endswith("/intro.mp3")
    assert body["key"] in body["upload_url"] and "X-Amz-Expires=3600" in body["upload_url"]
    assert body["method"] == "PUT" and body["expires_at"].endswith("Z")
    # The link really accepts a PUT (moto intercepts the HTTP call in-process).
    assert requests.put(body["upload_url"], data=b"ID3 fake", timeout=5).status_code == 200
    assert env.s3.head_object(Bucket=env.settings.bucket_input, Key=body["key"])["ContentLength"] == 8
    assert env.service.create_upload({"filename": "intro.mp3"})["key"] != body["key"]


def test_create_upload_rejects_bad_filenames(env):
    from chalicelib.errors import BadRequest

    bad = [{}, {"filename": ""}, {"filename": 3}, {"filename": "a/b.mp3"}, {"filename": "..\\x.mp3"},
           {"filename": ".."}, {"filename": "x" * 201}, {"filename": "a.mp3", "size": 3}, {"filename": "a\nb.mp3"},
           ["intro.mp3"]]
    for body in bad:
        with pytest.raises(BadRequest) as info:
            env.service.create_upload(body)
        assert info.value.field in ("filename", "size", "body"), body


def test_progress_reporter_throttles_writes(env):
    env.put_tone("a.mp3", 0.5)
    _, body = env.service.submit({"message_parts": ["a.mp3"], "async": True})
    job = env.service.jobs.claim(body["job_id"], 600)
    now = [100.0]
    writes = []

    class CountingJobs:
        def set_progress(self, j, value):
            writes.append(value)
            return env.service.jobs.set_progress(j, value)

    report = ProgressReporter(CountingJobs(), job, clock=lambda: now[0])
    report(0.0)
    report(0.01)  # too soon and too small
    now[0] += 0.5
    report(0.5)  # too soon
    now[0] += 3
    report(0.5)
    report("garbage")
    assert writes == [pytest.approx(0.1), pytest.approx(0.525)]
    assert env.service.jobs.get(body["job_id"]).progress == pytest.approx(0.525)


class CountingStore(Store):
    """The real S3 adapter, counting the object reads it makes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.heads, self.downloads = [], []

    def head(self, bucket, key):
        self.heads.append(key)
        return super().head(bucket, key)

    def download(self, bucket, key, path, **kw):
        self.downloads.append(key)
        return super().download(bucket, key, path, **kw)


def test_a_part_used_many_times_is_read_once(env):
    _ab(env, a=0.5, b=1.0)
    env.service.store = CountingStore(env.s3)
    _, body = env.service.submit({"message_parts": ["a.mp3", "b.mp3", "a.mp3", {"key": "a.mp3", "gain_db": -6}]})
    assert body["duration_s"] == pytest.approx(2.5, abs=0.1) and len(body["parts"]) == 4
    inputs = [k for k in env.service.store.heads if not k.startswith("cache/")]
    assert sorted(inputs) == ["a.mp3", "b.mp3"] and sorted(env.service.store.downloads) == ["a.mp3", "b.mp3"]


def test_job_whose_result_expired_shows_no_link_and_a_resubmit_makes_it_again(env):
    _ab(env)
    _, body = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True})
    env.service.run_job(body["job_id"])
    env.s3.delete_object(Bucket=env.settings.bucket_output, Key=f"cache/{body['job_id']}.mp3")  # lifecycle
    result = env.service.job_status(body["job_id"])["result"]
    assert result["expired"] is True and result["public_url"] is None and result["duration_s"] > 0
    status, again = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True})
    assert status == 202 and env.service.jobs.get(body["job_id"]).run == 2
    assert env.service.run_job(body["job_id"]) == "succeeded"
    assert env.service.job_status(body["job_id"])["result"]["public_url"]


def test_a_cache_hit_builds_only_the_s3_client(env):
    _ab(env)
    env.service.submit({"message_parts": ["a.mp3"]})
    fresh = build_service(env.settings)  # a cold API container
    status, body = fresh.submit({"message_parts": ["a.mp3"]})
    assert status == 200 and body["cached"] is True
    assert fresh.store.s3._client is not None
    assert (fresh.jobs.db._client, fresh.queue.sqs._client, fresh.notifier.ses._client) == (None, None, None)
