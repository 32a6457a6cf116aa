"""The local stack's stand-in for EventBridge schedules: calls the app's ``@app.schedule`` handlers.

Chalice's local server runs no scheduled handlers, so this process imports app.py and invokes each
``rate(...)`` handler at its rate (the first run at once), with an event shaped like the one
EventBridge sends. A handler that raises is logged and called again at its next tick, as on AWS.

Run by ``devstack.stack`` as ``python -m devstack.scheduler``.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

from chalicelib.config import PROJECT_ROOT
from devstack.procs import die_with_parent

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def log(line: str) -> None:
    print(f"sched  | {line}", flush=True)


def rate_seconds(expression) -> float:
    """Seconds between runs of a ``rate(N unit)`` schedule; ValueError for cron (not run locally)."""
    text = expression if isinstance(expression, str) else expression.to_string()
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"only rate(...) schedules run locally, not {text!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2).rstrip("s")]


def scheduled_event(region: str, rule: str) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region, "resources": [f"arn:aws:events:{region}:123456789012:rule/{rule}"], "detail": {}}


def schedules(app_module) -> list[tuple[str, object, float]]:
    """(name, handler, period) of every rate schedule the app registers."""
    from chalice.app import ScheduledEventConfig

    found = []
    for config in app_module.app.event_sources:
        if isinstance(config, ScheduledEventConfig):
            handler = getattr(app_module, config.handler_string.split(".", 1)[1])
            found.append((config.name, handler, rate_seconds(config.schedule_expression)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--project-dir", default=str(PROJECT_ROOT))
    parser.add_argument("--ready-file", help="created once the app is imported")
    args = parser.parse_args(argv)
    die_with_parent()
    from chalice.local import LambdaContext

    from chalicelib.config import get_settings

    if args.project_dir not in sys.path:
        sys.path.insert(0, args.project_dir)
    settings = get_settings()
    try:
        jobs = schedules(importlib.import_module("app"))
    except Exception as exc:
        log(f"cannot load the schedules from app.py: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return 1
    log("running " + (", ".join(f"{name} every {period:g}s" for name, _, period in jobs) or "no schedules"))
    if args.ready_file:
        Path(args.ready_file).write_text("ready")
    due = {name: time.monotonic() for name, _, _ in jobs}
    try:
        while True:
            for name, handler, period in jobs:
                if time.monotonic() < due[name]:
                    continue
                due[name] += period
                context = LambdaContext(f"audio-stitch-{settings.stage}-{name}", memory_size=512)
                try:
                    handler(scheduled_event(settings.aws_region, name), context)
                except Exception as exc:
                    log(f"{name} FAILED: {type(exc).__name__}: {exc}; next run in {period:g}s")
                    traceback.print_exc(file=sys.stderr)
            time.sleep(max(0.1, min(due.values(), default=time.monotonic() + 1) - time.monotonic()) if due else 1)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
