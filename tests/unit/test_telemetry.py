"""JSON log lines and EMF metrics: the shapes CloudWatch reads, the ids, the cold-start flag, and
app.py recording them for a request and a job."""
from __future__ import annotations

import io
import json
import logging

import pytest

from chalicelib import telemetry


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(telemetry, "_cold", True)
    monkeypatch.setattr(telemetry, "_emit", False)


def _logger(stream):
    logger = logging.getLogger("chalicelib.test-telemetry")
    logger.handlers[:] = []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_log_lines_are_json_with_ids_and_the_cold_start_flag():
    stream, metrics = io.StringIO(), io.StringIO()
    log = _logger(stream)
    with telemetry.invocation("worker", request_id="r-1", stage="prod", out=metrics):
        telemetry.set_job("j-1")
        log.info("claimed %s", "j-1")
    with telemetry.invocation("worker", request_id="r-2", stage="prod", out=metrics):
        log.warning("second")
    log.info("outside")
    first, second, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "claimed j-1" and first["level"] == "INFO"
    assert (first["request_id"], first["job_id"], first["cold_start"], first["function"]) == ("r-1", "j-1", True,
                                                                                            "worker")
    assert second["cold_start"] is False and "job_id" not in second
    assert "request_id" not in outside
    assert first["timestamp"].endswith("Z")
    assert metrics.getvalue() == ""  # no metrics recorded, no EMF line


def test_emf_document_declares_every_metric_with_its_unit():
    out = io.StringIO()
    with telemetry.invocation("worker", stage="prod", out=out):
        telemetry.metric("JobsSucceeded", 1)
        telemetry.metric("JobSeconds", 2.5, "Seconds")
    doc = json.loads(out.getvalue())
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "AudioStitch" and directive["Dimensions"] == [["Stage", "Function"]]
    assert directive["Metrics"] == [{"Name": "JobsSucceeded", "Unit": "Count"}, {"Name": "JobSeconds", "Unit": "Seconds"}]
    assert (doc["Stage"], doc["Function"], doc["JobsSucceeded"], doc["JobSeconds"]) == ("prod", "worker", 1, 2.5)
    assert isinstance(doc["_aws"]["Timestamp"], int)


def test_json_and_emf_only_on_lambda_unless_asked():
    assert telemetry.configure_logging(env={}) is False and telemetry._emit is False
    assert telemetry.configure_logging(env={"AWS_LAMBDA_FUNCTION_NAME": "f", "LOG_FORMAT": "text"}) is False
    assert telemetry.configure_logging(env={"LOG_FORMAT": "json"}) is True and telemetry._emit is True


def test_app_records_cache_hits_bytes_and_job_outcomes(monkeypatch, capsys):
    from chalice.test import Client

    import app

    class Hit:  # what service.submit returns for a cache hit: not Queued, so a 200
        def body(self):
            return {"cached": True, "size_bytes": 1234, "cache_key": "k"}

    class Service:
        def submit(self, body):
            return Hit()

        def run_job(self, job_id, *, receive_count=1):
            return "succeeded"

    monkeypatch.setattr(telemetry, "_emit", True)
    app.set_service(Service())
    try:
        with Client(app.app) as client:
            client.http.post("/stitch", headers={"Content-Type": "application/json"},
                             body=json.dumps({"message_parts": ["a.mp3"]}))
            client.lambda_.invoke("process_job", client.events.generate_sqs_event(
                message_bodies=[json.dumps({"job_id": "j-9"})], queue_name="q.fifo"))
    finally:
        app.set_service(None)
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    api, worker = docs
    assert (api["Function"], api["CacheHit"], api["BytesOut"]) == ("api", 1.0, 1234)
    assert api["BytesIn"] == len(json.dumps({"message_parts": ["a.mp3"]}))
    assert (worker["Function"], worker["JobsSucceeded"]) == ("worker", 1) and worker["JobSeconds"] >= 0
