"""The real local stack (`python -m audio_stitch run`) as a subprocess, started once per session.

Everything it writes goes under a pytest temp dir: the state dir (lock, run.json) and WORK_DIR.
Ports are ephemeral (``--port 0 --moto-port 0``); readiness is the READY line it prints.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.audio import decoded_duration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^READY api=(\S+) moto=(\S+)$", re.M)
START_TIMEOUT = 120  # a cold machine imports moto + chalice + the app in three processes
JOB_TIMEOUT = 90
WEBHOOK_SECRET = "e2e-webhook-secret"
CORS_ORIGIN = "http://app.test:8080"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Stack:
    proc: subprocess.Popen
    log_path: Path
    state_dir: Path
    api: str = ""
    moto: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def run_state(self) -> dict:
        return json.loads((self.state_dir / "run.json").read_text())

    def boto(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.moto, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def stack_env(work_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("API_PORT", "MOTO_PORT", "LOCAL_RUN_DIR", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    env.update({"WORK_DIR": str(work_dir), "WEBHOOK_SECRET": WEBHOOK_SECRET, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_stack(base: Path, *args: str, env: dict | None = None) -> Stack:
    """Start `python -m audio_stitch run` on ephemeral ports; returns once it printed READY."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "work").mkdir(exist_ok=True)
    state_dir, log_path = base / "state", base / "stack.log"
    with open(log_path, "wb") as out:
        # Output goes to a file, not a pipe: nobody would drain a pipe and the children would block.
        proc = subprocess.Popen(
            [sys.executable, "-m", "audio_stitch", "run", "--port", "0", "--moto-port", "0",
             "--state-dir", str(state_dir), "--exit-with-parent", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(PROJECT_ROOT),
            env=env or stack_env(base / "work"), start_new_session=True,
        )
    stack = Stack(proc, log_path, state_dir)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = READY.search(stack.log())
        if match:
            stack.api, stack.moto = match.groups()
            return stack
        if proc.poll() is not None:
            pytest.fail(f"the stack exited with {proc.returncode} before READY:\n{stack.log()[-4000:]}")
        time.sleep(0.1)
    stop_stack(stack)
    pytest.fail(f"the stack was not READY after {START_TIMEOUT}s:\n{stack.log()[-4000:]}")


def stop_stack(stack: Stack, sig: int = signal.SIGTERM) -> int:
    if stack.proc.poll() is None:
        stack.proc.send_signal(sig)
        try:
            return stack.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
    return stack.proc.wait()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("stack")
    # An API CORS origin, as a stage would set it, so the preflight is tested through `chalice local`.
    stack = start_stack(base, "--workers", "2", env=stack_env(base / "work", CORS_ALLOW_ORIGINS=CORS_ORIGIN))
    yield stack
    stop_stack(stack)


@pytest.fixture
def show_log_on_failure(stack, request):
    """Print the stack's log when a test fails: the worker's and the API's lines explain most failures."""
    offset = len(stack.log())
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.log()[offset:][-6000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report


# --- HTTP ----------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, body=None, *, data: bytes | None = None, headers: dict | None = None) -> Reply:
    """One HTTP request with urllib; error statuses are returned, not raised."""
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


def wait_for_job(stack: Stack, job_id: str, timeout: float = JOB_TIMEOUT) -> dict:
    """Poll GET /jobs/{id} until it leaves queued/running."""
    deadline = time.monotonic() + timeout
    while True:
        reply = http("GET", f"{stack.api}/jobs/{job_id}")
        assert reply.status == 200, reply.body
        job = reply.json()
        if job["status"] not in ("queued", "running"):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['status']} after {timeout}s:\n{stack.log()[-4000:]}")
        time.sleep(0.2)


def download_seconds(url: str, tmp_path: Path, suffix: str) -> float:
    """GET a presigned link over HTTP and measure the audio by decoding all of it to PCM."""
    reply = http("GET", url)
    assert reply.status == 200, reply.body[:300]
    src = tmp_path / f"download.{suffix}"
    src.write_bytes(reply.body)
    return decoded_duration(src)
