"""Renderer 2 of 3: the definitions as a template fragment for ``chalice package --merge-template``.

Chalice's SAM template has the functions, their roles and the REST API; this adds what
``provision`` creates, plus function settings Chalice's config cannot express (ephemeral
storage, the webhook secret, the deno layer, the fixed log group names).
"""
from __future__ import annotations

from chalicelib.config import Settings

from .definitions import (
    API_BURST_LIMIT,
    API_EPHEMERAL_MB,
    API_FUNCTION,
    API_FUNCTION_ID,
    API_RATE_LIMIT,
    APP_NAME,
    DENO_LAYER_ID,
    ENCRYPTION_RULES,
    LAMBDA_RUNTIME,
    OWNERSHIP_RULES,
    PUBLIC_ACCESS_BLOCK,
    UPLOAD_CORS_RULES,
    WORKER_EPHEMERAL_MB,
    WORKER_FUNCTION,
    WORKER_FUNCTION_ID,
    AlarmSpec,
    BucketSpec,
    QueueSpec,
    alarm_properties,
    bucket_policy,
    function_name,
    lifecycle_rules,
    stage_resources,
)

# Written by `make package` next to sam.json; `aws cloudformation package` uploads it.
DENO_LAYER_ZIP = "./deno-layer.zip"
# Stateful resources outlive a stack deletion or replacement: results, user parts, queued jobs.
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


def _lifecycle(spec: BucketSpec) -> list[dict]:
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


def _bucket(spec: BucketSpec) -> dict:
    bucket = _bucket_base(spec)
    if spec.browser_uploads:
        bucket["Properties"]["CorsConfiguration"] = {"CorsRules": [
            {_CFN_CORS_NAMES.get(k, k): v for k, v in rule.items()} for rule in UPLOAD_CORS_RULES]}
    return bucket


def _bucket_base(spec: BucketSpec) -> dict:
    return {
        "Type": "AWS::S3::Bucket",
        **RETAIN,
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
            "LifecycleConfiguration": {"Rules": _lifecycle(spec)},
        },
    }


def _queue(spec: QueueSpec) -> dict:
    props = {"QueueName": spec.name, "FifoQueue": True}
    for key, value in spec.attributes:
        props[key] = value == "true" if value in ("true", "false") else int(value)
    if spec.dead_letter is not None:
        props["RedrivePolicy"] = {"deadLetterTargetArn": {"Fn::GetAtt": [spec.dead_letter.logical_id, "Arn"]},
                                  "maxReceiveCount": spec.max_receive_count}
    return {"Type": "AWS::SQS::Queue", **RETAIN, "Properties": props}


def _alarm(spec: AlarmSpec) -> dict:
    value = {"Ref": spec.dimension_ref} if spec.dimension_ref else spec.dimension[1]
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            **alarm_properties(spec, value),
            "AlarmActions": {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]},
        },
    }


def cloudformation_template(settings: Settings, *, log_retention_days: int | None = None,
                            api_key: bool = False) -> dict:
    """The template fragment merged into Chalice's SAM template.

    ``log_retention_days``: the stage's ``log_retention_in_days``; Chalice then emits one log group
    per function, and the REST one is repaired here. ``api_key``: routes require an API key;
    Chalice creates no key or usage plan, so without these every call would be refused with 403.
    """
    res = stage_resources(settings)
    resources: dict = {}
    for spec in res.buckets:
        resources[spec.logical_id] = _bucket(spec)
        policy = bucket_policy(spec)
        if policy:
            resources[f"{spec.logical_id}Policy"] = {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {"Bucket": {"Ref": spec.logical_id}, "PolicyDocument": policy},
            }
    for spec in (res.dead_letter_queue, res.jobs_queue):
        resources[spec.logical_id] = _queue(spec)
    table = res.table
    resources[table.logical_id] = {
        "Type": "AWS::DynamoDB::Table",
        **RETAIN,
        "Properties": {
            "TableName": table.name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": table.key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": table.key, "AttributeType": "S"}],
            "TimeToLiveSpecification": {"AttributeName": table.ttl_attribute, "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": table.point_in_time_recovery},
        },
    }
    for spec in res.alarms:
        resources[spec.logical_id] = _alarm(spec)
    resources["SenderIdentity"] = {
        "Type": "AWS::SES::EmailIdentity",
        # An identity verified earlier (by hand or by `provision`) would make the stack fail.
        "Condition": "CreateSenderIdentityCondition",
        "Properties": {"EmailIdentity": res.sender_email},
    }
    resources[DENO_LAYER_ID] = {
        "Type": "AWS::Serverless::LayerVersion",
        "Properties": {
            "LayerName": f"{APP_NAME}-{settings.stage}-deno",
            "Description": "deno (bin/deno, on PATH as /opt/bin/deno): yt-dlp's JavaScript runtime for YouTube",
            "ContentUri": DENO_LAYER_ZIP,
            "CompatibleRuntimes": [LAMBDA_RUNTIME],
            "CompatibleArchitectures": ["x86_64"],
        },
    }
    secret = {"WEBHOOK_SECRET": {"Ref": "WebhookSecret"}}
    # Named as `chalice deploy` names them, so the log-group grants in iam.py hold on both paths.
    resources[API_FUNCTION_ID] = {
        "Properties": {
            "FunctionName": function_name(settings.stage, API_FUNCTION),
            "EphemeralStorage": {"Size": API_EPHEMERAL_MB},
            "Environment": {"Variables": secret},
        }
    }
    resources[WORKER_FUNCTION_ID] = {
        # Chalice builds the event source's queue ARN from the name, which CloudFormation cannot
        # see as a dependency; without this the mapping may be created before the queue exists.
        "DependsOn": [res.jobs_queue.logical_id],
        "Properties": {
            "FunctionName": function_name(settings.stage, WORKER_FUNCTION),
            "EphemeralStorage": {"Size": WORKER_EPHEMERAL_MB},
            "Environment": {"Variables": secret},
            "Layers": [{"Ref": DENO_LAYER_ID}],
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
    if log_retention_days:
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
                "Description": "HMAC key for webhook signatures (WEBHOOK_SECRET); never committed. "
                               "Empty: requests with webhook_url are refused.",
            },
            "CreateSenderIdentity": {
                "Type": "String",
                "AllowedValues": ["true", "false"],
                "Default": "true",
                "Description": "false when SENDER_EMAIL is already an SES identity in this account/region.",
            },
            "AlarmTopicArn": {
                "Type": "String",
                "Default": "",
                "Description": "SNS topic the alarms notify (empty: alarms change state only).",
            },
        },
        "Conditions": {
            "CreateSenderIdentityCondition": {"Fn::Equals": [{"Ref": "CreateSenderIdentity"}, "true"]},
            "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]},
        },
        "Resources": resources,
        "Outputs": {
            "JobsQueueUrl": {"Value": {"Ref": res.jobs_queue.logical_id}},
            "JobsDeadLetterQueueUrl": {"Value": {"Ref": res.dead_letter_queue.logical_id}},
        },
    }
