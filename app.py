"""Entrypoints only: the REST routes and the SQS worker. The work is in chalicelib.service.

Nothing audio-related is imported here (cold start): the service, and through it the engine,
is built on first use and cached; tests replace it with ``set_service``.
"""
from __future__ import annotations

import json
import logging
import os
import time

from chalice import Chalice, Response

from chalicelib.config import Settings, get_settings
from chalicelib.errors import StitchError

app = Chalice(app_name="audio-stitch")
app.log.setLevel(logging.INFO)
log = app.log
# The per-job line and warnings come from chalicelib's loggers. Lambda's runtime puts a handler on
# the root logger (level WARNING), so lowering ours is enough there; elsewhere (chalice local, the
# local worker) nothing listens on the root, so share Chalice's stdout handler.
_lib_log = logging.getLogger("chalicelib")
_lib_log.setLevel(logging.INFO)
if not logging.getLogger().handlers and not _lib_log.handlers:
    for _handler in app.log.handlers:
        _lib_log.addHandler(_handler)

# Read when Chalice loads the app, with the stage's environment (deploy, package and local alike).
_REQUIRE_API_KEY = Settings.from_env().require_api_key
_service = None


def get_service():
    """The process-wide service, built on first use (boto3 clients included)."""
    global _service
    if _service is None:
        from chalicelib.bootstrap import build_service

        _service = build_service(get_settings())
    return _service


def set_service(service) -> None:
    """Inject a service (tests, the local stack); ``None`` rebuilds from settings on next use."""
    global _service
    _service = service


def _json_body() -> dict:
    from chalicelib.spec import parse_body

    return parse_body(app.current_request.raw_body)


def _handle(action) -> Response:
    """Run one request: typed errors -> their status; anything else -> a logged, generic 500."""
    request = app.current_request
    started = time.monotonic()
    try:
        status, body = action()
    except StitchError as exc:
        status, body = exc.status, {"error": exc.to_dict()}
        if status >= 500 and status != 503:
            # An untyped failure (e.g. ffmpeg died): its details are for the log, not the client.
            log.error("error on %s %s: %s", request.method, request.path, exc, exc_info=True)
            body = {"error": {"code": exc.code, "message": "internal error"}}
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        status, body = 500, {"error": {"code": "internal_error", "message": "internal error"}}
    headers = {"Content-Type": "application/json"}
    if status == 503:
        headers["Retry-After"] = "5"
    ident = body.get("job_id") or body.get("cache_key") or body.get("key") or ""
    code = body.get("error", {}).get("code", "") if status >= 400 else ""
    log.info("%s %s %d %.3fs %s%s", request.method, request.path, status, time.monotonic() - started,
             ident, f" error={code}" if code else "")
    return Response(body=body, status_code=status, headers=headers)


def _submit() -> tuple[int, dict]:
    from chalicelib.service import Queued

    outcome = get_service().submit(_json_body())
    # Cached and Rendered are ready (200); a queued job is accepted, not done (202).
    return (202 if isinstance(outcome, Queued) else 200), outcome.body()


@app.route("/stitch", methods=["POST"], api_key_required=_REQUIRE_API_KEY, content_types=["application/json"])
def stitch():
    return _handle(_submit)


@app.route("/jobs/{job_id}", methods=["GET"])
def job_status(job_id):
    return _handle(lambda: (200, get_service().job_status(job_id)))


@app.route("/uploads", methods=["POST"], api_key_required=_REQUIRE_API_KEY, content_types=["application/json"])
def create_upload():
    return _handle(lambda: (201, get_service().create_upload(_json_body())))


@app.route("/health", methods=["GET"])
def health():
    # No AWS call: a health check must not fail or cost money when a dependency blips.
    from chalicelib.options import ENGINE_VERSION

    return _handle(lambda: (200, {"status": "ok", "engine_version": ENGINE_VERSION, "stage": get_settings().stage}))


@app.on_sqs_message(queue=os.environ.get("QUEUE_NAME", Settings.queue_name), batch_size=1)
def process_job(event):
    """One job per message. Raising makes SQS redeliver it (and, after maxReceiveCount, dead-letter it)."""
    for record in event:
        raw = record.to_dict()
        receive_count = int(raw.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            job_id = json.loads(record.body)["job_id"]
        except (ValueError, KeyError, TypeError):
            # Retrying cannot fix a malformed message; drop it with a trace in the log.
            log.error("dropping malformed job message: %.200r", record.body)
            continue
        get_service().run_job(job_id, receive_count=receive_count)
