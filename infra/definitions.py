"""The stage's AWS resources as typed, plain data: no boto3, no template syntax.

``provision``, ``cloudformation`` and ``iam`` each render these for their target, so a name, a
lifecycle rule or a queue attribute is written once. The table's key and TTL attribute are the
ones ``chalicelib.jobs`` reads and writes.
"""
from __future__ import annotations

from dataclasses import dataclass

from chalicelib import jobs
from chalicelib.config import Settings

APP_NAME = "audio-stitch"

# Amazon Linux 2023 (glibc 2.34): deno from PyPI is built for glibc >= 2.27, which python3.11's
# Amazon Linux 2 (glibc 2.26) lacks. 3.12 rather than 3.13: closest to the 3.11 the suite runs on.
LAMBDA_RUNTIME = "python3.12"
RUNTIME_GLIBC = (2, 34)
OLDER_RUNTIME_COST = (
    "python3.11 and older run on Amazon Linux 2 (glibc 2.26), where the deno layer cannot start: "
    "yt-dlp would then extract YouTube without a JavaScript runtime and some formats go missing."
)

# Lambda refuses an SQS event source whose visibility timeout is below the function timeout; the
# margin covers start-up and the final DeleteMessage so a slow success is not delivered twice.
VISIBILITY_MARGIN_SECONDS = 60
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
# The DLQ keeps failures as long as SQS allows, so there is time to inspect and redrive them.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
ABORT_MULTIPART_DAYS = 1
# Parts up to MAX_SOURCE_BYTES each plus the output live in /tmp; ephemeral storage is cheap.
WORKER_EPHEMERAL_MB = 10240
API_EPHEMERAL_MB = 512

# Per-stage throttle of the API key's usage plan (requests per second, burst).
API_RATE_LIMIT = 20
API_BURST_LIMIT = 40

# Chalice's handler names in app.py, and the logical ids it gives their functions in the template.
API_FUNCTION = "api_handler"
WORKER_FUNCTION = "process_job"
SWEEPER_FUNCTION = "sweep_jobs"  # @app.schedule: re-sends jobs whose worker stopped heartbeating
# Every function Chalice deploys, each with its own role (policy-<stage>-<handler>.json).
FUNCTIONS = (API_FUNCTION, WORKER_FUNCTION, SWEEPER_FUNCTION)
API_FUNCTION_ID = "APIHandler"
WORKER_FUNCTION_ID = "ProcessJob"
DENO_LAYER_ID = "DenoLayer"


class ProvisionError(RuntimeError):
    """A resource cannot be created or converged (name taken, no region, bad configuration)."""


def function_name(stage: str, handler: str) -> str:
    """Chalice names the REST function <app>-<stage> and every other one <app>-<stage>-<handler>."""
    return f"{APP_NAME}-{stage}" if handler == API_FUNCTION else f"{APP_NAME}-{stage}-{handler}"


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    name: str
    expirations: tuple[tuple[str, int], ...]  # (prefix, days)
    # A bucket policy denying plain-HTTP requests: presigned links are https anyway.
    tls_only: bool = True
    browser_uploads: bool = False  # carries UPLOAD_CORS_RULES


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    attributes: tuple[tuple[str, str], ...]  # SQS API shape, without the redrive policy
    dead_letter: QueueSpec | None = None
    max_receive_count: int = 0

    @property
    def attribute_map(self) -> dict[str, str]:
        return dict(self.attributes)


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key: str
    ttl_attribute: str
    point_in_time_recovery: bool = True


@dataclass(frozen=True)
class AlarmSpec:
    logical_id: str
    name: str
    description: str
    namespace: str
    metric: str
    dimension: tuple[str, str]  # (name, value); the value is a queue or function name
    statistic: str = "Maximum"
    period: int = 300
    threshold: float = 0
    # In the template the dimension is this resource's Ref: CloudFormation names the functions.
    dimension_ref: str | None = None


@dataclass(frozen=True)
class StageResources:
    input_bucket: BucketSpec
    output_bucket: BucketSpec
    dead_letter_queue: QueueSpec
    jobs_queue: QueueSpec
    table: TableSpec
    alarms: tuple[AlarmSpec, ...]
    sender_email: str

    @property
    def buckets(self) -> tuple[BucketSpec, BucketSpec]:
        return self.input_bucket, self.output_bucket


def visibility_timeout(settings: Settings) -> int:
    return max(settings.worker_timeout_seconds + VISIBILITY_MARGIN_SECONDS, settings.job_lease_seconds)


def check_names(settings: Settings) -> None:
    for name in (settings.queue_name, settings.dlq_name):
        if not name.endswith(".fifo"):
            raise ProvisionError(f"queue name {name!r} must end in .fifo (the jobs queue is FIFO)")
    if settings.queue_name == settings.dlq_name:
        raise ProvisionError("QUEUE_NAME and DLQ_NAME must differ")
    if settings.bucket_input == settings.bucket_output:
        # One bucket would put the cache lifecycle rule over users' parts.
        raise ProvisionError("BUCKET_INPUT and BUCKET_OUTPUT must differ")


def stage_resources(settings: Settings) -> StageResources:
    """Everything the stage needs besides what Chalice creates (functions, roles, the REST API)."""
    check_names(settings)
    dlq = QueueSpec("JobsDeadLetterQueue", settings.dlq_name, (
        ("MessageRetentionPeriod", str(DLQ_RETENTION_SECONDS)),
        ("ContentBasedDeduplication", "false"),
        ("SqsManagedSseEnabled", "true"),
    ))
    queue = QueueSpec("JobsQueue", settings.queue_name, (
        ("VisibilityTimeout", str(visibility_timeout(settings))),
        ("MessageRetentionPeriod", str(QUEUE_RETENTION_SECONDS)),
        # MessageDeduplicationId is the job id (set by the sender), not a hash of the body.
        ("ContentBasedDeduplication", "false"),
        ("SqsManagedSseEnabled", "true"),
    ), dead_letter=dlq, max_receive_count=settings.max_receive_count)
    worker = function_name(settings.stage, WORKER_FUNCTION)
    alarms = (
        # A message in the DLQ is a job that failed every attempt: someone should look at it.
        AlarmSpec("DeadLetterQueueAlarm", f"{APP_NAME}-{settings.stage}-dlq-not-empty",
                  "Jobs dead-lettered after every retry (inspect, then redrive or purge the DLQ)",
                  "AWS/SQS", "ApproximateNumberOfMessagesVisible", ("QueueName", settings.dlq_name)),
        # Errors are raised failures (transient ones SQS retries); permanent input errors do not count.
        AlarmSpec("WorkerErrorsAlarm", f"{APP_NAME}-{settings.stage}-worker-errors",
                  "The worker raised (AWS or ffmpeg trouble, timeouts); see its log group",
                  "AWS/Lambda", "Errors", ("FunctionName", worker), statistic="Sum",
                  dimension_ref=WORKER_FUNCTION_ID),
    )
    return StageResources(
        input_bucket=BucketSpec(
            "InputBucket", settings.bucket_input,
            ((settings.uploads_prefix, settings.uploads_ttl_days), (settings.sources_prefix, settings.sources_ttl_days)),
            browser_uploads=True,
        ),
        output_bucket=BucketSpec("OutputBucket", settings.bucket_output,
                                 ((settings.cache_prefix, settings.cache_ttl_days),)),
        dead_letter_queue=dlq,
        jobs_queue=queue,
        table=TableSpec("JobsTable", settings.jobs_table, jobs.KEY, jobs.TTL_ATTRIBUTE),
        alarms=alarms,
        sender_email=settings.sender_email,
    )


def lifecycle_rules(spec: BucketSpec) -> list[dict]:
    """S3 API shape (PutBucketLifecycleConfiguration) of the bucket's lifecycle rules."""
    rules = [
        {
            "ID": f"expire-{prefix.strip('/').replace('/', '-') or 'all'}",
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": days},
        }
        for prefix, days in spec.expirations
    ]
    rules.append(
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        }
    )
    return rules


def bucket_policy(spec: BucketSpec) -> dict | None:
    """The bucket's resource policy: deny every request that does not arrive over TLS."""
    if not spec.tls_only:
        return None
    arn = f"arn:aws:s3:::{spec.name}"
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    }


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
OWNERSHIP_RULES = [{"ObjectOwnership": "BucketOwnerEnforced"}]
ENCRYPTION_RULES = [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
# Lets the web page (GET /, on the API's origin, unknown until deploy) send a presigned upload
# straight to the input bucket. Any origin: the signature in the link is the authorisation, and
# the bucket stays private; CORS only decides whether a browser may send it and read the answer.
UPLOAD_CORS_RULES = [{
    "ID": "browser-presigned-uploads",
    "AllowedMethods": ["PUT", "POST"],
    "AllowedOrigins": ["*"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3000,
}]


def alarm_properties(spec: AlarmSpec, dimension_value) -> dict:
    """The alarm as PutMetricAlarm and CloudFormation both spell it; ``dimension_value`` is the
    function name (provision) or a reference to it (the template)."""
    return {
        "AlarmName": spec.name,
        "AlarmDescription": spec.description,
        "Namespace": spec.namespace,
        "MetricName": spec.metric,
        "Dimensions": [{"Name": spec.dimension[0], "Value": dimension_value}],
        "Statistic": spec.statistic,
        "Period": spec.period,
        "EvaluationPeriods": 1,
        "Threshold": spec.threshold,
        "ComparisonOperator": "GreaterThanThreshold",
        # No data means an idle queue or an idle worker, not a problem.
        "TreatMissingData": "notBreaching",
    }
