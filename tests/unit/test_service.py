"""The use cases' branches over fakes (tests/unit/fakes.py): cache hit/miss, inline, queued jobs, the worker.

No moto, no ffmpeg: the real service and BucketSource over in-memory adapters and a fake engine.
The same paths against moto, ffmpeg and yt-dlp are in test_service_wiring.py.
"""
from __future__ import annotations

import threading

import pytest

from chalicelib import results
from chalicelib.errors import BadRequest, NotFound, PartNotFound, TransientError, UnsupportedAudio
from chalicelib.jobs import QUEUED, RUNNING, Job, notify_marker
from chalicelib.service import Cached, ProgressReporter, Queued, Rendered
from tests.unit.fakes import FakeEngine, make_fake_env


@pytest.fixture
def env(tmp_path):
    return make_fake_env(tmp_path)


def _submit(service, body):
    """The outcome as (status, body), the status being the one app.py answers with."""
    outcome = service.submit(body)
    return (202 if isinstance(outcome, Queued) else 200), outcome.body()


def _linkless(body: dict) -> dict:
    """A body without its presigned link, which is made afresh (with a new expiry) for every answer."""
    return {k: v for k, v in body.items() if k not in ("public_url", "expires_at")}


def _ab(env, a=1.0, b=1.5):
    env.put_audio("a.mp3", a)
    env.put_audio("b.mp3", b)


def test_miss_renders_inline_then_the_same_request_is_a_cache_hit(env):
    _ab(env)
    first = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert isinstance(first, Rendered)
    body = first.body()
    assert body["cached"] is False and body["duration_s"] == 2.5 and body["format"] == "mp3"
    assert body["parts"] == [{"index": 0, "start_s": 0.0, "end_s": 1.0}, {"index": 1, "start_s": 1.0, "end_s": 2.5}]
    key = f"cache/{body['cache_key']}.mp3"
    stored = env.store.objects[(env.settings.bucket_output, key)]
    assert stored.content_type == "audio/mpeg" and len(stored.data) == body["size_bytes"]
    assert stored.filename == f"stitched-{body['cache_key'][:12]}.mp3"
    assert stored.metadata["duration-s"] == "2.500" and stored.metadata["parts"] == "0.000-1.000,1.000-2.500"
    assert key in body["public_url"] and "X-Amz-Expires=3600" in body["public_url"]
    assert env.work_dir_entries() == []  # the inline work dir is removed

    hit = env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert isinstance(hit, Cached)
    assert _linkless(hit.body()) == {**_linkless(body), "cached": True}
    assert len(env.engine.calls) == 1 and env.queue.sent == []


def test_join_policy_and_added_silence_reach_the_body_and_the_cache(env):
    _ab(env)
    _, exact = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "join": "exact"})
    assert (exact["join"], exact["mode"], exact["added_silence_ms"]) == ("exact", "encode", 0.0)
    _, copy = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "join": "copy"})
    assert copy["cache_key"] != exact["cache_key"]  # join is an option: part of the key
    assert (copy["join"], copy["mode"], copy["added_silence_ms"]) == ("copy", "copy", 26.0)
    _, hit = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "join": "copy"})
    assert _linkless(hit) == {**_linkless(copy), "cached": True}


def test_order_matters_and_a_replaced_input_changes_the_key(env):
    _ab(env)
    _, ab = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"]})
    _, ba = _submit(env.service, {"message_parts": ["b.mp3", "a.mp3"]})
    assert ab["cache_key"] != ba["cache_key"] and ba["cached"] is False
    assert ba["parts"][0]["end_s"] == 1.5
    env.put_audio("a.mp3", 2.0)  # same key, new content => new ETag
    _, again = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"]})
    assert again["cached"] is False and again["cache_key"] != ab["cache_key"] and again["duration_s"] == 3.5


def test_trim_gain_and_format_reach_the_engine(env):
    env.put_audio("a.wav", 2.0)
    status, body = _submit(env.service, {"message_parts": [{"key": "a.wav", "start_s": 0.5, "end_s": 1.25,
                                                            "gain_db": -6}], "format": "wav"})
    assert status == 200 and body["format"] == "wav" and body["duration_s"] == 0.75
    [(parts, options)] = env.engine.calls
    assert (parts[0].options.start_s, parts[0].options.end_s, parts[0].options.gain_db) == (0.5, 1.25, -6)
    assert options.format == "wav" and parts[0].name == "a.wav"
    assert env.output_keys() == [f"cache/{body['cache_key']}.wav"]


def test_missing_key_is_a_400_naming_the_part(env):
    env.put_audio("a.mp3", 0.5)
    with pytest.raises(PartNotFound) as info:
        env.service.submit({"message_parts": ["a.mp3", "nope/missing.mp3"]})
    assert info.value.part == 1 and info.value.status == 400 and "nope/missing.mp3" in info.value.message


def test_not_audio_inline_is_a_400_naming_the_part_and_writes_nothing(env):
    env.put_audio("a.mp3", 0.5)
    env.put_bytes("notes.txt", b"this is not audio at all\n" * 20)
    with pytest.raises(UnsupportedAudio) as info:
        env.service.submit({"message_parts": ["a.mp3", "notes.txt"]})
    assert info.value.part == 1 and info.value.status == 400
    assert env.output_keys() == [] and env.work_dir_entries() == []


def test_a_key_replaced_during_an_inline_render_is_transient_and_in_the_worker_permanent(env):
    _ab(env)
    real = env.store.download

    def replaced(bucket, key, path, **kw):
        env.put_audio(key, 9.0)  # a new PUT lands between the HEAD and the GET
        return real(bucket, key, path, **kw)

    env.store.download = replaced
    with pytest.raises(TransientError, match="replaced while the request ran; retry") as info:
        env.service.submit({"message_parts": ["a.mp3"]})
    assert info.value.part == 0
    _, body = _submit(env.service, {"message_parts": ["b.mp3"], "async": True})
    assert env.service.run_job(body["job_id"]) == "failed"
    error = env.service.job_status(body["job_id"])["error"]
    assert error["code"] == "part_not_found" and "submit the request again" in error["message"]


def test_a_key_deleted_before_the_download_is_part_not_found(env):
    _ab(env)
    real = env.store.download

    def deleted(bucket, key, path, **kw):
        env.store.delete(bucket, key)
        return real(bucket, key, path, **kw)

    env.store.download = deleted
    with pytest.raises(PartNotFound) as info:
        env.service.submit({"message_parts": ["a.mp3", "b.mp3"]})
    assert info.value.part in (0, 1) and "no such key" in info.value.message


def test_queued_job_runs_in_the_worker_and_then_serves_from_cache(env):
    _ab(env)
    outcome = env.service.submit({"message_parts": ["a.mp3", "b.mp3"], "async": True})
    assert isinstance(outcome, Queued)
    body = outcome.body()
    assert body == {"job_id": outcome.job_id, "status": "queued", "status_url": f"/jobs/{outcome.job_id}"}
    assert env.service.job_status(body["job_id"])["status"] == "queued"
    assert env.queue.sent == [(body["job_id"], 1)]

    assert env.service.run_job(body["job_id"]) == "succeeded"
    view = env.service.job_status(body["job_id"])
    assert view["status"] == "succeeded" and view["progress"] == 1.0 and view["attempts"] == 1
    result = view["result"]
    assert result["cache_key"] == body["job_id"] and result["duration_s"] == 2.5 and result["cached"] is False
    assert result["public_url"] and result["expires_at"].endswith("Z")
    assert env.output_keys() == [f"cache/{body['job_id']}.mp3"] and env.work_dir_entries() == []

    status, hit = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"]})
    assert status == 200 and hit["cached"] is True and hit["cache_key"] == body["job_id"]
    assert {k: v for k, v in hit.items() if k not in ("public_url", "expires_at", "cached")} == {
        k: v for k, v in result.items() if k not in ("public_url", "expires_at", "cached")}


def test_inputs_over_the_inline_limit_are_queued(tmp_path):
    e = make_fake_env(tmp_path, inline_max_bytes=1000)
    _ab(e)
    assert isinstance(e.service.submit({"message_parts": ["a.mp3", "b.mp3"]}), Queued)
    assert len(e.queue.sent) == 1 and e.engine.calls == []


def test_work_that_needs_a_re_encode_has_a_smaller_inline_budget(tmp_path):
    e = make_fake_env(tmp_path, inline_max_bytes=10_000_000, inline_encode_max_bytes=10_000)
    _ab(e)  # ~40 KB
    assert isinstance(e.service.submit({"message_parts": ["a.mp3", "b.mp3"], "join": "copy"}), Rendered)  # frames
    for variant in ({"message_parts": ["a.mp3", "b.mp3"]},  # auto: parts this short get an exact join
                    {"message_parts": ["a.mp3", "b.mp3"], "gap_ms": 100},
                    {"message_parts": ["a.mp3", {"key": "b.mp3", "end_s": 1}]},
                    {"message_parts": ["a.mp3", "b.mp3"], "format": "wav"},
                    {"message_parts": ["a.mp3", "b.mp3"], "join": "exact"}):
        assert isinstance(e.service.submit(variant), Queued), variant
    e.put_audio("small.wav", 0.1)  # under both budgets: inline whatever it needs
    assert isinstance(e.service.submit({"message_parts": ["small.wav"], "format": "wav"}), Rendered)


def test_identical_concurrent_requests_share_one_job_and_each_target_is_notified_once(env):
    _ab(env)
    n = 4
    barrier = threading.Barrier(n)
    answers = [None] * n

    def submit(i):
        barrier.wait()
        answers[i] = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "async": True,
                                           "notify_email": f"user{i}@example.com"})

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    job_id = answers[0][1]["job_id"]
    assert env.queue.sent == [(job_id, 1)]
    assert env.jobs.get(job_id).emails == {f"user{i}@example.com" for i in range(n)}

    assert env.service.run_job(job_id) == "succeeded"
    assert env.notifier.emails() == [f"user{i}@example.com" for i in range(n)]
    assert all(view["job_id"] == job_id and view["status"] == "succeeded" for _, _, view in env.notifier.sent)

    # A redelivered message for the finished job changes nothing and sends nothing.
    assert env.service.run_job(job_id, receive_count=2) == "noop"
    assert len(env.notifier.sent) == n and env.jobs.get(job_id).attempts == 1


def test_webhook_receives_the_job_once(tmp_path):
    e = make_fake_env(tmp_path, allow_loopback_urls=True)
    _ab(e)
    hook = "http://127.0.0.1:9/hook"
    _, body = _submit(e.service, {"message_parts": ["a.mp3", "b.mp3"], "webhook_url": hook, "async": True})
    assert e.service.run_job(body["job_id"]) == "succeeded"
    assert e.service.run_job(body["job_id"], receive_count=2) == "noop"
    [(kind, target, payload)] = e.notifier.sent
    assert (kind, target) == ("webhook", hook)
    assert payload["job_id"] == body["job_id"] and payload["status"] == "succeeded"
    assert payload["result"]["public_url"] and payload["result"]["duration_s"] == 2.5


def test_a_notification_already_claimed_is_not_sent_again(env):
    # The worker died after claiming the marker: the redelivery must not send a second e-mail.
    _ab(env)
    _, body = _submit(env.service, {"message_parts": ["a.mp3"], "async": True, "notify_email": "me@example.com"})
    env.jobs.mark_notified(body["job_id"], notify_marker(1, "succeeded", "email", "me@example.com"))
    assert env.service.run_job(body["job_id"]) == "succeeded"
    assert env.notifier.sent == []


def test_permanent_failure_fails_the_job_at_once_and_notifies_the_reason(env):
    env.put_audio("a.mp3", 0.5)
    env.put_bytes("notes.txt", b"plain text, no audio\n" * 20)
    _, body = _submit(env.service, {"message_parts": ["a.mp3", "notes.txt"], "async": True,
                                    "notify_email": "me@example.com"})
    assert env.service.run_job(body["job_id"]) == "failed"  # no exception: SQS must not retry
    view = env.service.job_status(body["job_id"])
    assert view["status"] == "failed" and view["error"]["part"] == 1 and "result" not in view
    assert view["error"]["code"] == "unsupported_audio"
    [(kind, to, told)] = env.notifier.sent
    assert (kind, to, told["status"]) == ("email", "me@example.com", "failed") and told["error"]["part"] == 1
    assert env.work_dir_entries() == []


def test_resubmitting_a_failed_job_runs_it_again(env):
    env.put_bytes("bad.mp3", b"\x00" * 2000)
    _, body = _submit(env.service, {"message_parts": ["bad.mp3"], "async": True, "notify_email": "a@example.com"})
    assert env.service.run_job(body["job_id"]) == "failed"
    _, again = _submit(env.service, {"message_parts": ["bad.mp3"], "async": True, "notify_email": "b@example.com"})
    assert again["job_id"] == body["job_id"]
    job = env.jobs.get(body["job_id"])
    assert job.status == QUEUED and job.run == 2 and job.error is None
    assert job.emails == {"b@example.com"}  # a@ was told about run 1 already
    assert env.queue.dedup_ids() == [body["job_id"], f"{body['job_id']}-2"]


def test_a_job_expired_between_create_and_read_is_created_afresh(env):
    _ab(env)
    _, body = _submit(env.service, {"message_parts": ["a.mp3"], "async": True})
    real_get = env.jobs.get
    gone = [True]

    def expired_once(job_id):
        if gone and gone.pop():
            env.jobs.records.pop(job_id)  # the TTL deleted it just now
            return None
        return real_get(job_id)

    env.jobs.get = expired_once
    _, again = _submit(env.service, {"message_parts": ["a.mp3"], "async": True})
    assert again == body and real_get(body["job_id"]).status == QUEUED


def _flaky(tmp_path, failures, exc=None):
    e = make_fake_env(tmp_path, engine=FakeEngine(failures, exc or TransientError("ffmpeg was killed (simulated)")))
    _ab(e)
    return e


def test_transient_failure_raises_releases_the_job_and_the_retry_succeeds(tmp_path):
    e = _flaky(tmp_path, 1)
    _, body = _submit(e.service, {"message_parts": ["a.mp3", "b.mp3"], "async": True,
                                  "notify_email": "me@example.com"})
    with pytest.raises(TransientError):
        e.service.run_job(body["job_id"], receive_count=1)
    job = e.jobs.get(body["job_id"])
    assert job.status == QUEUED and job.attempts == 1 and e.notifier.sent == []
    assert e.work_dir_entries() == []
    assert e.service.run_job(body["job_id"], receive_count=2) == "succeeded"
    assert e.jobs.get(body["job_id"]).attempts == 2 and len(e.notifier.sent) == 1


def test_unexpected_errors_are_retried_like_transient_ones(tmp_path):
    e = _flaky(tmp_path, 1, RuntimeError("bug"))
    _, body = _submit(e.service, {"message_parts": ["a.mp3"], "async": True})
    with pytest.raises(RuntimeError):
        e.service.run_job(body["job_id"])
    assert e.jobs.get(body["job_id"]).status == QUEUED


def test_last_receive_marks_the_job_failed_then_lets_the_message_dead_letter(tmp_path):
    e = _flaky(tmp_path, 99)
    _, body = _submit(e.service, {"message_parts": ["a.mp3"], "async": True, "notify_email": "me@example.com"})
    last = e.settings.max_receive_count
    with pytest.raises(TransientError):
        e.service.run_job(body["job_id"], receive_count=last)
    view = e.service.job_status(body["job_id"])
    assert view["status"] == "failed" and f"gave up after {last} attempts" in view["error"]["message"]
    assert "simulated" in view["error"]["message"]
    [(kind, _, told)] = e.notifier.sent
    assert kind == "email" and told["status"] == "failed"


def test_expired_lease_is_taken_over_but_a_live_one_is_not(env):
    _ab(env)
    _, body = _submit(env.service, {"message_parts": ["a.mp3"], "async": True})
    job_id = body["job_id"]
    live = env.jobs.claim(job_id, lease_seconds=600)  # another worker is busy with it
    with pytest.raises(TransientError):
        env.service.run_job(job_id, receive_count=1)
    assert env.service.run_job(job_id, receive_count=env.settings.max_receive_count) == "busy"
    assert env.jobs.get(job_id).status == RUNNING and env.jobs.get(job_id).attempts == live.attempts
    env.jobs.release(live)
    env.jobs.claim(job_id, lease_seconds=-1)  # a worker that died: its lease is already over
    assert env.service.run_job(job_id, receive_count=2) == "succeeded"
    assert env.jobs.get(job_id).attempts == 3


def test_a_worker_that_lost_its_lease_drops_its_outcome(env):
    _ab(env)
    _, body = _submit(env.service, {"message_parts": ["a.mp3"], "async": True, "notify_email": "me@example.com"})
    real = env.engine.__call__

    class Overtaken(FakeEngine):
        def __call__(self, *a, **kw):
            # Another attempt takes the job over while this one renders.
            job = env.jobs.records[body["job_id"]]
            job.attempts += 1
            return real(*a, **kw)

    env.service._stitch = Overtaken()
    assert env.service.run_job(body["job_id"]) == "succeeded"
    assert env.jobs.get(body["job_id"]).status == RUNNING and env.notifier.sent == []


def test_message_for_an_unknown_job_is_dropped(env):
    assert env.service.run_job("0" * 64) == "missing"


def test_url_parts_always_go_to_the_queue_and_the_worker_settles_and_fetches_them(env):
    env.put_audio("a.mp3", 1.0)
    talk = "https://93.184.215.14/talk.mp3"  # an address literal: the SSRF check needs no DNS
    env.urls.media[talk] = ("generic:talk", 1.5)
    request = {"message_parts": ["a.mp3", {"url": talk, "end_s": 1.0}]}
    status, body = _submit(env.service, {**request, "notify_email": "first@example.com"})
    assert status == 202 and env.urls.fetched == []  # even though it is small and not async
    assert env.jobs.get(body["job_id"]).spec["identities"][1] is None  # settled by the worker
    assert env.service.run_job(body["job_id"]) == "succeeded"
    result = env.service.job_status(body["job_id"])["result"]
    assert result["duration_s"] == 2.0 and env.urls.fetched == [talk]
    # The result is stored under the content key (source id), not the job id (URL string).
    assert result["cache_key"] != body["job_id"] and env.output_keys() == [f"cache/{result['cache_key']}.mp3"]
    assert env.work_dir_entries() == []

    # Asked again: the finished job answers; nothing is queued or fetched.
    status, again = _submit(env.service, request)
    assert (status, again["job_id"], again["status"]) == (202, body["job_id"], "succeeded")
    assert env.queue.sent == [(body["job_id"], 1)]

    # Asked again by someone new who wants an e-mail: a new run (served from the cache) tells only them.
    _, third = _submit(env.service, {**request, "notify_email": "second@example.com"})
    assert third["status"] == "queued" and env.jobs.get(body["job_id"]).run == 2
    assert env.service.run_job(body["job_id"]) == "succeeded"
    assert env.service.job_status(body["job_id"])["result"]["cached"] is True
    assert env.urls.fetched == [talk] and len(env.engine.calls) == 1
    assert env.notifier.emails() == ["first@example.com", "second@example.com"]


def test_unreachable_url_part_fails_the_job_naming_the_part(env):
    env.put_audio("a.mp3", 0.5)
    _, body = _submit(env.service, {"message_parts": ["a.mp3", {"url": "https://93.184.215.14/missing.mp3"}]})
    assert env.service.run_job(body["job_id"]) == "failed"
    error = env.service.job_status(body["job_id"])["error"]
    assert error["part"] == 1 and error["code"] == "source_unavailable"


def test_cache_object_expiring_before_the_link_would_is_a_miss(env):
    _ab(env)
    _, first = _submit(env.service, {"message_parts": ["a.mp3"]})
    env.store.expires_in = 60.0  # S3's lifecycle expiry header
    _, again = _submit(env.service, {"message_parts": ["a.mp3"]})
    assert again["cached"] is False and again["cache_key"] == first["cache_key"]
    env.store.expires_in = 10 * env.settings.presign_ttl_seconds
    _, third = _submit(env.service, {"message_parts": ["a.mp3"]})
    assert third["cached"] is True


def test_cache_object_without_metadata_is_rendered_again(env):
    _ab(env)
    _, first = _submit(env.service, {"message_parts": ["a.mp3"]})
    env.store.put(env.settings.bucket_output, f"cache/{first['cache_key']}.mp3", b"foreign object")
    _, again = _submit(env.service, {"message_parts": ["a.mp3"]})
    assert again["cached"] is False and again["size_bytes"] == first["size_bytes"]


def test_long_part_lists_keep_their_spans_in_a_sidecar(env, monkeypatch):
    monkeypatch.setattr(results, "MAX_PARTS_METADATA", 10)
    _ab(env)
    _, first = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3", "a.mp3"]})
    sidecar = f"cache/{first['cache_key']}.mp3.json"
    assert env.store.get_json(env.settings.bucket_output, sidecar)["parts"] == first["parts"]
    _, hit = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3", "a.mp3"]})
    assert hit["cached"] is True and hit["parts"] == first["parts"]
    env.store.delete(env.settings.bucket_output, sidecar)  # a hit without its sidecar renders again
    _, again = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3", "a.mp3"]})
    assert again["cached"] is False and again["parts"] == first["parts"]


def test_job_status_unknown_and_malformed_ids_are_not_found(env):
    for job_id in ("0" * 64, "../etc", "ABC", None):
        with pytest.raises(NotFound) as info:
            env.service.job_status(job_id)
        assert info.value.status == 404


def test_create_upload_presigns_a_capped_post_under_uploads(env):
    body = env.service.create_upload({"filename": "intro.mp3"})
    assert body["key"].startswith("uploads/") and body["key"].endswith("/intro.mp3")
    assert body["method"] == "POST" and body["expires_at"].endswith("Z")
    assert body["fields"]["key"] == body["key"] and body["max_bytes"] == env.settings.max_upload_bytes
    assert body["fields"]["x-max-bytes"] == str(env.settings.max_upload_bytes)
    assert env.service.create_upload({"filename": "intro.mp3"})["key"] != body["key"]


def test_create_upload_rejects_bad_filenames(env):
    bad = [{}, {"filename": ""}, {"filename": 3}, {"filename": "a/b.mp3"}, {"filename": "..\\x.mp3"},
           {"filename": ".."}, {"filename": "x" * 201}, {"filename": "a.mp3", "size": 3}, {"filename": "a\nb.mp3"},
           ["intro.mp3"]]
    for body in bad:
        with pytest.raises(BadRequest) as info:
            env.service.create_upload(body)
        assert info.value.field in ("filename", "size", "body"), body


def test_progress_reporter_throttles_writes(env):
    env.put_audio("a.mp3", 0.5)
    _, body = _submit(env.service, {"message_parts": ["a.mp3"], "async": True})
    job = env.jobs.claim(body["job_id"], 600)
    now = [100.0]
    writes = []

    class CountingJobs:
        def set_progress(self, j, value):
            writes.append(value)
            return env.jobs.set_progress(j, value)

    report = ProgressReporter(CountingJobs(), job, clock=lambda: now[0])
    report(0.0)
    report(0.01)  # too soon and too small
    now[0] += 0.5
    report(0.5)  # too soon
    now[0] += 3
    report(0.5)
    report("garbage")
    report(3, 4)  # (done, total) works too
    assert writes == [pytest.approx(0.1), pytest.approx(0.525)]
    assert env.jobs.get(body["job_id"]).progress == pytest.approx(0.525)


def test_progress_write_failures_never_fail_the_job(env):
    class Broken:
        def set_progress(self, j, value):
            raise RuntimeError("throttled")

    ProgressReporter(Broken(), Job("0" * 64, RUNNING), clock=lambda: 100.0)(0.5)  # logged, not raised


def test_a_part_used_many_times_is_read_once(env):
    _ab(env, a=0.5, b=1.0)
    _, body = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3", "a.mp3", {"key": "a.mp3", "gain_db": -6}]})
    assert body["duration_s"] == 2.5 and len(body["parts"]) == 4
    inputs = [k for k in env.store.heads if not k.startswith("cache/")]
    assert sorted(inputs) == ["a.mp3", "b.mp3"] and sorted(env.store.downloads) == ["a.mp3", "b.mp3"]


def test_job_whose_result_expired_shows_no_link_and_a_resubmit_makes_it_again(env):
    _ab(env)
    _, body = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "async": True})
    env.service.run_job(body["job_id"])
    env.store.delete(env.settings.bucket_output, f"cache/{body['job_id']}.mp3")  # lifecycle
    result = env.service.job_status(body["job_id"])["result"]
    assert result["expired"] is True and result["public_url"] is None and result["duration_s"] > 0
    status, _ = _submit(env.service, {"message_parts": ["a.mp3", "b.mp3"], "async": True})
    assert status == 202 and env.jobs.get(body["job_id"]).run == 2
    assert env.service.run_job(body["job_id"]) == "succeeded"
    assert env.service.job_status(body["job_id"])["result"]["public_url"]
