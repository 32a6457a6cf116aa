"""Renderer 3 of 3: one least-privilege policy per function (Chalice ``autogen_policy: false``).

Chalice gives each function with its own ``iam_policy_file`` its own role, so the REST function
cannot receive or delete queue messages and the worker cannot enqueue. Region and account are
wildcards because the files are committed before the account is known; the names are
stage-specific, and SQS/DynamoDB resources of other accounts are unreachable without their own
resource policies.
"""
from __future__ import annotations

from chalicelib.config import Settings

from .definitions import FUNCTIONS, SWEEPER_FUNCTION, WORKER_FUNCTION, check_names, function_name


def _allow(sid: str, actions: list[str], resources: list[str]) -> dict:
    """One Allow statement (keys in the order the committed policy files have them)."""
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def _logs(settings: Settings, handler: str) -> dict:
    return _allow("Logs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                  [f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(settings.stage, handler)}:*"])


def _mail(settings: Settings) -> dict:
    # identity/* rather than the sender's ARN: in the SES sandbox the recipient's identity is
    # authorised too. The condition still pins the From address.
    return {**_allow("SendMailAsSender", ["ses:SendEmail"], ["arn:aws:ses:*:*:identity/*"]),
            "Condition": {"StringEquals": {"ses:FromAddress": settings.sender_email}}}


def _sweeper_statements(settings: Settings) -> list[dict]:
    """The every-minute sweeper: find stale jobs (Scan), re-send or fail them, tell their targets."""
    return [
        _logs(settings, SWEEPER_FUNCTION),
        _allow("JobsQueue", ["sqs:GetQueueUrl", "sqs:SendMessage"], [f"arn:aws:sqs:*:*:{settings.queue_name}"]),
        _allow("JobsTable", ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan"],
               [f"arn:aws:dynamodb:*:*:table/{settings.jobs_table}"]),
        _mail(settings),
    ]


def _statements(settings: Settings, handler: str) -> list[dict]:
    if handler == SWEEPER_FUNCTION:
        return _sweeper_statements(settings)
    s3_in = f"arn:aws:s3:::{settings.bucket_input}"
    s3_out = f"arn:aws:s3:::{settings.bucket_output}"
    queue = f"arn:aws:sqs:*:*:{settings.queue_name}"
    worker = handler == WORKER_FUNCTION
    statements = [
        _logs(settings, handler),
        # Without ListBucket a HEAD on a missing key answers 403 instead of 404, so a missing
        # part or a cache miss would look like an access error.
        _allow("ListBucketsForNotFound", ["s3:ListBucket"], [s3_in, s3_out]),
        # GetObjectVersion: parts are fetched pinned to the VersionId the cache key was built from.
        _allow("ReadParts", ["s3:GetObject", "s3:GetObjectVersion"], [f"{s3_in}/*"]),
        # The worker caches fetched URL sources; the REST function signs the upload links.
        _allow("WriteSources" if worker else "WriteUploads", ["s3:PutObject", "s3:AbortMultipartUpload"],
               [f"{s3_in}/{settings.sources_prefix if worker else settings.uploads_prefix}*"]),
        # Results and their JSON sidecars; presigned GETs are signed with this grant too.
        _allow("ResultCache", ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
               [f"{s3_out}/{settings.cache_prefix}*"]),
        # The REST function enqueues; the worker's event source mapping receives and deletes
        # with the worker's role. SQS itself redrives failed jobs to the DLQ; the worker sends
        # there only a message that is not a job at all.
        _allow("JobsQueue",
               ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
               if worker else ["sqs:GetQueueUrl", "sqs:SendMessage"], [queue]),
        *([_allow("PoisonMessagesToDeadLetterQueue", ["sqs:GetQueueUrl", "sqs:SendMessage"],
                  [f"arn:aws:sqs:*:*:{settings.dlq_name}"])] if worker else []),
        _allow("JobsTable", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
               [f"arn:aws:dynamodb:*:*:table/{settings.jobs_table}"]),
    ]
    if worker:
        statements.append(_mail(settings))
    return statements


def iam_policies(settings: Settings) -> dict[str, dict]:
    """{Chalice handler name: its role's policy document}."""
    check_names(settings)
    return {handler: {"Version": "2012-10-17", "Statement": _statements(settings, handler)}
            for handler in FUNCTIONS}


def policy_file(stage: str, handler: str) -> str:
    """The name, under .chalice/, of the committed policy of ``handler`` in ``stage``."""
    return f"policy-{stage}-{handler}.json"
