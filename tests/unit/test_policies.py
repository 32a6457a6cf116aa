"""The committed .chalice files: rendered from infra, per-stage config, least-privilege IAM."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import infra
from chalicelib.config import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import deploy  # noqa: E402

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = sorted(CONFIG["stages"])
DEPLOYED = [s for s in STAGES if s != "dev"]


def test_every_stage_is_defined():
    assert set(STAGES) == {"dev", "test", "stage", "prod"}


@pytest.mark.parametrize("path", sorted(deploy.rendered_files()), ids=lambda p: p.name)
def test_committed_file_equals_rendered(path):
    # If this fails: `python scripts/deploy.py render` and commit the result.
    assert path.exists(), f"{path.name} missing"
    assert path.read_text() == deploy.rendered_files()[path]


@pytest.mark.parametrize("stage", STAGES)
def test_stage_config(stage):
    cfg = CONFIG["stages"][stage]
    env = infra.stage_environment(stage)
    settings = Settings.from_env(env)
    assert settings.stage == stage
    for name in (settings.bucket_input, settings.bucket_output, settings.jobs_table):
        assert name.endswith(f"-{stage}")
    assert settings.queue_name.endswith(f"-{stage}.fifo") and settings.dlq_name.endswith(f"-{stage}.fifo")
    # Every variable is a Settings field: no typos that
    # would silently fall back to a default.
    known = {name.upper() for name in Settings.__dataclass_fields__}
    assert set(env) <= known, set(env) - known
    assert "WEBHOOK_SECRET" not in env, "the webhook secret must never be committed"
    assert "AWS_ENDPOINT_URL" not in env
    assert cfg["autogen_policy"] is False and "iam_policy_file" not in cfg
    for handler in (infra.API_FUNCTION, infra.WORKER_FUNCTION):
        # Its own policy file gives each function its own role (Chalice: <app>-<stage>-<handler>).
        assert cfg["lambda_functions"][handler]["iam_policy_file"] == infra.policy_file(stage, handler)
    worker = cfg["lambda_functions"]["process_job"]
    assert worker["reserved_concurrency"] >= 1
    assert worker["lambda_memory_size"] >= 2048 and worker["lambda_timeout"] == settings.worker_timeout_seconds
    api = cfg["lambda_functions"]["api_handler"]
    assert api["lambda_memory_size"] <= 1024 and api["lambda_timeout"] <= 30
    assert infra.visibility_timeout(settings) > worker["lambda_timeout"]
    # Every stage can be deployed, so every stage wants a key (chalice local does not enforce it).
    assert env["REQUIRE_API_KEY"] == "true"
    if stage in DEPLOYED:
        assert env["ALLOW_LOOPBACK_URLS"] == "false"
    # dev leaves it out so the local stack can switch it on: Chalice's config would override it.
    assert env.get("ALLOW_LOOPBACK_URLS", "false") == "false"


def _statements(stage, handler=None):
    handlers = [handler] if handler else list(infra.FUNCTIONS)
    return [st for h in handlers
            for st in json.loads((ROOT / ".chalice" / infra.policy_file(stage, h)).read_text())["Statement"]]


def _granted(stage, handler):
    return {(a, r) for st in _statements(stage, handler) for a in st["Action"] for r in st["Resource"]}


@pytest.mark.parametrize("stage", STAGES)
def test_each_function_has_only_its_own_grants(stage):
    settings = infra.stage_settings(stage)
    queue = f"arn:aws:sqs:*:*:{settings.queue_name}"
    api, worker = _granted(stage, infra.API_FUNCTION), _granted(stage, infra.WORKER_FUNCTION)
    # The REST function enqueues; it can neither take jobs off the queue nor delete them.
    assert ("sqs:SendMessage", queue) in api
    assert not {a for a, _ in api} & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "ses:SendEmail"}
    assert {("sqs:ReceiveMessage", queue), ("sqs:DeleteMessage", queue)} <= worker
    # The worker sends only poison messages, and only to the dead-letter queue.
    assert {r for a, r in worker if a == "sqs:SendMessage"} == {f"arn:aws:sqs:*:*:{settings.dlq_name}"}
    # The sweeper re-sends stale jobs and reads the table; it never touches the buckets or takes messages.
    sweeper = _granted(stage, infra.SWEEPER_FUNCTION)
    assert {("sqs:SendMessage", queue), ("dynamodb:Scan", f"arn:aws:dynamodb:*:*:table/{settings.jobs_table}")} <= sweeper
    assert not {a for a, _ in sweeper} & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:GetObject", "s3:PutObject"}
    # Each writes its own log group only.
    for handler in infra.FUNCTIONS:
        granted = _granted(stage, handler)
        logs = {r for a, r in granted if a == "logs:PutLogEvents"}
        assert logs == {f"arn:aws:logs:*:*:log-group:/aws/lambda/{infra.function_name(stage, handler)}:*"}


@pytest.mark.parametrize("stage", STAGES)
def test_policy_is_scoped_to_the_stage(stage):
    settings = infra.stage_settings(stage)
    for st in _statements(stage):
        assert st["Effect"] == "Allow"
        actions = st["Action"]
        assert all("*" not in a for a in actions), actions
        for resource in st["Resource"]:
            assert resource != "*"
            if resource.startswith("arn:aws:ses:"):
                # SES checks every identity involved; the From address is pinned by the condition.
                assert st["Condition"] == {"StringEquals": {"ses:FromAddress": settings.sender_email}}
                continue
            assert stage in resource, resource
    granted = {(a, r) for st in _statements(stage) for a in st["Action"] for r in st["Resource"]}
    out = f"arn:aws:s3:::{settings.bucket_output}"
    inp = f"arn:aws:s3:::{settings.bucket_input}"
    assert ("s3:PutObject", f"{out}/{settings.cache_prefix}*") in granted
    assert ("s3:PutObject", f"{inp}/{settings.uploads_prefix}*") in granted
    # Users' own parts are read, never overwritten.
    assert not any(a == "s3:PutObject" and r in (f"{inp}/*", f"{out}/*") for a, r in granted)
    assert ("dynamodb:UpdateItem", f"arn:aws:dynamodb:*:*:table/{settings.jobs_table}") in granted
    assert ("sqs:SendMessage", f"arn:aws:sqs:*:*:{settings.queue_name}") in granted


# boto3 calls of the code that runs on Lambda -> the IAM actions they need.
CALL_ACTIONS = {
    "head_object": {"s3:GetObject"},
    "get_object": {"s3:GetObject"},
    "put_object": {"s3:PutObject"},
    # Large files go up in parts; an interrupted upload is aborted.
    "upload_file": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "list_objects_v2": {"s3:ListBucket"},
    # Presigned GET links for results, presigned POST forms for uploads.
    "generate_presigned_url": {"s3:GetObject", "s3:PutObject"},
    "generate_presigned_post": {"s3:PutObject"},
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "scan": {"dynamodb:Scan"},
    "get_queue_url": {"sqs:GetQueueUrl"},
    "send_message": {"sqs:SendMessage"},
    "send_email": {"ses:SendEmail"},
}
# Needed without a call in our code: Lambda's logging, the SQS event source mapping, S3 answering
# 404 rather than 403 for a missing key, and GETs pinned to a VersionId.
PLATFORM_ACTIONS = {
    "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
    "s3:ListBucket", "s3:GetObjectVersion",
}


def _aws_calls() -> dict[str, list[str]]:
    """Client method names of s3/sqs/dynamodb/ses(v2) called in app.py and the Lambda-side
    chalicelib modules (not the local stack, the CLI, provisioning, or the audio engine)."""
    import re

    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    operations = {"upload_file", "download_file", "upload_fileobj", "download_fileobj",
                  "generate_presigned_url", "generate_presigned_post", "copy"}
    for service in ("s3", "sqs", "dynamodb", "ses", "sesv2"):
        operations |= {xform_name(op) for op in session.get_service_model(service).operation_names}
    files = [ROOT / "app.py"] + [
        p for p in (ROOT / "chalicelib").rglob("*.py") if "engine" not in p.parts
    ]
    calls: dict[str, list[str]] = {}
    for path in files:
        for m in re.finditer(r"\.([a-z0-9_]+)\(", path.read_text()):
            if m.group(1) in operations:
                calls.setdefault(m.group(1), []).append(str(path.relative_to(ROOT)))
    return calls


@pytest.mark.skipif(not (ROOT / "app.py").exists(), reason="app.py not in the tree")
@pytest.mark.parametrize("stage", STAGES)
def test_policy_grants_exactly_what_the_code_calls(stage):
    calls = _aws_calls()
    unknown = {name: where for name, where in calls.items() if name not in CALL_ACTIONS}
    assert not unknown, f"new AWS calls {unknown}: grant them in infra/iam.py, then map them here"
    needed = set().union(*(CALL_ACTIONS[name] for name in calls)) | PLATFORM_ACTIONS
    granted = {a for st in _statements(stage) for a in st["Action"]}
    assert granted - needed == set(), "granted but never used"
    assert needed - granted == set(), "used but not granted"
