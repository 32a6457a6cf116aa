"""Starting and stopping `python -m chalicelib run`: one instance at a time, nothing left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from chalicelib.local import port_in_use

from .conftest import PROJECT_ROOT, http, stack_env, start_stack, stop_stack


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chalicelib", "run", *args], capture_output=True, text=True,
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


@pytest.mark.parametrize("how, status", [("ctrl-c", 0), ("sigterm", 0), ("worker-killed", 1)])
def test_every_way_of_ending_stops_every_child_and_frees_every_port(tmp_path, how, status):
    own = start_stack(tmp_path, "--no-seed")
    state = own.run_state()
    ports = [int(own.api.rsplit(":", 1)[1]), int(own.moto.rsplit(":", 1)[1])]
    assert all(port_in_use(p) for p in ports)
    assert state["samples"] == []

    if how == "worker-killed":
        os.kill(state["children"]["worker"], signal.SIGKILL)
        assert own.proc.wait(timeout=60) == status
        assert f"worker exited unexpectedly with status -{int(signal.SIGKILL)}" in own.log()
    else:
        assert stop_stack(own, signal.SIGINT if how == "ctrl-c" else signal.SIGTERM) == status

    assert not any(port_in_use(p) for p in ports)
    for pid in state["children"].values():
        assert _gone(pid)
    assert not (own.state_dir / "run.json").exists()
    assert "stopped; nothing left listening" in own.log()


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
         f"subprocess.Popen([sys.executable, '-m', 'chalicelib', 'run', '--port', '0', '--moto-port', '0',"
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
