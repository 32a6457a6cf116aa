"""Renderer 1 of 3: create or converge the definitions through boto3.

Used by the local stack and the tests (moto), and by `make deploy` against a real account
(``python -m audio_stitch provision --stage S``). Every call is safe to repeat.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from chalicelib.config import Settings

from .definitions import (
    ENCRYPTION_RULES,
    OWNERSHIP_RULES,
    PUBLIC_ACCESS_BLOCK,
    UPLOAD_CORS_RULES,
    AlarmSpec,
    BucketSpec,
    ProvisionError,
    QueueSpec,
    TableSpec,
    alarm_properties,
    bucket_policy,
    lifecycle_rules,
    stage_resources,
)
from .stages import CONFIG_PATH, resolve_region, stage_settings

CLIENTS = ("s3", "sqs", "dynamodb", "ses", "cloudwatch")


def _clients(clients: dict | None, endpoint_url: str | None, region: str) -> dict:
    clients = dict(clients or {})
    missing = [n for n in CLIENTS if n not in clients]
    if missing:
        import boto3

        kwargs = {"region_name": region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        for name in missing:
            clients[name] = boto3.client(name, **kwargs)
    return clients


def _error_code(exc) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def ensure_bucket(s3, spec: BucketSpec, region: str, *, policy: bool = True) -> str:
    """Create the bucket if needed, then converge its settings. Returns the bucket name.

    ``policy``: put the TLS-only bucket policy. moto ignores policy conditions, so there the Deny
    would refuse every request: only real AWS gets it."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=spec.name)
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise ProvisionError(
                f"bucket {spec.name!r} exists and belongs to another account (bucket names are "
                "global): choose another BUCKET_INPUT/BUCKET_OUTPUT for this stage"
            ) from exc
        kwargs = {"Bucket": spec.name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as create_exc:
            if _error_code(create_exc) != "BucketAlreadyOwnedByYou":
                raise ProvisionError(f"cannot create bucket {spec.name!r}: {create_exc}") from create_exc
    # ACLs off: objects belong to the bucket owner whoever writes them (presigned PUTs included).
    s3.put_bucket_ownership_controls(Bucket=spec.name, OwnershipControls={"Rules": OWNERSHIP_RULES})
    s3.put_public_access_block(Bucket=spec.name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    s3.put_bucket_encryption(
        Bucket=spec.name, ServerSideEncryptionConfiguration={"Rules": ENCRYPTION_RULES}
    )
    # Replaces the whole configuration, so re-running converges instead of piling up rules.
    s3.put_bucket_lifecycle_configuration(
        Bucket=spec.name, LifecycleConfiguration={"Rules": lifecycle_rules(spec)}
    )
    if spec.browser_uploads:
        s3.put_bucket_cors(Bucket=spec.name, CORSConfiguration={"CORSRules": UPLOAD_CORS_RULES})
    document = bucket_policy(spec) if policy else None
    if document:
        s3.put_bucket_policy(Bucket=spec.name, Policy=json.dumps(document))
    return spec.name


def _ensure_queue(sqs, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    from botocore.exceptions import ClientError

    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in _error_code(exc):
            raise
        url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true", **attributes})["QueueUrl"]
    else:
        # CreateQueue refuses different attributes for an existing name; update them instead.
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def redrive_policy(spec: QueueSpec, dlq_arn) -> dict:
    return {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.max_receive_count}


def ensure_queues(sqs, queue: QueueSpec) -> dict:
    """The FIFO DLQ, then the FIFO jobs queue redriving to it."""
    dlq_url, dlq_arn = _ensure_queue(sqs, queue.dead_letter.name, queue.dead_letter.attribute_map)
    attributes = queue.attribute_map
    attributes["RedrivePolicy"] = json.dumps(redrive_policy(queue, dlq_arn))
    queue_url, queue_arn = _ensure_queue(sqs, queue.name, attributes)
    return {"queue_url": queue_url, "queue_arn": queue_arn, "dlq_url": dlq_url, "dlq_arn": dlq_arn}


def ensure_table(dynamodb, spec: TableSpec | Settings) -> dict:
    """The jobs table: on-demand, TTL on the attribute jobs.py writes, point-in-time recovery."""
    if isinstance(spec, Settings):
        spec = stage_resources(spec).table
    name = spec.name
    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        table = dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": spec.key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": spec.key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]
        # UpdateTimeToLive fails while the table is still CREATING.
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    ttl = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
        )
    elif ttl.get("AttributeName") != spec.ttl_attribute:
        raise ProvisionError(
            f"table {name!r} has TTL on {ttl.get('AttributeName')!r}, expected {spec.ttl_attribute!r}"
        )
    if spec.point_in_time_recovery:
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    return {"jobs_table": name, "table_arn": table["TableArn"]}


def ensure_sender(ses, address: str) -> dict:
    """Ask SES to verify the sender address unless it is already known (re-asking re-sends the mail)."""
    known = ses.get_identity_verification_attributes(Identities=[address])["VerificationAttributes"]
    status = known.get(address, {}).get("VerificationStatus")
    if status is None or status == "Failed":
        ses.verify_email_identity(EmailAddress=address)
        status = ses.get_identity_verification_attributes(Identities=[address])[
            "VerificationAttributes"
        ].get(address, {}).get("VerificationStatus", "Pending")
    return {"sender_email": address, "sender_status": status}


def alarm_request(spec: AlarmSpec) -> dict:
    """PutMetricAlarm arguments (replacing an alarm of that name converges it)."""
    return alarm_properties(spec, spec.dimension[1])


def ensure_alarms(cloudwatch, alarms: tuple[AlarmSpec, ...]) -> dict:
    for spec in alarms:
        cloudwatch.put_metric_alarm(**alarm_request(spec))
    return {"alarms": [a.name for a in alarms]}


def ensure_resources(settings: Settings, clients: dict | None = None, *, endpoint_url: str | None = None,
                     bucket_policies: bool | None = None) -> dict:
    """Create or converge every resource of ``settings``' stage; safe to run any number of times.

    ``clients`` may hold boto3 clients under the names in ``CLIENTS``; missing ones are built for
    ``endpoint_url`` (a moto server) or the default AWS endpoints. ``bucket_policies`` defaults to
    "talking to real AWS" (no clients given, no endpoint). Returns names, urls and arns.
    """
    res = stage_resources(settings)
    if bucket_policies is None:
        bucket_policies = clients is None and endpoint_url is None
    clients = _clients(clients, endpoint_url, settings.aws_region)
    out = {
        name: ensure_bucket(clients["s3"], spec, settings.aws_region, policy=bucket_policies)
        for name, spec in (("bucket_input", res.input_bucket), ("bucket_output", res.output_bucket))
    }
    out.update(ensure_queues(clients["sqs"], res.jobs_queue))
    out.update(ensure_table(clients["dynamodb"], res.table))
    out.update(ensure_sender(clients["ses"], res.sender_email))
    out.update(ensure_alarms(clients["cloudwatch"], res.alarms))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m audio_stitch provision --stage S [--endpoint-url URL] [--region R]``."""
    parser = argparse.ArgumentParser(prog="python -m audio_stitch provision",
                                     description="Create or converge the stage's buckets, queues, table and alarms.")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--region")
    parser.add_argument("--config", default=str(CONFIG_PATH))
    args = parser.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        settings = stage_settings(args.stage, args.config, resolve_region(args.region))
        out = ensure_resources(settings, endpoint_url=args.endpoint_url)
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 1
    except NoCredentialsError:
        print("provision: no AWS credentials: `aws configure`, AWS_PROFILE, or AWS_ACCESS_KEY_ID/"
              "AWS_SECRET_ACCESS_KEY", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"provision: AWS refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
