"""Self-healing jobs against moto: heartbeat, the sweeper, attempt fencing, max attempts, abandoned
work dirs, ffmpeg dying with its parent, poison messages, full disks and hung AWS calls."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from chalicelib.errors import StitchError
from chalicelib.jobs import FAILED, RUNNING, SUCCEEDED
from chalicelib.service import Queued
from chalicelib.sweeper import sweep
from chalicelib.workdirs import remove_abandoned, work_dir
from tests.unit.stitchenv import Receiver, make_env


@pytest.fixture
def env(tmp_path):
    from moto import mock_aws

    with mock_aws():
        yield make_env(tmp_path, allow_loopback_urls=True)


def _queued(env, name="a.mp3", **extra) -> str:
    env.put_tone(name, 0.5)
    outcome = env.service.submit({"message_parts": [name], "async": True, **extra})
    assert isinstance(outcome, Queued)
    body = outcome.body()
    [msg] = env.messages()
    env.sqs.delete_message(QueueUrl=env.urls["queue_url"], ReceiptHandle=msg["ReceiptHandle"])
    return body["job_id"]


def _die_mid_job(env, job_id: str) -> None:
    """What a SIGKILLed worker leaves: claimed, a lease that has run out, no heartbeat."""
    claimed = env.service.jobs.claim(job_id, lease_seconds=-1)
    assert claimed.status == RUNNING


def test_heartbeat_extends_the_lease_and_records_progress(env):
    from chalicelib.lease import Heartbeat

    job_id = _queued(env)
    claimed = env.service.jobs.claim(job_id, lease_seconds=5)
    with Heartbeat(env.service.jobs, claimed, every=0.05, lease=300) as beat:
        beat.progress = 0.42
        time.sleep(0.4)
    job = env.service.jobs.get(job_id)
    assert job.lease_until > time.time() + 250 and job.progress == pytest.approx(0.42)
    # A taken-over attempt's heartbeat is fenced: it notices and stops.
    env.service.jobs.claim(job_id, lease_seconds=-1)  # lease still live: no takeover
    assert env.service.jobs.get(job_id).attempts == 1
    stale = dataclasses.replace(claimed, attempts=0)
    assert env.service.jobs.heartbeat(stale, 300) is False


def test_sweeper_resends_a_stale_job_in_its_own_group_and_the_new_attempt_finishes_it(env):
    with Receiver() as hook:
        job_id = _queued(env, webhook_url=hook.url)
        _die_mid_job(env, job_id)
        report = sweep(env.service)
        assert report.requeued == [job_id] and report.failed == []
        [msg] = env.messages()
        attrs = msg["Attributes"]
        # Not the dead attempt's group (its message is still in flight and blocks that group).
        assert attrs["MessageGroupId"] == attrs["MessageDeduplicationId"] == f"{job_id}-1-a1"
        assert sweep(env.service).requeued == [job_id] and len(env.messages()) == 1  # deduplicated
        assert env.service.run_job(job_id) == "succeeded"
        # The dead attempt's message, redelivered after its visibility timeout, finds it done.
        assert env.service.run_job(job_id, receive_count=2) == "noop"
        job = env.service.jobs.get(job_id)
        assert job.status == SUCCEEDED and job.attempts == 2
        assert len(hook.requests) == 1
    assert sweep(env.service).requeued == []


def test_the_old_attempt_cannot_finish_a_job_taken_over_by_a_new_one(env):
    job_id = _queued(env)
    old = env.service.jobs.claim(job_id, lease_seconds=-1)
    new = env.service.jobs.claim(job_id, lease_seconds=60)
    assert new.attempts == old.attempts + 1
    assert env.service.jobs.finish(old, FAILED, error={"code": "x", "message": "late"}) is None
    assert env.service.jobs.set_progress(old, 0.9) is False
    assert env.service.jobs.finish(new, SUCCEEDED, result={"cache_key": "k"}) is not None


def test_after_max_attempts_the_sweeper_fails_the_job_with_the_reason_and_tells_once(env):
    with Receiver() as hook:
        job_id = _queued(env, webhook_url=hook.url)
        for _ in range(env.settings.max_attempts):
            _die_mid_job(env, job_id)
        report = sweep(env.service)
        assert report.failed == [job_id] and report.requeued == []
        job = env.service.jobs.get(job_id)
        assert job.status == FAILED and job.error["code"] == "worker_lost"
        assert f"gave up after {env.settings.max_attempts} attempts" in job.error["message"]
        assert sweep(env.service).failed == []
        assert [b["status"] for b in hook.bodies()] == ["failed"]


def test_a_worker_removes_abandoned_work_dirs_but_not_live_ones(tmp_path):
    root = tmp_path / "work"
    dead = subprocess.run([sys.executable, "-c", (
        "import sys; from chalicelib.workdirs import work_dir\n"
        f"cm = work_dir({str(root)!r}, 'dead'); p = cm.__enter__(); (p / 'x.partial').write_bytes(b'1' * 1000)\n"
        "import os; os._exit(0)")], cwd=os.getcwd(), check=True)  # exits without cleaning up, like SIGKILL
    assert dead.returncode == 0
    [left] = list(root.glob("stitch-dead*"))
    with work_dir(root, "live") as live:
        assert remove_abandoned(root) == [left.name]
        assert live.is_dir() and not left.exists()
    assert list(root.iterdir()) == []


def test_ffmpeg_dies_with_the_process_that_started_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, time\n"
        "from chalicelib.ffmpeg import dies_with_parent, ffmpeg_command\n"
        "p = subprocess.Popen(ffmpeg_command('-re', '-f', 'lavfi', '-i', 'sine=d=600', '-f', 'null', '-'),"
        " **dies_with_parent())\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n")], cwd=os.getcwd())
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "ffmpeg outlived its parent"
        time.sleep(0.05)


def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason(env, tmp_path):
    from chalice.test import Client

    import app as app_module

    app_module.set_service(env.service)
    try:
        with Client(app_module.app) as client:
            for body in ("not json", json.dumps({"nope": 1}), json.dumps([1]), json.dumps({"job_id": 5})):
                event = client.events.generate_sqs_event(message_bodies=[body])
                client.lambda_.invoke("process_job", event)  # returns: the message is deleted from the queue
    finally:
        app_module.set_service(None)
    dead = env.sqs.receive_message(QueueUrl=env.urls["dlq_url"], MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"]).get("Messages", [])
    assert sorted(m["Body"] for m in dead) == sorted(["not json", '{"nope": 1}', "[1]", '{"job_id": 5}'])
    assert all(m["MessageAttributes"]["reason"]["StringValue"].startswith("not a job message") for m in dead)


def test_a_full_work_dir_on_an_inline_job_is_a_507_in_our_words(env):
    from chalice.test import Client

    import app as app_module
    from chalicelib.bootstrap import build_service
    from chalicelib.faults import public_error

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/stitch-x/output.mp3")

    env.put_tone("a.mp3", 0.5)
    app_module.set_service(build_service(env.settings, stitch=full_disk))
    try:
        with Client(app_module.app) as client:
            r = client.http.post("/stitch", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"message_parts": ["a.mp3"]}))
    finally:
        app_module.set_service(None)
    assert r.status_code == 507 and r.headers["Retry-After"] == "5", r.body
    error = json.loads(r.body)["error"]
    assert error["code"] == "insufficient_storage" and "ran out of disk space" in error["message"]
    assert "/tmp" not in error["message"] and "Errno" not in error["message"]
    assert env.work_dir_entries() == []
    # ffmpeg saying so counts too, and its stderr never reaches the client; a job retries it.
    engine = StitchError("ffmpeg failed (exit 1): [out#0] Error writing trailer: No space left on device")
    assert public_error(engine).code == "insufficient_storage" and not public_error(engine).permanent


def test_engine_failures_reach_jobs_and_webhooks_in_our_words(env):
    from chalicelib.bootstrap import build_service

    def broken(*_a, **_k):
        raise StitchError("ffmpeg failed (exit 234): [libvorbis @ 0x39de1cc0] encoder setup failed")

    with Receiver() as hook:
        job_id = _queued(env, webhook_url=hook.url)
        service = build_service(env.settings, stitch=broken)
        assert service.run_job(job_id) == "failed"
        job = service.jobs.get(job_id)
        assert job.error["message"].startswith("the audio engine failed") and "libvorbis" not in job.error["message"]
        [sent] = hook.bodies()
        assert sent["error"] == job.error and "ffmpeg" not in json.dumps(sent)


def test_a_hung_aws_endpoint_answers_503_with_retry_after_within_10s(env, monkeypatch):
    from chalice.test import Client

    import app as app_module
    from chalicelib.bootstrap import build_service

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts connections, never answers
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{hung.getsockname()[1]}")
    try:
        app_module.set_service(build_service(env.settings, role="api"))
        with Client(app_module.app) as client:
            started = time.monotonic()
            r = client.http.post("/stitch", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"message_parts": ["a.mp3"]}))
            elapsed = time.monotonic() - started
    finally:
        hung.close()
        app_module.set_service(None)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.body
    assert json.loads(r.body)["error"]["code"] == "service_unavailable"
    assert elapsed < 10, elapsed


def test_missing_credentials_are_a_503_that_says_so(env, monkeypatch):
    from botocore.exceptions import NoCredentialsError

    from chalicelib.faults import public_error

    error = public_error(NoCredentialsError())
    assert error.status == 503 and "no AWS credentials" in error.message
