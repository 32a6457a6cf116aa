"""The local stack's stand-in for Lambda's SQS event source mapping.

Chalice's local server runs no SQS handlers, so this process long-polls the FIFO queue and hands
each batch to the app's real ``@app.on_sqs_message`` handler with an event shaped like the one
Lambda sends. A message is deleted only when the handler returns; when it raises, the message is
left alone so it becomes visible again after the queue's visibility timeout and, after
maxReceiveCount receives, SQS's redrive policy moves it to the dead-letter queue, as on AWS.
A handler still running after the function's timeout (WORKER_TIMEOUT_SECONDS) ends the process,
as Lambda ends the sandbox; the `run` supervisor starts a fresh worker.

Run by ``devstack.stack`` as ``python -m devstack.worker --queue-url URL``.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chalicelib.config import PROJECT_ROOT
from devstack.procs import die_with_parent

# Lambda's long-poll maximum; a stop signal kills the process, so a long wait costs nothing.
DEFAULT_WAIT_SECONDS = 20


def log(line: str) -> None:
    print(f"worker | {line}", flush=True)


def message_attributes(attrs: dict) -> dict:
    """boto3's MessageAttributes -> the camelCase shape of a Lambda SQS record (binary as base64)."""
    out = {}
    for name, value in (attrs or {}).items():
        binary = value.get("BinaryValue")
        out[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": [base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])],
            "dataType": value.get("DataType", "String"),
        }
    return out


def sqs_record(message: dict, *, queue_arn: str, region: str) -> dict:
    """One ReceiveMessage result -> one ``Records[]`` entry as Lambda delivers it."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        # ApproximateReceiveCount, SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp and,
        # for FIFO queues, MessageGroupId, MessageDeduplicationId, SequenceNumber.
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def sqs_event(messages: list[dict], *, queue_arn: str, region: str) -> dict:
    return {"Records": [sqs_record(m, queue_arn=queue_arn, region=region) for m in messages]}


def find_sqs_handler(app_module: Any, queue_name: str | None = None) -> tuple[Callable, Any]:
    """The app's ``on_sqs_message`` handler (prefer the one bound to ``queue_name``) and its config."""
    from chalice.app import SQSEventConfig

    configs = [c for c in app_module.app.event_sources if isinstance(c, SQSEventConfig)]
    if not configs:
        raise LookupError("app.py registers no @app.on_sqs_message handler")
    if len(configs) > 1 and queue_name:
        bound = [c for c in configs if c.queue == queue_name or (c.queue_arn or "").endswith(":" + queue_name)]
        configs = bound or configs
    config = configs[0]
    handler = getattr(app_module, config.handler_string.split(".", 1)[1])
    return handler, config


class Poller:
    """Receive from one queue, invoke ``handler(event, context)``, delete on success."""

    def __init__(self, sqs, queue_url: str, handler: Callable, *, batch_size: int = 1,
                 function_name: str = "process_job", timeout_seconds: float = 900, region: str = "us-east-1",
                 on_timeout: Callable[[str], None] | None = None):
        self.sqs = sqs
        # Called (from SIGALRM, main thread only) when a handler outlives the function's timeout.
        self.on_timeout = on_timeout
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = max(1, min(10, batch_size))
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds
        self.region = region
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        self.queue_arn = attrs["QueueArn"]
        self.visibility_timeout = int(attrs.get("VisibilityTimeout", 30))
        redrive = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else {}
        self.max_receive_count = int(redrive["maxReceiveCount"]) if redrive else None

    @contextlib.contextmanager
    def _deadline(self, label: str):
        if self.on_timeout is None:
            yield
            return

        def expired(signum, frame):
            self.on_timeout(f"{label}: timed out after {self.timeout_seconds}s, the function's timeout")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def poll_once(self, wait_seconds: int = DEFAULT_WAIT_SECONDS) -> int:
        """One long poll and at most one handler call; returns how many messages were received."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            self.invoke(messages)
        return len(messages)

    def invoke(self, messages: list[dict]) -> bool:
        """Call the handler with one event; delete the batch only if it returned."""
        from chalice.local import LambdaContext

        event = sqs_event(messages, queue_arn=self.queue_arn, region=self.region)
        context = LambdaContext(self.function_name, memory_size=1024,
                                max_runtime_ms=self.timeout_seconds * 1000)
        first = messages[0]
        attrs = first.get("Attributes", {})
        receives = int(attrs.get("ApproximateReceiveCount", "1"))
        label = f"message {first['MessageId'][:8]} group={attrs.get('MessageGroupId', '-')[:16]} receive #{receives}"
        started = time.monotonic()
        try:
            with self._deadline(label):
                self.handler(event, context)
        except Exception as exc:  # any failure means "retry": that is Lambda's contract
            elapsed = time.monotonic() - started
            then = f"SQS redelivers it after the visibility timeout ({self.visibility_timeout}s)"
            if self.max_receive_count and receives >= self.max_receive_count:
                then = f"receive {receives} of {self.max_receive_count}: SQS moves it to the dead-letter queue"
            log(f"{label}: FAILED in {elapsed:.2f}s: {type(exc).__name__}: {exc}; not deleted, {then}")
            traceback.print_exc(file=sys.stderr)
            return False
        self.sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        log(f"{label}: ok in {time.monotonic() - started:.2f}s, deleted")
        return True


# Distinct from a crash, so the supervisor's log can say what happened.
TIMEOUT_EXIT_STATUS = 124


def stop_like_lambda(reason: str) -> None:
    """What Lambda does to an invocation past its timeout: the whole sandbox stops, ffmpeg and all.

    The message is not deleted, so SQS redelivers it after the visibility timeout; the supervisor
    starts a fresh worker in our place.
    """
    log(f"{reason}: stopping this worker as Lambda would; the message stays in the queue")
    sys.stdout.flush()
    if os.getpgid(0) == os.getpid():  # our own group (the supervisor starts us so): take ffmpeg along
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGTERM)
    os._exit(TIMEOUT_EXIT_STATUS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--project-dir", default=str(PROJECT_ROOT))
    parser.add_argument("--ready-file", help="created once the app is imported and the queue is reachable")
    # A worker killed mid-poll leaves its ReceiveMessage running in moto (in SQS too): a message
    # arriving then is in flight until the visibility timeout. Tests shorten the poll to narrow that.
    parser.add_argument("--wait-seconds", type=int,
                        default=int(os.environ.get("LOCAL_WORKER_WAIT_SECONDS") or DEFAULT_WAIT_SECONDS))
    args = parser.parse_args(argv)
    die_with_parent()

    import boto3
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    from chalicelib.config import get_settings

    if args.project_dir not in sys.path:
        sys.path.insert(0, args.project_dir)
    settings = get_settings()
    queue_name = args.queue_url.rstrip("/").rsplit("/", 1)[-1]
    try:
        app_module = importlib.import_module("app")
        handler, config = find_sqs_handler(app_module, queue_name)
    except Exception as exc:
        log(f"cannot load the SQS handler from app.py: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return 1
    sqs = boto3.client("sqs", region_name=settings.aws_region)
    poller = Poller(sqs, args.queue_url, handler, batch_size=config.batch_size,
                    # The name `chalice deploy` gives the function, e.g. audio-stitch-dev-process_job.
                    function_name=f"{app_module.app.app_name}-{settings.stage}-{config.name}",
                    timeout_seconds=settings.worker_timeout_seconds,
                    region=settings.aws_region, on_timeout=stop_like_lambda)
    if config.queue and config.queue != queue_name:
        log(f"note: app.py binds {config.name} to queue {config.queue!r}; polling {queue_name!r}")
    log(f"polling {queue_name} for {config.handler_string} (batch {poller.batch_size}, "
        f"visibility {poller.visibility_timeout}s, maxReceiveCount {poller.max_receive_count})")
    if args.ready_file:
        Path(args.ready_file).write_text(str(os.getpid()))
    try:
        while True:
            try:
                poller.poll_once(args.wait_seconds)
            except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError) as exc:
                # moto busy or briefly unreachable: Lambda's poller would retry too.
                log(f"queue unreachable ({exc}); retrying")
                time.sleep(1)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
