"""`python -m audio_stitch run` (= `make run`): the whole service on one machine, no AWS account.

Starts, in order:
  1. moto's server on 127.0.0.1 (MOTO_PORT, default 4566): S3, SQS, DynamoDB, SES;
  2. the stage's resources, from the same definitions as AWS (``infra.ensure_resources``);
  3. a few generated sample parts in the input bucket (skip with --no-seed);
  4. the API: `chalice local --no-autoreload` on 127.0.0.1 (API_PORT, default 8000);
  5. the worker: long-polls the FIFO queue and feeds the app's real SQS handler;
  6. the scheduler: runs the app's ``@app.schedule`` handlers (the job sweeper, every minute).
Then prints the URLs, sample keys, a curl to try and a ``READY`` line, and supervises: Ctrl-C or
SIGTERM stops every child. A worker that dies is replaced (as Lambda replaces an instance); if
the API dies, or workers keep dying, everything stops with the reason reported.

Children get the stage's environment from .chalice/config.json plus local overrides; variables you
export yourself win over both. Port 0 means "any free port" (the tests use it).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from chalicelib.config import PROJECT_ROOT, Settings
from infra import ProvisionError, ensure_resources, stage_environment

HOST = "127.0.0.1"
DEFAULT_STATE_DIR = PROJECT_ROOT / ".chalice" / ".local-run"
DEFAULT_API_PORT = 8000
DEFAULT_MOTO_PORT = 4566
# (key, seconds, frequency): short, distinct tones so a stitch of all three is audibly in order.
SAMPLES = (("samples/intro.mp3", 1.0, 440), ("samples/middle.mp3", 1.5, 554), ("samples/outro.mp3", 1.0, 659))
STOP_GRACE_SECONDS = 5.0
MAX_WORKER_RESTARTS_PER_MINUTE = 5


class Stop(Exception):
    """SIGTERM, turned into an exception so the same cleanup runs as for Ctrl-C."""


class AlreadyRunning(Exception):
    pass


class StackFailed(Exception):
    """The stack cannot start or keep running, for a reason the message states (no traceback)."""


def log(line: str) -> None:
    print(f"run    | {line}", flush=True)


# --- environment ---------------------------------------------------------------------------------

def loopback_no_proxy(env) -> dict[str, str]:
    """NO_PROXY/no_proxy with the loopback names added: with http_proxy set and no exception,
    boto3's calls to moto and the readiness checks would go to the proxy and never arrive."""
    current = env.get("NO_PROXY") or env.get("no_proxy") or ""
    names = [n for n in current.split(",") if n.strip()]
    names += [n for n in ("127.0.0.1", "localhost") if n not in names]
    value = ",".join(names)
    return {"NO_PROXY": value, "no_proxy": value}


def child_environment(stage: str, moto_url: str, base: dict[str, str] | None = None,
                      project_dir: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment of every child: stage config < local overrides < what the caller exported.

    AWS credentials and the endpoint are forced: nothing the local stack does may reach real AWS.
    A stage missing from .chalice/config.json raises ProvisionError.
    """
    base = dict(os.environ if base is None else base)
    env = dict(base)
    for key, value in stage_environment(stage, project_dir / ".chalice" / "config.json").items():
        if key not in base:
            env[key] = value
    # Loopback is how the tests (and you) serve URL parts and receive webhooks locally.
    local = {"STAGE": stage, "ALLOW_LOOPBACK_URLS": "true", "WEBHOOK_SECRET": secrets.token_hex(16)}
    for key, value in local.items():
        if key not in base or (key == "WEBHOOK_SECRET" and not base[key]):
            env[key] = value
    region = base.get("AWS_REGION") or base.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
    for key in list(env):
        # Per-service endpoints (AWS_ENDPOINT_URL_S3) and the switch that ignores endpoint
        # variables would send some calls past moto.
        if key.startswith("AWS_ENDPOINT_URL_") or key in (
                "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
            del env[key]
    env.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",  # no 1 s IMDS probe per boto3 session
        # ~/.aws/config may set endpoints, or ignore_configured_endpoint_urls: none of it applies.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(loopback_no_proxy(env))
    # Let `python -m devstack.worker` resolve from any cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project_dir), base.get("PYTHONPATH", "")) if p)
    return env


# --- single instance -----------------------------------------------------------------------------

@dataclass
class RunState:
    """What a running stack records in ``<state dir>/run.json`` (read by a second `make run`)."""

    pid: int
    api_url: str = ""
    moto_url: str = ""
    stage: str = "dev"
    children: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    queue_url: str = ""
    webhook_secret: str = ""
    ready: bool = False

    def write(self, state_dir: Path) -> None:
        tmp = state_dir / "run.json.tmp"
        tmp.write_text(json.dumps(self.__dict__, indent=2))
        tmp.replace(state_dir / "run.json")

    @classmethod
    def read(cls, state_dir: Path) -> RunState | None:
        try:
            return cls(**json.loads((state_dir / "run.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def acquire_lock(state_dir: Path):
    """Hold ``run.lock`` for the life of this process; the kernel drops it however we exit."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "run.lock", "a+")  # noqa: SIM115 - kept open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        state = RunState.read(state_dir)
        if state and state.api_url:
            raise AlreadyRunning(
                f"the local stack is already running (pid {state.pid}): API {state.api_url}, "
                f"moto {state.moto_url}. Use it, or stop it with Ctrl-C in its terminal or `kill {state.pid}`."
            ) from None
        pid = f" (pid {state.pid})" if state else ""
        raise AlreadyRunning(f"the local stack is already starting{pid}; state in {state_dir}") from None
    return handle


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens on host:port (TIME_WAIT leftovers do not count)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# --- moto ----------------------------------------------------------------------------------------

class MotoServer:
    """moto's WSGI app on a threaded werkzeug server inside this process.

    Bound in the constructor (moto's ThreadedMotoServer binds in its thread and hangs forever
    when the port is taken); served from a daemon thread, so it cannot outlive us.
    """

    def __init__(self, host: str, port: int):
        import logging

        # moto answers every origin by default; off, S3 applies the bucket's own CORS rule, as AWS does,
        # so the web page's direct upload proves that rule (read by moto.settings at import).
        os.environ.setdefault("MOTO_DISABLE_GLOBAL_CORS", "true")
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        if not os.environ.get("LOCAL_RUN_VERBOSE"):
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per AWS call is noise
        from devstack.motocors import FormPostCors

        app = FormPostCors(DomainDispatcherApplication(create_backend_app))
        self.server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="moto", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=STOP_GRACE_SECONDS)


# --- resources and samples -----------------------------------------------------------------------

def create_resources(settings, moto_url: str) -> dict:
    """Buckets, queues, table, sender identity: the definitions `provision` uses on AWS."""
    try:
        return ensure_resources(settings, endpoint_url=moto_url)
    except ProvisionError as exc:  # a bad name or setting in the stage's config: say which
        raise StackFailed(f"cannot create the stage's resources: {exc}") from None


def seed_samples(s3, bucket: str) -> list[str]:
    """Generate the SAMPLES with real ffmpeg and upload them; returns their keys."""
    from chalicelib.ffmpeg import ffmpeg_binary

    keys = []
    with tempfile.TemporaryDirectory(prefix="stitch-seed-") as tmp:
        for key, seconds, freq in SAMPLES:
            path = Path(tmp) / Path(key).name
            subprocess.run(
                [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                 "-i", f"sine=frequency={freq}:sample_rate=44100:duration={seconds}",
                 "-af", "volume=0.5", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", str(path)],
                check=True, stdin=subprocess.DEVNULL,
            )
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": "audio/mpeg"})
            keys.append(key)
    return keys


# --- children ------------------------------------------------------------------------------------

def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Own session: the terminal's Ctrl-C reaches only us, and we stop children in order; killpg
    # then also reaches anything a child started (ffmpeg).
    return subprocess.Popen([sys.executable, *args], env=env, cwd=str(PROJECT_ROOT),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop_children(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each child's process group, then SIGKILL what is still there after a grace period."""
    for proc in children.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, even if the leader exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_SECONDS)


def http_answers(url: str) -> bool:
    """True once anything answers HTTP at ``url`` (an error status still means "listening")."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(children: dict[str, subprocess.Popen], port_file: Path, ready_files: list[Path],
               timeout: float) -> int:
    """Wait for the API to answer and every worker to report in; returns the API's port."""
    deadline = time.monotonic() + timeout
    api_port = None
    while time.monotonic() < deadline:
        for name, proc in children.items():
            if proc.poll() is not None:
                raise StackFailed(f"{name} exited with status {proc.returncode} while starting (see its output above)")
        if api_port is None and port_file.is_file() and port_file.read_text().strip():
            api_port = int(port_file.read_text())
        if api_port and all(f.is_file() for f in ready_files) and http_answers(f"http://{HOST}:{api_port}/health"):
            return api_port
        time.sleep(0.1)
    raise StackFailed(f"the stack was not ready after {timeout:.0f}s")


def banner(state: RunState, settings) -> str:
    api = state.api_url
    parts = json.dumps({"message_parts": state.samples or ["<key in the input bucket>"]})
    lines = [
        "",
        f"  API     {api}     (GET /health, POST /stitch, GET /jobs/<id>, POST /uploads)",
        f"  page    {api}/     (stitch in the browser; the API reference is {api}/openapi.json)",
        f"  AWS     {state.moto_url}     (moto: S3, SQS, DynamoDB, SES; any credentials)",
        f"  buckets {settings.bucket_input} -> {settings.bucket_output}",
        f"  queue   {state.queue_url}  ({sum(n.startswith('worker') for n in state.children)} worker(s))",
    ]
    if state.samples:
        lines.append(f"  samples {', '.join(state.samples)}")
    lines += [
        "",
        "  Try:",
        f"    curl -s -X POST {api}/stitch -H 'Content-Type: application/json' -d '{parts}'",
        "  Queued (add \"async\": true), then poll:",
        f"    curl -s {api}/jobs/<job_id>",
        "  Your own file (then use the returned key as a part):",
        f"    curl -s -X POST {api}/uploads -H 'Content-Type: application/json' -d '{{\"filename\": \"my.mp3\"}}'",
        "    then POST a form of its 'fields' plus the file (last) to 'upload_url':",
        "    curl -s <upload_url> -F key=<fields.key> -F policy=... (every field) -F file=@my.mp3",
        "  Or all of that in one command, from any directory:",
        f"    {Path(sys.executable).parent / 'audio-stitch'} remote my.mp3 other.wav -o out.mp3 --api {api}",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------

def _port(value: str | None, default: int, name: str) -> int:
    try:
        port = int(value) if value not in (None, "") else default
    except ValueError:
        raise SystemExit(f"{name} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"{name} must be between 0 and 65535, got {port}")
    return port


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m audio_stitch run",
        description="The whole service on 127.0.0.1: moto as AWS, chalice local as the API, SQS worker(s).")
    parser.add_argument("--port", help=f"API port (env API_PORT, default {DEFAULT_API_PORT}; 0 = any free)")
    parser.add_argument("--moto-port", help=f"moto port (env MOTO_PORT, default {DEFAULT_MOTO_PORT}; 0 = any free)")
    parser.add_argument("--stage", default=os.environ.get("STAGE") or "dev",
                        help="stage whose .chalice/config.json environment to use (default dev)")
    parser.add_argument("--no-seed", action="store_true", help="do not upload the sample parts")
    parser.add_argument("--state-dir", default=os.environ.get("LOCAL_RUN_DIR") or str(DEFAULT_STATE_DIR),
                        help="where the lock file and run.json go (env LOCAL_RUN_DIR)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("LOCAL_WORKERS") or 1),
                        help="worker processes, i.e. jobs run at once (env LOCAL_WORKERS, default 1)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for READY")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started us dies (tests use it)")
    args = parser.parse_args(argv)
    args.port = _port(args.port if args.port is not None else os.environ.get("API_PORT"), DEFAULT_API_PORT, "API port")
    args.moto_port = _port(args.moto_port if args.moto_port is not None else os.environ.get("MOTO_PORT"),
                           DEFAULT_MOTO_PORT, "moto port")
    args.state_dir = Path(args.state_dir).resolve()
    if not 1 <= args.workers <= 16:
        raise SystemExit(f"--workers must be between 1 and 16, got {args.workers}")
    return args


class LocalStack:
    """moto in this process, the API and the workers as child process groups."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state_dir: Path = args.state_dir
        self.children: dict[str, subprocess.Popen] = {}
        self.moto: MotoServer | None = None
        self.state = RunState(pid=os.getpid(), stage=args.stage)
        self.settings = None
        self.env: dict[str, str] = {}
        self.worker_args: dict[str, list[str]] = {}

    def _files(self) -> list[Path]:
        return [*self.state_dir.glob("worker-*.ready"), self.state_dir / "run.json", self.state_dir / "api.port"]

    def start(self) -> None:
        """Everything up to READY; raises StackFailed (or anything unexpected) on the way."""
        args, state = self.args, self.state
        for stale in self._files():
            stale.unlink(missing_ok=True)
        state.write(self.state_dir)
        self.moto = MotoServer(HOST, args.moto_port)
        state.moto_url = self.moto.url
        log(f"moto listening on {self.moto.url}")
        try:
            env = child_environment(args.stage, self.moto.url)
        except ProvisionError as exc:  # e.g. a --stage that .chalice/config.json does not define
            raise StackFailed(str(exc)) from None
        env["LOCAL_RUN_PARENT_PID"] = str(os.getpid())
        # This process makes AWS calls too (resources, seeding): same dummy credentials + endpoint.
        for key in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
            del os.environ[key]
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                                "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                                "AWS_EC2_METADATA_DISABLED", "AWS_CONFIG_FILE",
                                                "AWS_SHARED_CREDENTIALS_FILE")})

        import boto3

        self.settings = settings = Settings.from_env(env)
        resources = create_resources(settings, self.moto.url)
        state.queue_url = resources["queue_url"]
        state.webhook_secret = env["WEBHOOK_SECRET"]
        log(f"stage {args.stage}: buckets {settings.bucket_input}, {settings.bucket_output}; queue "
            f"{settings.queue_name} (DLQ {settings.dlq_name}); table {settings.jobs_table}; "
            f"sender {settings.sender_email} {resources['sender_status']}")
        if not args.no_seed:
            state.samples = seed_samples(boto3.client("s3"), settings.bucket_input)
            log(f"seeded s3://{settings.bucket_input}/: {' '.join(state.samples)}")

        port_file = self.state_dir / "api.port"
        ready_files = [self.state_dir / f"worker-{i}.ready" for i in range(1, args.workers + 1)]
        self.env = env
        for i, ready_file in enumerate(ready_files, 1):
            # One process per concurrent job, as Lambda runs one event per instance.
            name = f"worker-{i}" if args.workers > 1 else "worker"
            self.worker_args[name] = ["-m", "devstack.worker", "--queue-url", state.queue_url,
                                      "--ready-file", str(ready_file)]
            self.children[name] = spawn(self.worker_args[name], env)
        # EventBridge's part: the sweeper and any other @app.schedule handler, at their rates.
        self.worker_args["scheduler"] = ["-m", "devstack.scheduler"]
        self.children["scheduler"] = spawn(self.worker_args["scheduler"], env)
        self.children["api"] = spawn(["-m", "devstack.api", "--host", HOST, "--port", str(args.port),
                                      "--stage", args.stage, "--port-file", str(port_file)], env)
        state.children = {name: proc.pid for name, proc in self.children.items()}
        state.write(self.state_dir)
        api_port = wait_ready(self.children, port_file, ready_files, args.ready_timeout)
        state.api_url = f"http://{HOST}:{api_port}"
        state.ready = True
        state.write(self.state_dir)

    def supervise(self) -> None:
        """Run until stopped. A worker that exits is replaced, as Lambda replaces an instance that
        crashed or timed out; the API exiting, or workers crashing in a loop, stops the stack."""
        from devstack.worker import TIMEOUT_EXIT_STATUS

        recent: list[float] = []
        while True:
            for name, proc in list(self.children.items()):
                status = proc.poll()
                if status is None:
                    continue
                if name not in self.worker_args:
                    raise StackFailed(f"{name} exited unexpectedly with status {status}")
                now = time.monotonic()
                recent = [t for t in recent if now - t < 60] + [now]
                if len(recent) > MAX_WORKER_RESTARTS_PER_MINUTE:
                    raise StackFailed(f"{name} exited with status {status}, the {len(recent)}th worker "
                                      "to exit within a minute; stopping (see the output above)")
                why = "timed out" if status == TIMEOUT_EXIT_STATUS else f"exited with status {status}"
                # What it started (ffmpeg) shares its process group: a SIGKILL'd leader cannot take
                # its children along, so the group goes now, as Lambda ends the whole sandbox.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                self.children[name] = spawn(self.worker_args[name], self.env)
                # Said before run.json shows the new pid: whoever watches the file then finds the line.
                log(f"{name} {why}; started a fresh one (pid {self.children[name].pid}), as Lambda would")
                self.state.children[name] = self.children[name].pid
                self.state.write(self.state_dir)
            time.sleep(0.5)

    def stop(self) -> None:
        stop_children(self.children)
        if self.moto is not None:
            self.moto.stop()
        for leftover in self._files():
            leftover.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Run the local stack until Ctrl-C/SIGTERM; 0 on a clean stop, 1 if it could not start or a child died."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.update(loopback_no_proxy(os.environ))
    if args.exit_with_parent:
        from devstack.procs import die_with_parent

        die_with_parent(os.getppid())
    try:
        lock = acquire_lock(args.state_dir)
    except AlreadyRunning as exc:
        print(f"run    | {exc}", file=sys.stderr, flush=True)
        return 1
    busy = [(name, port) for name, port in (("API", args.port), ("moto", args.moto_port)) if port_in_use(port)]
    if busy:
        for name, port in busy:
            var = "API_PORT" if name == "API" else "MOTO_PORT"
            print(f"run    | port {port} ({name}) on {HOST} is already in use by another program "
                  f"(another `make run` from a different checkout?). Stop it, or pick another port: "
                  f"{var}={port + 1} make run", file=sys.stderr, flush=True)
        lock.close()
        return 1

    def on_sigterm(signum, frame):
        raise Stop()

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    # A shell starting us in the background sets SIGINT to "ignore" and Python keeps that;
    # `kill -INT` (and Ctrl-C after `fg`) must still stop the stack.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = LocalStack(args)
    status = 0
    try:
        stack.start()
        print(banner(stack.state, stack.settings), flush=True)
        print(f"READY api={stack.state.api_url} moto={stack.state.moto_url}", flush=True)
        stack.supervise()
    except (KeyboardInterrupt, Stop):
        log("stopping")
    except StackFailed as exc:
        log(f"FAILED: {exc}")
        status = 1
    except Exception as exc:
        traceback.print_exc()
        log(f"FAILED: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        lock.close()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        log("stopped; nothing left listening")
    return status
