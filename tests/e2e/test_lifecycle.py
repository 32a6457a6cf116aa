"""Starting and stopping `python -m audio_stitch run`: one instance at a time, nothing left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from devstack.stack import port_in_use

from .conftest import PROJECT_ROOT, http, stack_env, start_stack, stop_stack, wait_for_job


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audio_stitch", "run", *args], capture_output=True, text=True,
                          cwd=str(PROJECT_ROOT), env=env, timeout=60, stdin=subprocess.DEVNULL)


def test_second_run_with_the_same_state_says_it_is_running(stack, tmp_path):
    state = stack.run_state()
    second = _run("--port", "0", "--moto-port", "0", "--state-dir", str(stack.state_dir), env=stack_env(tmp_path))
    assert second.returncode == 1
    assert f"already running (pid {state['pid']})" in second.stderr
    assert stack.api in second.stderr and stack.moto in second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    assert http("GET", f"{stack.api}/health").status == 200  # the first one is untouched


def test_second_run_on_the_same_ports_names_the_busy_port(stack, tmp_path):
    api_port = stack.api.rsplit(":", 1)[1]
    second = _run("--port", api_port, "--moto-port", "0", "--state-dir", str(tmp_path / "other"),
                  env=stack_env(tmp_path))
    assert second.returncode == 1
    assert f"port {api_port} (API) on 127.0.0.1 is already in use" in second.stderr
    assert f"API_PORT={int(api_port) + 1} make run" in second.stderr
    assert http("GET", f"{stack.api}/health").status == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_ends_every_child_and_frees_every_port(tmp_path, sig):
    own = start_stack(tmp_path, "--no-seed")
    state = own.run_state()
    ports = [int(own.api.rsplit(":", 1)[1]), int(own.moto.rsplit(":", 1)[1])]
    assert all(port_in_use(p) for p in ports)
    assert state["samples"] == []

    assert stop_stack(own, sig) == 0

    assert not any(port_in_use(p) for p in ports)
    for pid in state["children"].values():
        assert _gone(pid)
    assert not (own.state_dir / "run.json").exists()
    assert "stopped; nothing left listening" in own.log()


def _wait_for(predicate, what: str, stack, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}:\n{stack.log()[-4000:]}"
        time.sleep(0.1)


def test_a_timed_out_or_dead_worker_is_replaced_as_lambda_would(tmp_path):
    from tests.audio import make_tone
    from tests.httpserver import LocalServer

    poll = 1
    own = start_stack(tmp_path, "--no-seed", env=stack_env(
        tmp_path / "work", WORKER_TIMEOUT_SECONDS="3", LOCAL_WORKER_WAIT_SECONDS=str(poll)))
    first = own.run_state()["children"]["worker"]
    with LocalServer() as server:
        # Headers, then silence: the job outlives WORKER_TIMEOUT_SECONDS and its worker is stopped.
        stalled = server.add_stall("/stalled.mp3", b"\xff" * 100_000)
        reply = http("POST", f"{own.api}/stitch", {"message_parts": [{"url": stalled}]})
        assert reply.status == 202, reply.body
        _wait_for(lambda: "worker timed out; started a fresh one" in own.log(), "no timeout", own)
    assert "timed out after 3s, the function's timeout" in own.log()
    second = own.run_state()["children"]["worker"]
    assert second != first and _gone(first)

    os.kill(second, signal.SIGKILL)
    killed_at = time.monotonic()
    _wait_for(lambda: own.run_state()["children"]["worker"] != second, "no new worker after a crash", own)
    assert f"worker exited with status -{int(signal.SIGKILL)}; started a fresh one" in own.log()
    # The killed worker's last ReceiveMessage may still be open in moto; a message sent now
    # would vanish into it until the visibility timeout, exactly as with SQS.
    _wait_for(lambda: time.monotonic() > killed_at + poll + 0.5, "", own)

    s3 = own.boto("s3")
    s3.put_object(Bucket="audio-stitch-input-dev", Key="e2e/after.wav",
                  Body=make_tone(tmp_path / "after.wav", 1.0, fmt="wav").read_bytes())
    reply = http("POST", f"{own.api}/stitch", {"message_parts": ["e2e/after.wav"], "async": True, "format": "wav"})
    assert reply.status == 202, reply.body
    job = wait_for_job(own, reply.json()["job_id"])
    assert job["status"] == "succeeded", job  # served by the replacement

    workers = [first, second, own.run_state()["children"]["worker"]]
    ports = [int(url.rsplit(":", 1)[1]) for url in (own.api, own.moto)]
    assert stop_stack(own) == 0
    assert all(_gone(p) for p in workers) and not any(port_in_use(p) for p in ports)


def test_a_resource_error_fails_the_start_clearly(tmp_path):
    result = _run("--port", "0", "--moto-port", "0", "--no-seed", "--state-dir", str(tmp_path / "state"),
                  env=stack_env(tmp_path, QUEUE_NAME="not-a-fifo-queue"))
    assert result.returncode == 1
    assert "FAILED: cannot create the stage's resources" in result.stdout and "not-a-fifo-queue" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "state" / "run.json").exists()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (containers' pid 1 may not reap)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_killed_parent_takes_the_whole_stack_with_it(tmp_path):
    state_dir, log = tmp_path / "state", tmp_path / "stack.log"
    # A stand-in for pytest or a CI runner that dies without cleaning up (SIGKILL).
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"subprocess.Popen([sys.executable, '-m', 'audio_stitch', 'run', '--port', '0', '--moto-port', '0',"
         f" '--no-seed', '--exit-with-parent', '--state-dir', {str(state_dir)!r}],"
         f" stdout=open({str(log)!r}, 'wb'), stderr=subprocess.STDOUT)\n"
         "time.sleep(600)\n"],
        cwd=str(PROJECT_ROOT), env=stack_env(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "READY" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no output"
            time.sleep(0.1)
        state = json.loads((state_dir / "run.json").read_text())
        ports = [int(url.rsplit(":", 1)[1]) for url in (state["api_url"], state["moto_url"])]
    finally:
        launcher.kill()
        launcher.wait()
    pids = [state["pid"], *state["children"].values()]
    deadline = time.monotonic() + 30
    while not (all(_gone(p) for p in pids) and not any(port_in_use(p) for p in ports)):
        assert time.monotonic() < deadline, f"still alive or listening after the launcher died:\n{log.read_text()}"
        time.sleep(0.1)
    assert "stopped; nothing left listening" in log.read_text()
