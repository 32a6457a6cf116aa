"""infra against moto: what ensure_resources builds, that it converges, and the CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

import infra
from chalicelib import jobs
from chalicelib.config import Settings

REGION = "us-east-1"


@pytest.fixture
def aws():
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "dynamodb", "ses")}


@pytest.fixture
def settings():
    return Settings(
        stage="t",
        bucket_input="in-t",
        bucket_output="out-t",
        queue_name="jobs-t.fifo",
        dlq_name="jobs-dlq-t.fifo",
        jobs_table="jobs-t",
        sender_email="sender@example.com",
        cache_ttl_days=5,
        sources_ttl_days=2,
        uploads_ttl_days=1,
        max_receive_count=4,
        worker_timeout_seconds=900,
        aws_region=REGION,
    )


def _rules(s3, bucket):
    return {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}


def test_buckets_are_private_encrypted_unversioned_with_lifecycle(aws, settings):
    infra.ensure_resources(settings, aws)
    s3 = aws["s3"]
    for bucket in ("in-t", "out-t"):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == infra.PUBLIC_ACCESS_BLOCK
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None
        owner = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert owner == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        abort = _rules(s3, bucket)["abort-incomplete-multipart-uploads"]
        assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    out_rules = _rules(s3, "out-t")
    assert out_rules["expire-cache"]["Filter"] == {"Prefix": "cache/"}
    assert out_rules["expire-cache"]["Expiration"] == {"Days": 5}
    # The cache rule must never reach users' parts in the input bucket.
    assert "expire-cache" not in _rules(s3, "in-t")
    in_rules = _rules(s3, "in-t")
    assert in_rules["expire-sources"]["Filter"] == {"Prefix": "sources/"}
    assert in_rules["expire-sources"]["Expiration"] == {"Days": 2}
    assert in_rules["expire-uploads"]["Expiration"] == {"Days": 1}


def test_fifo_queue_redrives_to_fifo_dlq(aws, settings):
    out = infra.ensure_resources(settings, aws)
    sqs = aws["sqs"]
    attrs = sqs.get_queue_attributes(QueueUrl=out["queue_url"], AttributeNames=["All"])["Attributes"]
    dlq_attrs = sqs.get_queue_attributes(QueueUrl=out["dlq_url"], AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true" and dlq_attrs["FifoQueue"] == "true"
    assert int(attrs["VisibilityTimeout"]) > settings.worker_timeout_seconds
    assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": out["dlq_arn"], "maxReceiveCount": 4}
    assert out["queue_arn"] == attrs["QueueArn"] and out["queue_arn"].endswith(":jobs-t.fifo")

    # The redrive policy really moves a message after maxReceiveCount receives.
    sqs.set_queue_attributes(QueueUrl=out["queue_url"], Attributes={"VisibilityTimeout": "0"})
    sqs.send_message(QueueUrl=out["queue_url"], MessageBody="{}", MessageGroupId="j", MessageDeduplicationId="j")
    for _ in range(4):
        assert sqs.receive_message(QueueUrl=out["queue_url"]).get("Messages")
    assert not sqs.receive_message(QueueUrl=out["queue_url"]).get("Messages")
    assert sqs.receive_message(QueueUrl=out["dlq_url"]).get("Messages")


def test_jobs_table_on_demand_with_ttl(aws, settings):
    out = infra.ensure_resources(settings, aws)
    ddb = aws["dynamodb"]
    table = ddb.describe_table(TableName="jobs-t")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert out["table_arn"] == table["TableArn"]
    ttl = ddb.describe_time_to_live(TableName="jobs-t")["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": jobs.TTL_ATTRIBUTE}


def test_sender_identity_and_idempotence(aws, settings):
    first = infra.ensure_resources(settings, aws)
    assert "sender@example.com" in aws["ses"].list_identities()["Identities"]
    # A changed setting converges on the second run instead of failing on "already exists".
    second = infra.ensure_resources(replace(settings, cache_ttl_days=9, max_receive_count=3), aws)
    assert second == first
    assert _rules(aws["s3"], "out-t")["expire-cache"]["Expiration"] == {"Days": 9}
    assert len(_rules(aws["s3"], "out-t")) == 2
    attrs = aws["sqs"].get_queue_attributes(QueueUrl=first["queue_url"], AttributeNames=["RedrivePolicy"])
    assert json.loads(attrs["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 3
    assert len(aws["sqs"].list_queues()["QueueUrls"]) == 2
    assert aws["dynamodb"].list_tables()["TableNames"] == ["jobs-t"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"queue_name": "jobs"}, "must end in .fifo"),
        ({"bucket_output": "in-t"}, "must differ"),
    ],
)
def test_bad_names_are_refused_before_touching_aws(aws, settings, change, message):
    with pytest.raises(infra.ProvisionError, match=message):
        infra.ensure_resources(replace(settings, **change), aws)
    assert aws["s3"].list_buckets()["Buckets"] == []


def test_table_with_other_ttl_attribute_is_reported(aws, settings):
    ddb = aws["dynamodb"]
    ddb.create_table(
        TableName="jobs-t",
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(TableName="jobs-t", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    with pytest.raises(infra.ProvisionError, match="expires_at_epoch"):
        infra.ensure_table(ddb, settings)


def test_provision_cli_reads_stage_from_config(aws, tmp_path, capsys):
    config = {
        "version": "2.0",
        "app_name": "audio-stitch",
        "environment_variables": {"CACHE_PREFIX": "cache/"},
        "stages": {
            "x": {
                "environment_variables": {
                    "STAGE": "x",
                    "BUCKET_INPUT": "in-x",
                    "BUCKET_OUTPUT": "out-x",
                    "QUEUE_NAME": "q-x.fifo",
                    "DLQ_NAME": "dlq-x.fifo",
                    "JOBS_TABLE": "jobs-x",
                    "SENDER_EMAIL": "x@example.com",
                }
            }
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from audio_stitch.cli import main

    assert main(["provision", "--stage", "x", "--config", str(path), "--region", REGION]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bucket_input"] == "in-x" and printed["jobs_table"] == "jobs-x"
    assert aws["sqs"].get_queue_url(QueueName="q-x.fifo")["QueueUrl"] == printed["queue_url"]

    assert main(["provision", "--stage", "nope", "--config", str(path), "--region", REGION]) == 1
    assert "stage 'nope' is not in" in capsys.readouterr().err


def test_provision_without_region_says_so(monkeypatch, tmp_path, capsys):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert infra.main(["--stage", "prod"]) == 1
    assert "no AWS region" in capsys.readouterr().err


def test_provision_without_credentials_says_so(monkeypatch, tmp_path, capsys):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    # Nothing listens here: the credential lookup must fail before any request is attempted.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    assert infra.main(["--stage", "prod", "--region", REGION, "--endpoint-url", "http://127.0.0.1:9"]) == 1
    assert "no AWS credentials" in capsys.readouterr().err


def test_table_key_and_ttl_come_from_the_jobs_module(settings, monkeypatch):
    # One source: renaming the attribute in jobs.py renames it in every rendering.
    monkeypatch.setattr(jobs, "TTL_ATTRIBUTE", "gone_at")
    monkeypatch.setattr(jobs, "KEY", "jid")
    table = infra.cloudformation_template(settings)["Resources"]["JobsTable"]["Properties"]
    assert table["TimeToLiveSpecification"]["AttributeName"] == "gone_at"
    assert table["KeySchema"] == [{"AttributeName": "jid", "KeyType": "HASH"}]


def test_table_has_point_in_time_recovery(aws, settings):
    infra.ensure_resources(settings, aws)
    backups = aws["dynamodb"].describe_continuous_backups(TableName="jobs-t")["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    table = infra.cloudformation_template(settings)["Resources"]["JobsTable"]
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Retain"


def test_buckets_refuse_plain_http(aws, settings):
    # Only on real AWS by default (moto ignores the condition and would deny everything).
    infra.ensure_resources(settings, aws)
    with pytest.raises(aws["s3"].exceptions.ClientError):
        aws["s3"].get_bucket_policy(Bucket="in-t")
    infra.ensure_resources(settings, aws, bucket_policies=True)
    res = infra.cloudformation_template(settings)["Resources"]
    for logical_id, bucket in (("InputBucket", "in-t"), ("OutputBucket", "out-t")):
        live = json.loads(aws["s3"].get_bucket_policy(Bucket=bucket)["Policy"])
        (deny,) = live["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert set(deny["Resource"]) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
        rendered = res[f"{logical_id}Policy"]["Properties"]
        assert rendered["Bucket"] == {"Ref": logical_id} and rendered["PolicyDocument"] == live


def test_queues_are_retained_when_the_stack_goes(settings):
    res = infra.cloudformation_template(settings)["Resources"]
    for logical_id in ("JobsQueue", "JobsDeadLetterQueue", "InputBucket", "OutputBucket", "JobsTable"):
        assert (res[logical_id]["DeletionPolicy"], res[logical_id]["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_alarms_on_dead_letters_and_worker_errors(aws, settings):
    infra.ensure_resources(settings, aws)
    live = {a["AlarmName"]: a for a in boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]}
    dlq = live["audio-stitch-t-dlq-not-empty"]
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": "jobs-dlq-t.fifo"}]
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    errors = live["audio-stitch-t-worker-errors"]
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": "audio-stitch-t-process_job"}]
    res = infra.cloudformation_template(settings)["Resources"]
    assert res["WorkerErrorsAlarm"]["Properties"]["Dimensions"] == [{"Name": "FunctionName",
                                                                    "Value": {"Ref": "ProcessJob"}}]
    # Re-running converges (PutMetricAlarm replaces by name).
    infra.ensure_resources(settings, aws)
    assert len(boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]) == 2


def test_cloudformation_describes_what_provision_creates(aws, settings):
    """The two renderings of the one definition agree: names, lifecycle, queue attributes, table."""
    out = infra.ensure_resources(settings, aws)
    res = infra.cloudformation_template(settings)["Resources"]
    for logical_id, bucket in (("InputBucket", "in-t"), ("OutputBucket", "out-t")):
        props = res[logical_id]["Properties"]
        assert props["BucketName"] == bucket
        cfn_rules = {(r["Id"], r.get("Prefix", ""), r.get("ExpirationInDays"),
                      r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"))
                     for r in props["LifecycleConfiguration"]["Rules"]}
        live = {(r["ID"], r["Filter"]["Prefix"], r.get("Expiration", {}).get("Days"),
                 r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"))
                for r in aws["s3"].get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
        assert cfn_rules == live
        assert props["PublicAccessBlockConfiguration"] == infra.PUBLIC_ACCESS_BLOCK
    attrs = aws["sqs"].get_queue_attributes(QueueUrl=out["queue_url"], AttributeNames=["All"])["Attributes"]
    queue = res["JobsQueue"]["Properties"]
    assert queue["QueueName"] == "jobs-t.fifo" and queue["FifoQueue"] is True
    assert str(queue["VisibilityTimeout"]) == attrs["VisibilityTimeout"]
    assert str(queue["MessageRetentionPeriod"]) == attrs["MessageRetentionPeriod"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]
    assert res["JobsDeadLetterQueue"]["Properties"]["QueueName"] == "jobs-dlq-t.fifo"
    table = res["JobsTable"]["Properties"]
    assert table["TableName"] == "jobs-t" and table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": jobs.TTL_ATTRIBUTE, "Enabled": True}
    assert res["SenderIdentity"]["Properties"]["EmailIdentity"] == "sender@example.com"


def test_input_bucket_takes_browser_uploads_in_both_renderings(aws, settings):
    from botocore.exceptions import ClientError

    infra.ensure_resources(settings, aws)
    live = aws["s3"].get_bucket_cors(Bucket="in-t")["CORSRules"]
    assert [(r["AllowedMethods"], r["AllowedOrigins"]) for r in live] == [(["PUT", "POST"], ["*"])]
    with pytest.raises(ClientError, match="NoSuchCORSConfiguration"):
        aws["s3"].get_bucket_cors(Bucket="out-t")  # results are only ever fetched by link
    res = infra.cloudformation_template(settings)["Resources"]
    cfn = res["InputBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert [(r["Id"], r["AllowedMethods"], r["AllowedOrigins"], r["ExposedHeaders"], r["MaxAge"]) for r in cfn] == [
        (r["ID"], r["AllowedMethods"], r["AllowedOrigins"], r["ExposeHeaders"], r["MaxAgeSeconds"]) for r in live]
    assert "CorsConfiguration" not in res["OutputBucket"]["Properties"]
