"""JSON log lines and CloudWatch metrics (Embedded Metric Format), on the standard library only.

Powertools' Logger and Metrics do the same, but importing them costs more cold start than the REST
path can spend (docs/deploy.md, "Logs and metrics", has the measurement). Here:

* ``invocation(...)`` wraps one request or one SQS message: it carries the request id, the job id and
  whether this is the process's first invocation (``cold_start``) into every log line, and prints
  the metrics recorded meanwhile as one EMF document when it ends;
* ``JsonFormatter`` writes one JSON object per record; ``configure_logging`` installs it on Lambda
  (locally, the plain text lines stay);
* ``metric(name, value, unit)`` records a value for the current invocation.

CloudWatch turns the EMF line into metrics in the ``AudioStitch`` namespace, per ``Stage`` and
``Function``, without any API call from the function.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time

NAMESPACE = "AudioStitch"

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("telemetry", default=None)
_cold = True
# EMF lines are for CloudWatch: printed on Lambda (configure_logging decides), not by the local stack.
_emit = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the current invocation's ids and cold-start flag."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = _context.get()
        if ctx:
            line.update({k: v for k, v in ctx.items() if k != "metrics" and v is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(*loggers: logging.Logger, env=None) -> bool:
    """Use JSON lines on Lambda (or with LOG_FORMAT=json). Returns whether it did."""
    global _emit
    env = os.environ if env is None else env
    wanted = env.get("LOG_FORMAT", "").lower() == "json" or (
        "AWS_LAMBDA_FUNCTION_NAME" in env and env.get("LOG_FORMAT", "").lower() != "text")
    _emit = wanted
    if not wanted:
        return False
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())
    return True


@contextlib.contextmanager
def invocation(function: str, *, request_id: str | None = None, job_id: str | None = None,
               stage: str | None = None, out=None):
    """Scope one request or message; on exit, print its metrics as one EMF line on ``out`` (default:
    stdout, where Lambda's log agent picks it up; nowhere off Lambda)."""
    global _cold
    cold, _cold = _cold, False
    ctx = {"function": function, "request_id": request_id, "job_id": job_id, "cold_start": cold,
           "stage": stage, "metrics": {}}
    token = _context.set(ctx)
    try:
        yield ctx
    finally:
        _context.reset(token)
        if ctx["metrics"] and (out is not None or _emit):
            print(emf_line(ctx["metrics"], stage=stage or "", function=function), file=out or sys.stdout,
                  flush=True)


def set_job(job_id: str) -> None:
    """Name the job once the message is parsed (log lines from then on carry it)."""
    ctx = _context.get()
    if ctx is not None:
        ctx["job_id"] = job_id


def metric(name: str, value: float, unit: str = "Count") -> None:
    """Record ``value`` for the current invocation (outside one, it is dropped)."""
    ctx = _context.get()
    if ctx is not None:
        ctx["metrics"][name] = (value, unit)


def emf_line(metrics: dict[str, tuple[float, str]], *, stage: str, function: str, now: float | None = None) -> str:
    """The Embedded Metric Format document for ``metrics`` ({name: (value, unit)})."""
    doc = {
        "_aws": {
            "Timestamp": int((time.time() if now is None else now) * 1000),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stage", "Function"]],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }],
        },
        "Stage": stage,
        "Function": function,
    }
    doc.update({name: value for name, (value, _) in metrics.items()})
    return json.dumps(doc)
