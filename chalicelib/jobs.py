"""Job records in DynamoDB and the FIFO job queue.

Every state change is a conditional write, so two workers (or a redelivered message) can never
both own a job, and a stale worker cannot overwrite a newer attempt's outcome:

- create: put if absent; identical requests find the record and only add their notify targets.
- claim: ``queued`` -> ``running`` (or take over a ``running`` job whose lease expired), bumping
  ``attempts``; the attempt number fences every later write of that worker.
- heartbeat: the running attempt extends its lease (and records progress) every HEARTBEAT_SECONDS;
  a job whose heartbeat stopped is found by ``stale`` and sent again by the sweeper.
- finish: ``running`` (this attempt) -> ``succeeded`` / ``failed``.
- requeue: a finished job whose result is gone (or that failed) runs again as a new ``run``.
- notified markers: a target is claimed for a (run, outcome) before it is sent to: at most once.

Table schema (infra.py creates it): hash key ``job_id`` (S); TTL attribute ``expires_at_epoch``.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

from .store import iso, raise_if_transient

KEY = "job_id"
TTL_ATTRIBUTE = "expires_at_epoch"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)
_NAMES = {f"#{n}": n for n in (
    "status", "run", "attempts", "lease_until", "progress", "updated_at", "result", "error", "emails",
    "webhooks", "notified", "expires_at_epoch",
)}


@dataclass
class Job:
    job_id: str
    status: str
    run: int = 1
    spec: dict = field(default_factory=dict)
    attempts: int = 0
    lease_until: float = 0.0
    progress: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    result: dict | None = None
    error: dict | None = None
    emails: set[str] = field(default_factory=set)
    webhooks: set[str] = field(default_factory=set)
    notified: set[str] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def public(self) -> dict:
        """The job as the API shows it (without notification targets); ``result`` as stored."""
        body = {
            "job_id": self.job_id, "status": self.status, "progress": round(self.progress, 3),
            "attempts": self.attempts, "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
        }
        if self.result is not None:
            body["result"] = dict(self.result)
        if self.error is not None:
            body["error"] = dict(self.error)
        return body


def _names(expression: str) -> dict:
    return {k: v for k, v in _NAMES.items() if k in expression}


def _item_to_job(item: dict) -> Job:
    def num(name, default=0.0):
        return float(item[name]["N"]) if name in item else default

    def js(name):
        return json.loads(item[name]["S"]) if name in item else None

    return Job(
        job_id=item[KEY]["S"], status=item["status"]["S"], run=int(num("run", 1)), spec=js("spec") or {},
        attempts=int(num("attempts")), lease_until=num("lease_until"), progress=num("progress"),
        created_at=num("created_at"), updated_at=num("updated_at"), result=js("result"), error=js("error"),
        emails=set(item.get("emails", {}).get("SS", [])), webhooks=set(item.get("webhooks", {}).get("SS", [])),
        notified=set(item.get("notified", {}).get("SS", [])),
    )


def _n(value: float) -> dict:
    return {"N": repr(float(value)) if isinstance(value, float) else str(value)}


def notify_marker(run: int, outcome: str, kind: str, target: str) -> str:
    """Bookkeeping token for "target was notified of this run's outcome" (hashed: no PII in it)."""
    digest = hashlib.sha256(target.encode("utf-8")).hexdigest()[:24]
    return f"{run}:{outcome}:{kind}:{digest}"


class JobStore:
    """DynamoDB job table; takes a low-level boto3 DynamoDB client."""

    def __init__(self, dynamodb_client, table: str, *, ttl_days: int = 14, clock=time.time):
        self.db = dynamodb_client
        self.table = table
        self.ttl_days = ttl_days
        self.clock = clock

    # -- helpers -------------------------------------------------------------------------------
    def _update(self, job_id: str, expression: str, values: dict, condition: str | None = None,
                *, return_new: bool = False):
        """One UpdateItem; returns the new Job (or True), or None when the condition failed."""
        from botocore.exceptions import ClientError

        args = {
            "TableName": self.table, "Key": {KEY: {"S": job_id}}, "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
        }
        names = _names(expression + " " + (condition or ""))
        if names:
            args["ExpressionAttributeNames"] = names
        if condition:
            args["ConditionExpression"] = condition
        if return_new:
            args["ReturnValues"] = "ALL_NEW"
        try:
            r = self.db.update_item(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise_if_transient(exc)
            raise
        return _item_to_job(r["Attributes"]) if return_new else True

    # -- records -------------------------------------------------------------------------------
    def create(self, job_id: str, spec: dict) -> bool:
        """Put a new ``queued`` record; False when the job already exists (nothing is changed)."""
        from botocore.exceptions import ClientError

        now = self.clock()
        item = {
            KEY: {"S": job_id}, "status": {"S": QUEUED}, "run": _n(1), "spec": {"S": json.dumps(spec)},
            "attempts": _n(0), "lease_until": _n(0), "progress": _n(0.0),
            "created_at": _n(now), "updated_at": _n(now), TTL_ATTRIBUTE: _n(int(now + self.ttl_days * 86400)),
        }
        try:
            self.db.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(job_id)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise_if_transient(exc)
            raise
        return True

    def add_targets(self, job_id: str, emails: list[str], webhooks: list[str]) -> None:
        """Union this request's notify targets into the job's (string-set ADD: safe under concurrency)."""
        parts, values = [], {}
        if emails:
            parts.append("#emails :e")
            values[":e"] = {"SS": sorted(set(emails))}
        if webhooks:
            parts.append("#webhooks :w")
            values[":w"] = {"SS": sorted(set(webhooks))}
        if parts:
            self._update(job_id, "ADD " + ", ".join(parts), values, "attribute_exists(job_id)")

    def get(self, job_id: str) -> Job | None:
        from botocore.exceptions import ClientError

        try:
            r = self.db.get_item(TableName=self.table, Key={KEY: {"S": job_id}}, ConsistentRead=True)
        except ClientError as exc:
            raise_if_transient(exc)
            raise
        return _item_to_job(r["Item"]) if "Item" in r else None

    def requeue(self, job: Job) -> Job | None:
        """Finished -> queued as run+1 (only if nobody else did it first); the new Job or None.

        The old run's notify targets are dropped: they were told its outcome.
        """
        now = self.clock()
        return self._update(
            job.job_id,
            "SET #status = :q, #run = :next, #progress = :zero, #lease_until = :zero, #updated_at = :now, "
            "#expires_at_epoch = :ttl REMOVE #result, #error, #emails, #webhooks",
            {":q": {"S": QUEUED}, ":next": _n(job.run + 1), ":zero": _n(0), ":now": _n(now),
             ":ttl": _n(int(now + self.ttl_days * 86400)), ":old": {"S": job.status}, ":run": _n(job.run)},
            "#status = :old AND #run = :run",
            return_new=True,
        )

    def claim(self, job_id: str, lease_seconds: int) -> Job | None:
        """Take the job for one attempt: queued, or running with an expired lease. None if not ours."""
        now = self.clock()
        return self._update(
            job_id,
            "SET #status = :running, #lease_until = :lease, #updated_at = :now ADD #attempts :one",
            {":running": {"S": RUNNING}, ":queued": {"S": QUEUED}, ":lease": _n(now + lease_seconds),
             ":now": _n(now), ":one": _n(1)},
            "#status = :queued OR (#status = :running AND #lease_until < :now)",
            return_new=True,
        )

    def release(self, job: Job) -> bool:
        """Give a claimed job back to the queue (transient failure: the redelivery may claim it at once)."""
        return bool(self._update(
            job.job_id, "SET #status = :q, #lease_until = :zero, #updated_at = :now",
            {":q": {"S": QUEUED}, ":zero": _n(0), ":now": _n(self.clock()), ":running": {"S": RUNNING},
             ":attempt": _n(job.attempts)},
            "#status = :running AND #attempts = :attempt",
        ))

    def set_progress(self, job: Job, fraction: float) -> bool:
        """Record progress (0..1) if this attempt still owns the job."""
        return bool(self._update(
            job.job_id, "SET #progress = :p, #updated_at = :now",
            {":p": _n(round(min(max(fraction, 0.0), 1.0), 4)), ":now": _n(self.clock()),
             ":running": {"S": RUNNING}, ":attempt": _n(job.attempts)},
            "#status = :running AND #attempts = :attempt",
        ))

    def finish(self, job: Job, status: str, *, result: dict | None = None, error: dict | None = None) -> Job | None:
        """running (this attempt) -> succeeded/failed; None when another attempt owns the job now."""
        assert status in FINISHED
        expression = "SET #status = :s, #updated_at = :now, #lease_until = :zero"
        values = {":s": {"S": status}, ":now": _n(self.clock()), ":zero": _n(0),
                  ":running": {"S": RUNNING}, ":attempt": _n(job.attempts)}
        if result is not None:
            expression += ", #result = :r, #progress = :one"
            values[":r"] = {"S": json.dumps(result)}
            values[":one"] = _n(1.0)
        if error is not None:
            expression += ", #error = :e"
            values[":e"] = {"S": json.dumps(error)}
        return self._update(job.job_id, expression, values, "#status = :running AND #attempts = :attempt",
                            return_new=True)

    def heartbeat(self, job: Job, lease_seconds: float, progress: float | None = None) -> bool:
        """Extend this attempt's lease (and record progress); False once another attempt owns the job."""
        now = self.clock()
        expression = "SET #lease_until = :lease, #updated_at = :now"
        values = {":lease": _n(now + lease_seconds), ":now": _n(now), ":running": {"S": RUNNING},
                  ":attempt": _n(job.attempts)}
        if progress is not None:
            expression += ", #progress = :p"
            values[":p"] = _n(round(min(max(progress, 0.0), 1.0), 4))
        return bool(self._update(job.job_id, expression, values, "#status = :running AND #attempts = :attempt"))

    def stale(self) -> list[Job]:
        """Running jobs whose lease ran out: their worker stopped heartbeating (killed, crashed, frozen).

        A Scan with a filter: the table holds JOB_TTL_DAYS of jobs, and this runs once a minute.
        """
        from botocore.exceptions import ClientError

        args = {"TableName": self.table, "FilterExpression": "#status = :running AND #lease_until < :now",
                "ExpressionAttributeNames": {"#status": "status", "#lease_until": "lease_until"},
                "ExpressionAttributeValues": {":running": {"S": RUNNING}, ":now": _n(self.clock())},
                "ConsistentRead": True}
        found = []
        try:
            while True:
                page = self.db.scan(**args)
                found += [_item_to_job(item) for item in page.get("Items", [])]
                if "LastEvaluatedKey" not in page:
                    return found
                args["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except ClientError as exc:
            raise_if_transient(exc)
            raise

    def fail_stale(self, job: Job, error: dict) -> Job | None:
        """A stale attempt -> failed (the last one allowed); None if it moved on meanwhile."""
        now = self.clock()
        return self._update(
            job.job_id, "SET #status = :failed, #error = :e, #updated_at = :now, #lease_until = :zero",
            {":failed": {"S": FAILED}, ":e": {"S": json.dumps(error)}, ":now": _n(now), ":zero": _n(0),
             ":running": {"S": RUNNING}, ":attempt": _n(job.attempts)},
            "#status = :running AND #attempts = :attempt AND #lease_until < :now",
            return_new=True,
        )

    def mark_notified(self, job_id: str, marker: str) -> bool:
        """Claim one notification; True exactly once per marker, whoever asks and however often."""
        return bool(self._update(
            job_id, "ADD #notified :m", {":m": {"SS": [marker]}, ":ms": {"S": marker}},
            "attribute_exists(job_id) AND (attribute_not_exists(#notified) OR NOT contains(#notified, :ms))",
        ))


class JobQueue:
    """The FIFO job queue; the queue URL is looked up on first send."""

    def __init__(self, sqs_client, queue_name: str):
        self.sqs = sqs_client
        self.queue_name = queue_name
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def send(self, job_id: str, run: int = 1, *, after_attempt: int | None = None) -> None:
        """Enqueue a job run. Group = job id (jobs run in parallel); a repeated send is deduplicated.

        Run 1 uses the job id itself as the deduplication id; a re-run needs its own id, or SQS
        would drop it as a duplicate of the first run within the 5-minute window. A send for a job
        whose attempt ``after_attempt`` stopped heartbeating gets a group of its own too: that
        attempt's message is still in flight, and it blocks its group until the visibility timeout.
        """
        from botocore.exceptions import ClientError

        dedup = job_id if run == 1 else f"{job_id}-{run}"
        group = job_id
        if after_attempt is not None:
            dedup = group = f"{job_id}-{run}-a{after_attempt}"
        try:
            self.sqs.send_message(
                QueueUrl=self.url, MessageBody=json.dumps({"job_id": job_id, "run": run}),
                MessageGroupId=group, MessageDeduplicationId=dedup,
            )
        except ClientError as exc:
            raise_if_transient(exc)
            raise

    def dead_letter(self, dlq_name: str, body: str, reason: str) -> None:
        """Move a message no worker can use (not JSON, no job id) to the dead-letter queue, with why."""
        import hashlib

        from botocore.exceptions import ClientError

        try:
            url = self.sqs.get_queue_url(QueueName=dlq_name)["QueueUrl"]
            self.sqs.send_message(
                QueueUrl=url, MessageBody=body or "(empty)", MessageGroupId="malformed",
                MessageDeduplicationId=hashlib.sha256((body or "").encode("utf-8", "replace")).hexdigest(),
                MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:256]}},
            )
        except ClientError as exc:
            raise_if_transient(exc)
            raise
