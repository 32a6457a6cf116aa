"""What the bare Chalice commands do with this project: app.py calls ``guard()`` on import.

Chalice imports app.py before it deploys, packages or serves, and before it makes any AWS call,
so this is the one place where `chalice deploy --stage prod` typed by hand can still be stopped
before it leaves half a stack behind. It acts only inside a ``chalice`` click command (the CLI):
on Lambda there is no CLI (and this module is not in the zip), and ``chalice.test.Client`` or the
local stack's ``devstack.api`` load the app without one.

* ``deploy`` / ``package``: allowed only when ``make deploy`` / ``make package`` run them (they set
  ``DEPLOY_STEP_ENV`` after vendoring ffmpeg, building the deno layer and, for deploy,
  provisioning); otherwise one message naming that command, exit status 1, nothing created.
  Either way the Lambda runtime is pinned to ``LAMBDA_RUNTIME``: Chalice would take it from the
  Python running it.
* ``local``: one first line saying what it needs (the local stack, or AWS credentials).
"""
from __future__ import annotations

import os
import sys

from chalicelib.config import PROJECT_ROOT

from .definitions import LAMBDA_RUNTIME, OLDER_RUNTIME_COST, WORKER_FUNCTION

# Set by scripts/deploy.py to "<command>:<stage>" for the chalice run it makes itself.
DEPLOY_STEP_ENV = "AUDIO_STITCH_DEPLOY_STEP"
# The worker's layer version ARN(s), comma-separated, published by `make deploy` just before: not
# committable (account-specific), and Chalice resets a function's layers to its config on every deploy.
WORKER_LAYERS_ENV = "AUDIO_STITCH_WORKER_LAYERS"
FFMPEG = PROJECT_ROOT / "vendor" / "bin" / "ffmpeg"


def _chalice_command():
    """(command, params) of the running ``chalice`` CLI command, or None outside the CLI."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click else None
    if ctx is None or getattr(ctx.command.callback, "__module__", "") != "chalice.cli":
        return None
    return ctx.info_name, dict(ctx.params)


def pin_runtime() -> None:
    """Make Chalice write ``LAMBDA_RUNTIME`` into the functions whatever Python runs it.

    Chalice has no setting for it: ``Config.lambda_python_version`` is the running interpreter's
    version. The dependency builder reads the same property, so wheels are chosen for that runtime.
    """
    import warnings

    from chalice.config import Config

    Config.lambda_python_version = property(lambda self: LAMBDA_RUNTIME)
    _pin_wheel_python()
    # Chalice then warns that the running Python differs; the line guard() prints says why it may.
    warnings.filterwarnings("ignore", message="You are currently running python", category=UserWarning)


def _pin_wheel_python() -> None:
    """Make Chalice's download of Lambda wheels ask pip for ``LAMBDA_RUNTIME``'s Python.

    Chalice passes ``--abi cp312`` and the platforms but not ``--python-version``, so pip looks
    for the running interpreter's version with the runtime's ABI, which no wheel has: a binary
    dependency (lameenc) was then "missing" unless Chalice itself ran on the runtime's Python.
    """
    from chalice.deploy.packager import PipRunner

    if getattr(PipRunner.download_manylinux_wheels, "_pinned", False):
        return
    original = PipRunner.download_manylinux_wheels
    version = LAMBDA_RUNTIME.removeprefix("python")

    def download_manylinux_wheels(self, abi, packages, directory, platforms=None):
        execute = self._execute

        def with_version(command, args, *rest, **kwargs):
            if command == "download" and "--python-version" not in args:
                args = ["--python-version", version, *args]
            return execute(command, args, *rest, **kwargs)

        self._execute = with_version
        try:
            return original(self, abi, packages, directory, platforms)
        finally:
            del self._execute

    download_manylinux_wheels._pinned = True
    PipRunner.download_manylinux_wheels = download_manylinux_wheels


def add_layers(handler: str, arns: list[str]) -> None:
    """Make Chalice attach ``arns`` to ``handler``'s function besides any configured layers."""
    from chalice.config import Config

    configured = Config.layers

    def layers(self):
        value = list(configured.fget(self) or [])
        return value + [a for a in arns if a not in value] if self.function_name == handler else value

    Config.layers = property(layers)


def refusal(command: str, stage: str) -> str:
    """The one message a bare ``chalice deploy`` / ``chalice package`` stops with."""
    if command == "deploy":
        return (
            f"chalice deploy --stage {stage} on its own would create a stage that does not work: no ffmpeg "
            "in the package, no buckets, queues or table (the worker's SQS event source fails half-way), "
            "no API key (every POST is a 403), no WEBHOOK_SECRET and no deno layer for YouTube. Nothing "
            f"was created. Run:\n\n    make deploy STAGE={stage}\n\n"
            "It vendors ffmpeg, provisions the resources, runs this chalice deploy and configures the rest "
            "(README, Deploying)."
        )
    return (
        f"chalice package --stage {stage} on its own writes a template without the buckets, queues, table, "
        "alarms and API key, and a zip without ffmpeg. Nothing was written. Run:\n\n"
        f"    make package STAGE={stage}\n\n"
        f"It writes build/{stage}/ (sam.json with the resources merged, deployment.zip with ffmpeg, "
        "deno-layer.zip)."
    )


def local_banner(env=None) -> str:
    """First line of `chalice local`: what it talks to, and what it needs."""
    env = os.environ if env is None else env
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        return (f"chalice local: API only, against {endpoint}. `make run` starts that endpoint with the "
                "buckets, queue, table and the worker; without it every POST answers 503.")
    if _have_credentials():
        return ("chalice local: API only, against real AWS with your credentials; the stage's buckets, "
                "queue and table must exist (`make deploy`), and queued jobs run only on the deployed worker. "
                "For everything on this machine: `make run`.")
    return ("chalice local: API only, and it needs AWS: no credentials found, so every POST answers 503. "
            "Run `make run` for the local stack (embedded AWS, worker, samples), or set AWS credentials "
            "and a region for a deployed stage's resources.")


def _have_credentials() -> bool:
    try:
        import botocore.session

        return botocore.session.get_session().get_credentials() is not None
    except Exception:  # noqa: BLE001 - a broken profile is "no usable credentials" for this message
        return False


def guard() -> None:
    found = _chalice_command()
    if found is None:
        return
    command, params = found
    stage = params.get("stage") or "dev"
    if command in ("deploy", "package"):
        pin_runtime()
        if os.environ.get(DEPLOY_STEP_ENV) != f"{command}:{stage}":
            raise SystemExit(refusal(command, stage))
        if not FFMPEG.is_file():
            raise SystemExit(f"{FFMPEG} is missing; run `make {command} STAGE={stage}` (it runs `make vendor`).")
        layers = [a for a in os.environ.get(WORKER_LAYERS_ENV, "").split(",") if a]
        if layers:
            add_layers(WORKER_FUNCTION, layers)
        print(f"chalice {command}: Lambda runtime {LAMBDA_RUNTIME}. {OLDER_RUNTIME_COST}", flush=True)
    elif command == "local":
        print(local_banner(), flush=True)
