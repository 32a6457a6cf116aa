"""A worker SIGKILLed mid-job, with the default lease, heartbeat and sweep settings: the job runs
again by itself within 2 minutes, finishes once, tells its webhook once, and leaves no work dir."""
from __future__ import annotations

import os
import signal
import time

from tests.audio import make_tone
from tests.integration.stitchenv import Receiver

from .conftest import http, stack_env, start_stack, stop_stack, wait_for_job

RECOVERY_LIMIT_S = 120  # the promise, with JOB_LEASE_SECONDS, HEARTBEAT_SECONDS and a 1-minute sweep


def _poll(predicate, what: str, stack, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s:\n{stack.log()[-5000:]}"
        time.sleep(every)


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def test_a_killed_worker_s_job_runs_again_once_within_two_minutes(tmp_path):
    from tests.httpserver import LocalServer

    work = tmp_path / "work"
    # No overrides: the defaults are what is under test.
    stack = start_stack(tmp_path, "--no-seed", "--workers", "1", env=stack_env(work))
    try:
        # A source that drips: each attempt spends ~8 s fetching it, so the kill lands mid-job.
        tone = make_tone(tmp_path / "slow.mp3", 1.0, rate=8000, channels=1, extra=["-b:a", "8k"])
        with LocalServer() as server, Receiver() as hook:
            url = server.add_drip("/slow.mp3", tone.read_bytes(), interval=8.0 / len(tone.read_bytes()))
            reply = http("POST", f"{stack.api}/stitch", {"message_parts": [{"url": url}], "format": "wav",
                                                         "webhook_url": hook.url})
            assert reply.status == 202, reply.body
            job_id = reply.json()["job_id"]

            def job():
                return http("GET", f"{stack.api}/jobs/{job_id}").json()

            _poll(lambda: job()["status"] == "running" and any(work.glob("stitch-*")), "no running job", stack, 60)
            victim = stack.run_state()["children"]["worker"]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()

            again = _poll(lambda: (lambda j: j if j["attempts"] >= 2 else None)(job()), "no second attempt",
                          stack, RECOVERY_LIMIT_S + 5)
            recovery = time.monotonic() - killed_at
            print(f"recovery after SIGKILL: {recovery:.1f}s (job running again, attempt {again['attempts']})")
            assert recovery < RECOVERY_LIMIT_S, stack.log()[-4000:]
            assert f"job={job_id}" in stack.log() and "heartbeat stopped" in stack.log()
            # The dead worker's process group (anything it started) went with it.
            assert _group_alive(victim) == []

            done = wait_for_job(stack, job_id, timeout=90)
            assert done["status"] == "succeeded", done
            assert done["attempts"] == 2 and done["progress"] == 1.0
            time.sleep(2)  # a duplicate delivery would arrive now
            bodies = hook.bodies()
            assert len(bodies) == 1 and bodies[0]["status"] == "succeeded", bodies
        s3 = stack.boto("s3")
        listed = s3.list_objects_v2(Bucket="audio-stitch-output-dev", Prefix="cache/").get("Contents", [])
        audio = [o["Key"] for o in listed if not o["Key"].endswith(".json")]
        assert audio == [f"cache/{done['result']['cache_key']}.wav"], audio  # exactly one result
        # The new worker removed what the killed one left (its half-fetched source); its own is gone too.
        assert list(work.glob("stitch-*")) == [], list(work.iterdir())
        assert "removed 1 abandoned work dir" in stack.log()
    finally:
        stop_stack(stack)
