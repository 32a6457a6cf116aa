"""The local worker against moto's SQS: Lambda-shaped events, delete on success, redelivery, DLQ."""
from __future__ import annotations

import json
import signal
import time
import types

import boto3
import pytest
from chalice import Chalice
from moto import mock_aws

from devstack.worker import Poller, find_sqs_handler, message_attributes, sqs_event

QUEUE = "jobs-unit.fifo"


@pytest.fixture
def sqs():
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queues(sqs):
    """A FIFO queue redriving to a DLQ after 2 receives; visibility 0 so a failure is visible again at once."""
    dlq_url = sqs.create_queue(QueueName="jobs-unit-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=QUEUE, Attributes={
        "FifoQueue": "true", "VisibilityTimeout": "0",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    })["QueueUrl"]
    return types.SimpleNamespace(url=url, dlq_url=dlq_url)


def _app(outcomes: list):
    """A real Chalice app whose SQS handler records what it got and raises when told to."""
    app = Chalice(app_name="unit")
    seen = []

    @app.on_sqs_message(queue=QUEUE, batch_size=1)
    def process_job(event):
        for record in event:
            seen.append({"body": record.body, "receipt_handle": record.receipt_handle, **record.to_dict()})
            if outcomes and outcomes.pop(0) == "fail":
                raise RuntimeError("transient: try again")

    return types.SimpleNamespace(app=app, process_job=process_job), seen


def _send(sqs, url, job_id="job-1", body=None):
    return sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body or {"job_id": job_id}),
                            MessageGroupId=job_id, MessageDeduplicationId=job_id)["MessageId"]


def _count(sqs, url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_success_hands_a_lambda_shaped_record_to_the_handler_and_deletes(sqs, queues):
    module, seen = _app([])
    handler, config = find_sqs_handler(module, QUEUE)
    poller = Poller(sqs, queues.url, handler, batch_size=config.batch_size)
    message_id = _send(sqs, queues.url, "job-a")

    assert poller.poll_once(wait_seconds=0) == 1

    [record] = seen
    assert record["messageId"] == message_id
    assert json.loads(record["body"]) == {"job_id": "job-a"}
    assert record["receipt_handle"] == record["receiptHandle"] and record["receiptHandle"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":" + QUEUE) and record["eventSourceARN"] == poller.queue_arn
    assert record["awsRegion"] == "us-east-1"
    attrs = record["attributes"]
    assert attrs["ApproximateReceiveCount"] == "1"
    assert attrs["MessageGroupId"] == "job-a" and attrs["MessageDeduplicationId"] == "job-a"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= attrs.keys()
    assert record["md5OfBody"]
    assert _count(sqs, queues.url) == 0


def test_failure_leaves_the_message_for_redelivery_then_the_dlq(sqs, queues, capsys):
    module, seen = _app(["fail", "fail"])
    handler, _ = find_sqs_handler(module)
    poller = Poller(sqs, queues.url, handler)
    assert poller.max_receive_count == 2
    _send(sqs, queues.url, "job-b")

    assert poller.poll_once(wait_seconds=0) == 1
    assert poller.poll_once(wait_seconds=0) == 1
    # The third receive finds the count at maxReceiveCount: SQS moves it to the DLQ instead.
    assert poller.poll_once(wait_seconds=0) == 0

    assert [r["attributes"]["ApproximateReceiveCount"] for r in seen] == ["1", "2"]
    assert _count(sqs, queues.url) == 0
    dead = sqs.receive_message(QueueUrl=queues.dlq_url, WaitTimeSeconds=0)["Messages"]
    assert json.loads(dead[0]["Body"]) == {"job_id": "job-b"}
    out = capsys.readouterr().out
    assert "receive #1: FAILED" in out and "RuntimeError: transient: try again" in out
    assert "receive 2 of 2: SQS moves it to the dead-letter queue" in out


def test_a_retry_that_succeeds_deletes_the_message(sqs, queues):
    module, seen = _app(["fail", "ok"])
    poller = Poller(sqs, queues.url, find_sqs_handler(module)[0])
    _send(sqs, queues.url, "job-c")
    assert poller.poll_once(wait_seconds=0) == 1
    assert _count(sqs, queues.url) == 1
    assert poller.poll_once(wait_seconds=0) == 1
    assert _count(sqs, queues.url) == 0
    assert len(seen) == 2
    assert sqs.receive_message(QueueUrl=queues.dlq_url, WaitTimeSeconds=0).get("Messages") is None


def test_empty_queue_calls_nothing(sqs, queues):
    module, seen = _app([])
    poller = Poller(sqs, queues.url, find_sqs_handler(module)[0])
    assert poller.poll_once(wait_seconds=0) == 0
    assert seen == []


def test_message_attributes_use_lambdas_shape():
    converted = message_attributes({
        "trace": {"DataType": "String", "StringValue": "abc"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    })
    assert converted["trace"] == {"stringValue": "abc", "binaryValue": None, "stringListValues": [],
                                  "binaryListValues": [], "dataType": "String"}
    assert converted["blob"]["binaryValue"] == "AAE="
    event = sqs_event([{"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "MD5OfBody": "x"}],
                      queue_arn="arn:aws:sqs:us-east-1:123456789012:q.fifo", region="us-east-1")
    assert event["Records"][0]["messageAttributes"] == {}


def test_find_sqs_handler_requires_one_and_prefers_the_bound_queue():
    app = Chalice(app_name="unit")

    @app.on_sqs_message(queue="other.fifo")
    def other(event):
        pass

    @app.on_sqs_message(queue=QUEUE)
    def process_job(event):
        pass

    module = types.SimpleNamespace(app=app, other=other, process_job=process_job)
    handler, config = find_sqs_handler(module, QUEUE)
    assert handler is process_job and config.name == "process_job"
    with pytest.raises(LookupError, match="no @app.on_sqs_message handler"):
        find_sqs_handler(types.SimpleNamespace(app=Chalice(app_name="empty")))


def test_a_handler_past_the_function_timeout_is_stopped_and_its_message_kept(sqs, queues):
    app = Chalice(app_name="unit")
    expired = []

    @app.on_sqs_message(queue=QUEUE)
    def process_job(event):
        time.sleep(30)  # a hung download; the timer interrupts it

    def on_timeout(reason):
        expired.append(reason)
        raise TimeoutError(reason)  # the real worker exits here instead (stop_like_lambda)

    poller = Poller(sqs, queues.url, process_job, timeout_seconds=0.2, on_timeout=on_timeout)
    _send(sqs, queues.url, "job-slow")
    assert poller.poll_once(wait_seconds=0) == 1
    assert len(expired) == 1 and "timed out after 0.2s, the function's timeout" in expired[0]
    assert _count(sqs, queues.url) == 1  # not deleted: SQS will redeliver it
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed
