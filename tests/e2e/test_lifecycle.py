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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_ends_every_child_and_frees_every_port(tmp_path, sig):
    own = start_stack(tmp_path, "--no-seed")
    state = own.run_state()
    ports = [int(own.api.rsplit(":", 1)[1]), int(own.moto.rsplit(":", 1)[1])]
    assert all(port_in_use(p) for p in ports)
    assert state["samples"] == []

    assert stop_stack(own, sig) == 0

    assert not any(port_in_use(p) for p in ports)
    for pid in state["children"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (own.state_dir / "run.json").exists()
    assert "stopped; nothing left listening" in own.log()


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
