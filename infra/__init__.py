"""The service's AWS resources, defined once and rendered two ways.

* ``ensure_resources`` creates or converges them through boto3 (moto for the local stack and the
  tests, a real account for the ``chalice deploy`` path: ``python -m audio_stitch provision``).
* ``cloudformation_template`` renders the same definitions as a template fragment that
  ``chalice package --merge-template`` merges into the generated SAM template.
* ``iam_policy`` renders the least-privilege policy for the stage from the same names.

The committed ``.chalice/resources-<stage>.json`` and ``.chalice/policy-<stage>.json`` are the
rendered output (``python scripts/deploy.py render``); a unit test fails when they drift.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from chalicelib.config import PROJECT_ROOT, Settings

# The DynamoDB attribute holding a job's expiry as epoch seconds; the table's TTL deletes the item.
JOB_TTL_ATTRIBUTE = "expires_at_epoch"
JOB_KEY_ATTRIBUTE = "job_id"

APP_NAME = "audio-stitch"
CONFIG_PATH = PROJECT_ROOT / ".chalice" / "config.json"

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

# Logical ids of the functions Chalice generates for app.py's handlers (api_handler, process_job).
API_FUNCTION_ID = "APIHandler"
WORKER_FUNCTION_ID = "ProcessJob"


class ProvisionError(RuntimeError):
    """A resource cannot be created or converged (name taken, no region, bad configuration)."""


# ---------------------------------------------------------------------------------------------
# The definitions (plain data, no boto3)


@dataclass(frozen=True)
class BucketSpec:
    logical_id: str
    name: str
    expirations: tuple[tuple[str, int], ...]  # (prefix, days)
    browser_uploads: bool = False  # carries UPLOAD_CORS_RULES


def bucket_specs(settings: Settings) -> tuple[BucketSpec, BucketSpec]:
    """Input bucket (user parts, uploads, fetched sources) and output bucket (the result cache)."""
    return (
        BucketSpec(
            "InputBucket",
            settings.bucket_input,
            ((settings.uploads_prefix, settings.uploads_ttl_days),
             (settings.sources_prefix, settings.sources_ttl_days)),
            browser_uploads=True,
        ),
        BucketSpec("OutputBucket", settings.bucket_output, ((settings.cache_prefix, settings.cache_ttl_days),)),
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


def queue_attributes(settings: Settings) -> dict[str, str]:
    """Mutable attributes of the jobs queue (SQS API shape), without the redrive policy."""
    return {
        "VisibilityTimeout": str(visibility_timeout(settings)),
        "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
        # MessageDeduplicationId is the job id (set by the sender), not a hash of the body.
        "ContentBasedDeduplication": "false",
        "SqsManagedSseEnabled": "true",
    }


def dlq_attributes() -> dict[str, str]:
    return {
        "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
        "ContentBasedDeduplication": "false",
        "SqsManagedSseEnabled": "true",
    }


def visibility_timeout(settings: Settings) -> int:
    return max(settings.worker_timeout_seconds + VISIBILITY_MARGIN_SECONDS, settings.job_lease_seconds)


def redrive_policy(settings: Settings, dlq_arn) -> dict:
    return {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}


def _check_names(settings: Settings) -> None:
    for name in (settings.queue_name, settings.dlq_name):
        if not name.endswith(".fifo"):
            raise ProvisionError(f"queue name {name!r} must end in .fifo (the jobs queue is FIFO)")
    if settings.queue_name == settings.dlq_name:
        raise ProvisionError("QUEUE_NAME and DLQ_NAME must differ")
    if settings.bucket_input == settings.bucket_output:
        # One bucket would put the cache lifecycle rule over users' parts.
        raise ProvisionError("BUCKET_INPUT and BUCKET_OUTPUT must differ")


# ---------------------------------------------------------------------------------------------
# boto3: create or converge


def _clients(clients: dict | None, endpoint_url: str | None, region: str) -> dict:
    clients = dict(clients or {})
    missing = [n for n in ("s3", "sqs", "dynamodb", "ses") if n not in clients]
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


def ensure_bucket(s3, spec: BucketSpec, region: str) -> str:
    """Create the bucket if needed, then converge its settings. Returns the bucket name."""
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


def ensure_queues(sqs, settings: Settings) -> dict:
    """The FIFO DLQ, then the FIFO jobs queue redriving to it."""
    dlq_url, dlq_arn = _ensure_queue(sqs, settings.dlq_name, dlq_attributes())
    attributes = dict(queue_attributes(settings))
    attributes["RedrivePolicy"] = json.dumps(redrive_policy(settings, dlq_arn))
    queue_url, queue_arn = _ensure_queue(sqs, settings.queue_name, attributes)
    return {"queue_url": queue_url, "queue_arn": queue_arn, "dlq_url": dlq_url, "dlq_arn": dlq_arn}


def ensure_table(dynamodb, settings: Settings) -> dict:
    """The jobs table: key job_id, on-demand, TTL on JOB_TTL_ATTRIBUTE."""
    name = settings.jobs_table
    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        table = dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": JOB_KEY_ATTRIBUTE, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": JOB_KEY_ATTRIBUTE, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]
        # UpdateTimeToLive fails while the table is still CREATING.
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    ttl = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": JOB_TTL_ATTRIBUTE},
        )
    elif ttl.get("AttributeName") != JOB_TTL_ATTRIBUTE:
        raise ProvisionError(
            f"table {name!r} has TTL on {ttl.get('AttributeName')!r}, expected {JOB_TTL_ATTRIBUTE!r}"
        )
    return {"jobs_table": name, "table_arn": table["TableArn"]}


def ensure_sender(ses, settings: Settings) -> dict:
    """Ask SES to verify the sender address unless it is already known (re-asking re-sends the mail)."""
    address = settings.sender_email
    known = ses.get_identity_verification_attributes(Identities=[address])["VerificationAttributes"]
    status = known.get(address, {}).get("VerificationStatus")
    if status is None or status == "Failed":
        ses.verify_email_identity(EmailAddress=address)
        status = ses.get_identity_verification_attributes(Identities=[address])[
            "VerificationAttributes"
        ].get(address, {}).get("VerificationStatus", "Pending")
    return {"sender_email": address, "sender_status": status}


def ensure_resources(settings: Settings, clients: dict | None = None, *, endpoint_url: str | None = None) -> dict:
    """Create or converge every resource of ``settings``' stage; safe to run any number of times.

    ``clients`` may hold boto3 clients under "s3", "sqs", "dynamodb", "ses"; missing ones are built
    for ``endpoint_url`` (a moto server) or the default AWS endpoints. Returns names, urls and arns.
    """
    _check_names(settings)
    clients = _clients(clients, endpoint_url, settings.aws_region)
    input_spec, output_spec = bucket_specs(settings)
    out = {
        "bucket_input": ensure_bucket(clients["s3"], input_spec, settings.aws_region),
        "bucket_output": ensure_bucket(clients["s3"], output_spec, settings.aws_region),
    }
    out.update(ensure_queues(clients["sqs"], settings))
    out.update(ensure_table(clients["dynamodb"], settings))
    out.update(ensure_sender(clients["ses"], settings))
    return out


# ---------------------------------------------------------------------------------------------
# CloudFormation (merged into Chalice's SAM template)


def _cfn_lifecycle(spec: BucketSpec) -> list[dict]:
    rules = []
    for rule in lifecycle_rules(spec):
        cfn = {"Id": rule["ID"], "Status": rule["Status"], "Prefix": rule["Filter"]["Prefix"]}
        if not cfn["Prefix"]:
            del cfn["Prefix"]
        if "Expiration" in rule:
            cfn["ExpirationInDays"] = rule["Expiration"]["Days"]
        if "AbortIncompleteMultipartUpload" in rule:
            cfn["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
        rules.append(cfn)
    return rules


# The S3 API and CloudFormation spell three CORS rule fields differently.
_CFN_CORS_NAMES = {"ID": "Id", "ExposeHeaders": "ExposedHeaders", "MaxAgeSeconds": "MaxAge"}


def _cfn_queue_props(name: str, attributes: dict[str, str]) -> dict:
    props = {"QueueName": name, "FifoQueue": True}
    for key, value in attributes.items():
        props[key] = value == "true" if value in ("true", "false") else int(value)
    return props


def cloudformation_template(settings: Settings, *, log_retention: bool = False, api_key: bool = False) -> dict:
    """The template fragment for ``chalice package --merge-template``: the same resources as
    ``ensure_resources``, plus the functions' ephemeral storage and webhook secret.

    ``log_retention``: the stage sets ``log_retention_in_days`` (Chalice then emits log groups).
    ``api_key``: routes require an API key; Chalice creates no key or usage plan, so without
    these every call would be refused with 403.
    """
    _check_names(settings)
    resources: dict = {}
    for spec in bucket_specs(settings):
        resources[spec.logical_id] = {
            "Type": "AWS::S3::Bucket",
            # Results and user parts outlive a stack deletion; S3 refuses to delete full buckets anyway.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketName": spec.name,
                "PublicAccessBlockConfiguration": PUBLIC_ACCESS_BLOCK,
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": rule["ApplyServerSideEncryptionByDefault"]}
                        for rule in ENCRYPTION_RULES
                    ]
                },
                "OwnershipControls": {"Rules": OWNERSHIP_RULES},
                "LifecycleConfiguration": {"Rules": _cfn_lifecycle(spec)},
            },
        }
        if spec.browser_uploads:
            resources[spec.logical_id]["Properties"]["CorsConfiguration"] = {"CorsRules": [
                {_CFN_CORS_NAMES.get(k, k): v for k, v in rule.items()} for rule in UPLOAD_CORS_RULES]}
    resources["JobsDeadLetterQueue"] = {
        "Type": "AWS::SQS::Queue",
        "Properties": _cfn_queue_props(settings.dlq_name, dlq_attributes()),
    }
    queue = _cfn_queue_props(settings.queue_name, queue_attributes(settings))
    queue["RedrivePolicy"] = redrive_policy(settings, {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]})
    resources["JobsQueue"] = {"Type": "AWS::SQS::Queue", "Properties": queue}
    resources["JobsTable"] = {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "TableName": settings.jobs_table,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": JOB_KEY_ATTRIBUTE, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": JOB_KEY_ATTRIBUTE, "AttributeType": "S"}],
            "TimeToLiveSpecification": {"AttributeName": JOB_TTL_ATTRIBUTE, "Enabled": True},
        },
    }
    resources["SenderIdentity"] = {
        "Type": "AWS::SES::EmailIdentity",
        # An identity verified earlier (by hand or by `provision`) would make the stack fail.
        "Condition": "CreateSenderIdentityCondition",
        "Properties": {"EmailIdentity": settings.sender_email},
    }
    secret = {"WEBHOOK_SECRET": {"Ref": "WebhookSecret"}}
    resources[API_FUNCTION_ID] = {
        "Properties": {
            "EphemeralStorage": {"Size": API_EPHEMERAL_MB},
            "Environment": {"Variables": secret},
        }
    }
    resources[WORKER_FUNCTION_ID] = {
        # Chalice builds the event source's queue ARN from the name, which CloudFormation cannot
        # see as a dependency; without this the mapping may be created before the queue exists.
        "DependsOn": ["JobsQueue"],
        "Properties": {
            "EphemeralStorage": {"Size": WORKER_EPHEMERAL_MB},
            "Environment": {"Variables": secret},
        },
    }
    if api_key:
        resources["RestAPI"] = {
            "Properties": {
                "Auth": {
                    "UsagePlan": {
                        "CreateUsagePlan": "PER_API",
                        "UsagePlanName": f"{APP_NAME}-{settings.stage}",
                        "Throttle": {"RateLimit": API_RATE_LIMIT, "BurstLimit": API_BURST_LIMIT},
                    }
                }
            }
        }
    if log_retention:
        # Chalice 1.34 names the REST function's log group after ${ApiHandler}, a resource that
        # does not exist (the function is APIHandler); the stack would fail on it.
        resources["ApiHandlerLogGroup"] = {
            "Properties": {"LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{API_FUNCTION_ID}}}"}}
        }
    return {
        "Parameters": {
            "WebhookSecret": {
                "Type": "String",
                "NoEcho": True,
                "Default": "",
                "Description": "HMAC key for webhook signatures (WEBHOOK_SECRET); never committed.",
            },
            "CreateSenderIdentity": {
                "Type": "String",
                "AllowedValues": ["true", "false"],
                "Default": "true",
                "Description": "false when SENDER_EMAIL is already an SES identity in this account/region.",
            },
        },
        "Conditions": {
            "CreateSenderIdentityCondition": {"Fn::Equals": [{"Ref": "CreateSenderIdentity"}, "true"]}
        },
        "Resources": resources,
        "Outputs": {
            "JobsQueueUrl": {"Value": {"Ref": "JobsQueue"}},
            "JobsDeadLetterQueueUrl": {"Value": {"Ref": "JobsDeadLetterQueue"}},
        },
    }


# ---------------------------------------------------------------------------------------------
# IAM


def iam_policy(settings: Settings) -> dict:
    """Least-privilege policy for both functions of the stage (Chalice ``autogen_policy: false``).

    Region and account are wildcards because the file is committed before the account is known;
    the names are stage-specific and SQS/DynamoDB resources of other accounts are unreachable
    without their own resource policies.
    """
    _check_names(settings)
    s3_in = f"arn:aws:s3:::{settings.bucket_input}"
    s3_out = f"arn:aws:s3:::{settings.bucket_output}"
    queue = f"arn:aws:sqs:*:*:{settings.queue_name}"
    dlq = f"arn:aws:sqs:*:*:{settings.dlq_name}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                # Chalice names the REST function <app>-<stage> and the others <app>-<stage>-<handler>.
                "Resource": [
                    f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP_NAME}-{settings.stage}:*",
                    f"arn:aws:logs:*:*:log-group:/aws/lambda/{APP_NAME}-{settings.stage}-*",
                ],
            },
            {
                # Without ListBucket a HEAD on a missing key answers 403 instead of 404, so a missing
                # part or a cache miss would look like an access error.
                "Sid": "ListBucketsForNotFound",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [s3_in, s3_out],
            },
            {
                # GetObjectVersion: parts are fetched pinned to the VersionId the cache key was built from.
                "Sid": "ReadParts",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [f"{s3_in}/*"],
            },
            {
                # Fetched URL sources are cached here; uploads/ is granted so presigned POST uploads work.
                "Sid": "WriteSourcesAndUploads",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [f"{s3_in}/{settings.sources_prefix}*", f"{s3_in}/{settings.uploads_prefix}*"],
            },
            {
                # Results and their JSON sidecars; presigned GETs are signed with this grant too.
                "Sid": "ResultCache",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [f"{s3_out}/{settings.cache_prefix}*"],
            },
            {
                # Send + GetQueueUrl for the API (enqueue); Receive/Delete/GetQueueAttributes are what
                # Lambda's event source mapping needs for the worker. SQS itself redrives to the DLQ;
                # the worker sends there only a message that is not a job at all.
                "Sid": "JobsQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:SendMessage",
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                ],
                "Resource": [queue, dlq],
            },
            {
                "Sid": "JobsTable",
                "Effect": "Allow",
                # Scan: the sweeper's once-a-minute look for running jobs whose heartbeat stopped.
                "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan"],
                "Resource": [f"arn:aws:dynamodb:*:*:table/{settings.jobs_table}"],
            },
            {
                # identity/* rather than the sender's ARN: in the SES sandbox the recipient's identity
                # is authorised too. The condition still pins the From address.
                "Sid": "SendMailAsSender",
                "Effect": "Allow",
                "Action": ["ses:SendEmail"],
                "Resource": ["arn:aws:ses:*:*:identity/*"],
                "Condition": {"StringEquals": {"ses:FromAddress": settings.sender_email}},
            },
        ],
    }


# ---------------------------------------------------------------------------------------------
# Stage configuration and the `provision` command


def stage_environment(stage: str, config_path: Path | str = CONFIG_PATH) -> dict[str, str]:
    """The environment variables Chalice gives ``stage``'s functions (global, then stage values)."""
    config = json.loads(Path(config_path).read_text())
    stages = config.get("stages", {})
    if stage not in stages:
        raise ProvisionError(f"stage {stage!r} is not in {config_path} (have: {', '.join(sorted(stages))})")
    env = dict(config.get("environment_variables", {}))
    env.update(stages[stage].get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


def stage_settings(stage: str, config_path: Path | str = CONFIG_PATH, region: str | None = None) -> Settings:
    """Settings as the deployed functions of ``stage`` will see them."""
    env = stage_environment(stage, config_path)
    if region:
        env["AWS_REGION"] = region
    return Settings.from_env(env)


def resolve_region(explicit: str | None = None) -> str:
    """``explicit``, else the environment, else the AWS config (profile); ProvisionError if none."""
    region = explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        try:
            import boto3

            region = boto3.session.Session().region_name
        except Exception:  # noqa: BLE001 - any failure here means "no region"
            region = None
    if not region:
        raise ProvisionError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or `aws configure set region ...`"
        )
    return region


def main(argv: list[str] | None = None) -> int:
    """``python -m audio_stitch provision --stage S [--endpoint-url URL] [--region R]``."""
    parser = argparse.ArgumentParser(prog="python -m audio_stitch provision", description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(main())
