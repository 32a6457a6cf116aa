"""Entrypoints only: the REST routes and the SQS worker. The work is in chalicelib.service.

Nothing audio-related is imported here (cold start): the service, and through it the engine,
is built on first use and cached; tests replace it with ``set_service``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from chalice import Chalice, CORSConfig, Rate, Response

from chalicelib import telemetry
from chalicelib.config import Settings, get_settings
from chalicelib.errors import StitchError

app = Chalice(app_name="audio-stitch")
# `chalice deploy|package|local` typed by hand: stop (or pin the runtime) before Chalice acts.
# Only the Chalice CLI loads chalice.cli; Lambda and chalice.test never do, and infra/ is not in the zip.
if "chalice.cli" in sys.modules:
    from infra.chalice_guard import guard

    guard()
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
# On Lambda: one JSON object per line, with request/job id and the cold-start flag.
telemetry.configure_logging(app.log, _lib_log)

# Read when Chalice loads the app, with the stage's environment (deploy, package and local alike).
_REQUIRE_API_KEY = Settings.from_env().require_api_key


def _cors(origins: tuple[str, ...]) -> CORSConfig | None:
    """CORS_ALLOW_ORIGINS as Chalice's CORSConfig (every route; API Gateway answers the preflight).

    API Gateway's preflight carries one fixed origin, so a list of several keeps the first (logged).
    """
    if not origins:
        return None
    if len(origins) > 1:
        log.warning("CORS_ALLOW_ORIGINS has %d origins; API Gateway allows one: using %s", len(origins), origins[0])
    return CORSConfig(allow_origin=origins[0], allow_headers=["x-api-key"], expose_headers=["Retry-After"],
                      max_age=600)


app.api.cors = _cors(Settings.from_env().cors_allow_origins)
_services: dict[str, object] = {}


def get_service(role: str = "api"):
    """The process-wide service for ``role``, built on first use (boto3 clients included).

    ``api`` clients have short deadlines (a hung AWS call answers 503 well inside API Gateway's
    29 s); the ``worker``'s (the SQS handler and the sweeper) are patient.
    """
    if role not in _services:
        from chalicelib.bootstrap import build_service

        _services[role] = build_service(get_settings(), role=role)
    return _services[role]


def set_service(service) -> None:
    """Inject a service for every role (tests, the local stack); ``None`` rebuilds from settings on next use."""
    _services.clear()
    if service is not None:
        _services.update(api=service, worker=service)


# Chalice answers some requests itself, before a view runs, as {"Code", "Message"}: rewritten to
# the documented error shape. (API Gateway's own answers, e.g. the 403 for an unknown route, never
# reach Lambda: see docs/TROUBLESHOOTING.md.)
_CHALICE_ERRORS = {
    "MethodNotAllowedError": ("method_not_allowed", "method"),
    "UnsupportedMediaType": ("unsupported_media_type", "Content-Type"),
    "BadRequest": ("bad_request", "Accept"),
    "InternalServerError": ("internal_error", None),
}


@app.middleware("http")
def _error_shape(event, get_response):
    response = get_response(event)
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"} and body["Code"] in _CHALICE_ERRORS:
        code, field = _CHALICE_ERRORS[body["Code"]]
        message = body["Message"]
        if code == "method_not_allowed":
            message += f" on {event.path}; allowed: {response.headers.get('Allow', '')}"
        elif code == "unsupported_media_type":
            message += "; send Content-Type: application/json"
        elif code == "internal_error":
            message = "internal error"
        response.body = {"error": {"code": code, "message": message, **({"field": field} if field else {})}}
        response.headers["Content-Type"] = "application/json"
        log.info("%s %s %d error=%s", event.method, event.path, response.status_code, code)
    return response


def _json_body() -> dict:
    from chalicelib.spec import parse_body

    return parse_body(app.current_request.raw_body)


def _handle(action) -> Response:
    """One request inside a telemetry scope: its log lines carry the request id, and its metrics
    (cache hits, bytes, 5xx) go out as one EMF line."""
    context = getattr(app, "lambda_context", None)
    request_id = getattr(context, "aws_request_id", None) or (app.current_request.context or {}).get("requestId")
    with telemetry.invocation("api", request_id=request_id, stage=get_settings().stage):
        response = _respond(action)
        _request_metrics(app.current_request, response)
        return response


def _request_metrics(request, response: Response) -> None:
    status, body = response.status_code, response.body if isinstance(response.body, dict) else {}
    if request.method == "POST":
        telemetry.metric("BytesIn", len(request.raw_body or b""), "Bytes")
    if request.path == "/stitch" and status == 200:
        # 1 or 0 per answered request: the metric's Average is the cache hit ratio.
        telemetry.metric("CacheHit", 1.0 if body.get("cached") else 0.0, "None")
        telemetry.metric("BytesOut", body.get("size_bytes", 0), "Bytes")
    elif request.path == "/stitch" and status == 202:
        telemetry.metric("JobsQueued", 1)
    if status >= 500:
        telemetry.metric("ServerErrors", 1)


def _respond(action) -> Response:
    """Run one request: typed errors -> their status; anything else -> a logged, generic 500."""
    request = app.current_request
    started = time.monotonic()
    try:
        status, body = action()
    except Exception as exc:
        from chalicelib.faults import public_error

        error = public_error(exc, where=f"{request.method} {request.path}")
        if error is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            error = StitchError("internal error")
        status, body = error.status, {"error": error.to_dict()}
    headers = {"Content-Type": "application/json"}
    if status in (503, 507):
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


def _asset(name: str) -> Response:
    from chalicelib.assets import asset

    body, content_type = asset(name)
    return Response(body=body, status_code=200, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})


@app.route("/", methods=["GET"])
def page():
    """The web page: a static file, no build step."""
    return _asset("index.html")


@app.route("/openapi.json", methods=["GET"])
def openapi():
    return _asset("openapi.json")


@app.on_sqs_message(queue=os.environ.get("QUEUE_NAME", Settings.queue_name), batch_size=1)
def process_job(event):
    """One job per message. Raising makes SQS redeliver it (and, after maxReceiveCount, dead-letter it)."""
    for record in event:
        raw = record.to_dict()
        receive_count = int(raw.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            job_id = json.loads(record.body)["job_id"]
            if not isinstance(job_id, str):
                raise TypeError(f"job_id is a {type(job_id).__name__}")
        except (ValueError, KeyError, TypeError) as exc:
            # Retrying cannot fix it: straight to the dead-letter queue, with the reason, for a human.
            reason = f"not a job message ({type(exc).__name__}: {exc})"
            log.error("malformed job message moved to the dead-letter queue: %s: %.200r", reason, record.body)
            service = get_service("worker")
            service.queue.dead_letter(service.settings.dlq_name, record.body, reason)
            continue
        _run_job(job_id, receive_count)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def sweep_jobs(event):
    """Every minute: send again the jobs whose worker stopped heartbeating (see chalicelib/sweeper.py)."""
    from chalicelib.sweeper import sweep

    report = sweep(get_service("worker"))
    if report.requeued or report.failed:
        log.info("%s", report)


def _run_job(job_id: str, receive_count: int) -> None:
    """run_job inside a telemetry scope: the outcome and duration as metrics, the job id in the log."""
    context = getattr(app, "lambda_context", None)
    started = time.monotonic()
    with telemetry.invocation("worker", request_id=getattr(context, "aws_request_id", None), job_id=job_id,
                              stage=get_settings().stage):
        try:
            outcome = get_service("worker").run_job(job_id, receive_count=receive_count)
        except Exception:
            telemetry.metric("JobsRetried", 1)
            raise
        finally:
            telemetry.metric("JobSeconds", round(time.monotonic() - started, 3), "Seconds")
        if outcome in ("succeeded", "failed"):
            telemetry.metric("JobsSucceeded" if outcome == "succeeded" else "JobsFailed", 1)
