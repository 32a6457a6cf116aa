"""scripts/deploy.py's steps after `chalice deploy`, against moto: the webhook secret and /tmp size
on the deployed functions, and the API key + usage plan Chalice does not create."""
from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import deploy  # noqa: E402

import infra  # noqa: E402

REGION = "us-east-1"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {}\n")
    return buf.getvalue()


@pytest.fixture
def deployed(tmp_path):
    """Two functions and a REST API as `chalice deploy --stage prod` leaves them, plus its record."""
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]
        lam = boto3.client("lambda", region_name=REGION)
        resources = []
        for name, fn_name in (("api_handler", "audio-stitch-prod"), ("process_job", "audio-stitch-prod-process_job")):
            arn = lam.create_function(
                FunctionName=fn_name, Runtime="python3.11", Role=role["Arn"], Handler="app.handler",
                Code={"ZipFile": _zip()}, Environment={"Variables": {"STAGE": "prod", "QUEUE_NAME": "q.fifo"}},
            )["FunctionArn"]
            resources.append({"name": name, "resource_type": "lambda_function", "lambda_arn": arn})
        apigw = boto3.client("apigateway", region_name=REGION)
        api = apigw.create_rest_api(name="audio-stitch")
        root = apigw.get_resources(restApiId=api["id"])["items"][0]["id"]
        apigw.put_method(restApiId=api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
        apigw.put_integration(restApiId=api["id"], resourceId=root, httpMethod="GET", type="MOCK")
        apigw.create_deployment(restApiId=api["id"], stageName="api")
        resources.append({"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api["id"],
                          "rest_api_url": f"https://{api['id']}.execute-api.{REGION}.amazonaws.com/api/"})
        (tmp_path / "deployed").mkdir()
        (tmp_path / "deployed" / "prod.json").write_text(json.dumps({"resources": resources}))
        yield {"dir": tmp_path, "lambda": lam, "apigw": apigw, "api_id": api["id"]}


def _sent_sizes(lam) -> dict:
    """EphemeralStorage sizes in the UpdateFunctionConfiguration requests botocore validated and
    sent (moto 5.2.5 accepts but does not store the field on update)."""
    sent = {}

    def record(params, **_):
        sent[params["FunctionName"].rsplit(":", 1)[-1]] = params.get("EphemeralStorage", {}).get("Size")

    lam.meta.events.register("provide-client-params.lambda.UpdateFunctionConfiguration", record)
    return sent


def test_configure_functions_adds_secret_and_tmp_size(deployed):
    lam = deployed["lambda"]
    sent = _sent_sizes(lam)
    names = deploy.configure_functions("prod", "s3cret", chalice_dir=deployed["dir"], client=lam)
    assert sorted(names) == ["audio-stitch-prod", "audio-stitch-prod-process_job"]
    assert sent == {"audio-stitch-prod-process_job": infra.WORKER_EPHEMERAL_MB,
                    "audio-stitch-prod": infra.API_EPHEMERAL_MB}
    worker = lam.get_function_configuration(FunctionName="audio-stitch-prod-process_job")
    api = lam.get_function_configuration(FunctionName="audio-stitch-prod")
    for fn in (worker, api):
        # The variables Chalice set are kept; the secret is added.
        assert fn["Environment"]["Variables"] == {"STAGE": "prod", "QUEUE_NAME": "q.fifo", "WEBHOOK_SECRET": "s3cret"}


def test_configure_functions_without_secret_leaves_environment(deployed):
    lam = deployed["lambda"]
    sent = _sent_sizes(lam)
    deploy.configure_functions("prod", "", chalice_dir=deployed["dir"], client=lam)
    worker = lam.get_function_configuration(FunctionName="audio-stitch-prod-process_job")
    assert worker["Environment"]["Variables"] == {"STAGE": "prod", "QUEUE_NAME": "q.fifo"}
    assert sent["audio-stitch-prod-process_job"] == infra.WORKER_EPHEMERAL_MB


def test_api_key_and_usage_plan_created_once(deployed):
    apigw = deployed["apigw"]
    first = deploy.ensure_api_key("prod", chalice_dir=deployed["dir"], client=apigw)
    second = deploy.ensure_api_key("prod", chalice_dir=deployed["dir"], client=apigw)
    assert first == second
    plans = apigw.get_usage_plans()["items"]
    assert len(plans) == 1 and plans[0]["name"] == "audio-stitch-prod"
    assert plans[0]["apiStages"] == [{"apiId": deployed["api_id"], "stage": "api"}]
    assert plans[0]["throttle"]["burstLimit"] == infra.definitions.API_BURST_LIMIT
    keys = apigw.get_api_keys()["items"]
    assert [k["id"] for k in keys] == [first] and keys[0]["enabled"]
    assert [k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plans[0]["id"])["items"]] == [first]


def _region_env(monkeypatch, tmp_path, config_region: str | None = None, **env: str) -> None:
    """Only ``env`` and an AWS config file naming ``config_region`` (if any) say where to deploy."""
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.setenv(var, "x")  # so that monkeypatch restores the variable deploy() sets
        monkeypatch.delenv(var)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nregion = {config_region}\n" if config_region else "")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(deploy, "render", lambda check_only=False: 1)  # stop at the step after the region


def test_deploy_refuses_without_region(monkeypatch, tmp_path):
    _region_env(monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match="no AWS region"):
        deploy.deploy("prod")


@pytest.mark.parametrize("config_region, env", [
    ("eu-west-1", {}),                                 # `aws configure set region`, as TROUBLESHOOTING says
    ("us-east-1", {"AWS_REGION": "eu-west-1"}),        # `export AWS_REGION`, as docs/deploy.md says
])
def test_deploy_pins_one_region_for_every_step(monkeypatch, tmp_path, config_region, env):
    _region_env(monkeypatch, tmp_path, config_region, **env)
    with pytest.raises(SystemExit, match="generated .chalice files are stale"):
        deploy.deploy("prod")
    # provision reads AWS_REGION, chalice and boto3 AWS_DEFAULT_REGION: both must name the same region.
    assert os.environ["AWS_REGION"] == os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert deploy._chalice_env()["AWS_DEFAULT_REGION"] == "eu-west-1"


def _workflow():
    import yaml

    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def test_ci_tests_every_push_and_pull_request_and_deploys_only_tags():
    wf = _workflow()
    on = wf[True]  # YAML 1.1 reads the key `on` as a boolean
    assert on["push"]["tags"] == ["v*"] and "pull_request" in on
    jobs = wf["jobs"]
    test_steps = jobs["test"]["steps"]
    test_runs = [step.get("run") for step in test_steps]
    assert "make lint" in test_runs and "make test" in test_runs
    # The package is built (after the tests) in the same job, on pushes, and uploaded as it is.
    (package,) = [step for step in test_steps if "make package STAGE=prod" in (step.get("run") or "")]
    assert package["if"] == "github.event_name == 'push'"
    assert test_runs.index(package["run"]) > test_runs.index("make test")
    deploy_job = jobs["deploy"]
    assert deploy_job["if"] == "startsWith(github.ref, 'refs/tags/v')" and deploy_job["needs"] == "test"
    runs = "\n".join(step.get("run") or "" for step in deploy_job["steps"])
    assert "aws cloudformation deploy" in runs and "build/prod/packaged.json" in runs
    assert deploy_job["permissions"]["id-token"] == "write"


def test_every_secret_and_variable_ci_uses_is_documented():
    import re

    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    used = set(re.findall(r"\$\{\{\s*(?:secrets|vars)\.([A-Z_]+)\s*\}\}", text))
    assert {"AWS_DEPLOY_ROLE_ARN", "WEBHOOK_SECRET", "AWS_REGION", "ARTIFACT_BUCKET"} <= used
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert all(f"`{name}`" in docs for name in used), used


def test_deploy_refuses_a_placeholder_sender(monkeypatch):
    from chalicelib.config import Settings

    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # restored afterwards: deploy() pins both
    monkeypatch.setattr(infra, "stage_settings", lambda stage: Settings(stage=stage, sender_email="a@example.com"))
    monkeypatch.setattr(deploy, "render", lambda check_only=False: 0)
    # Refused before anything is provisioned.
    monkeypatch.setattr(infra, "main", lambda argv: pytest.fail("provision ran"))
    with pytest.raises(SystemExit, match="SENDER_EMAIL for stage prod is a@example.com"):
        deploy.deploy("prod")


def test_log_retention_lands_on_the_groups_the_functions_write_to():
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        # What Chalice's deploy leaves: retention on a group no function writes to.
        logs.create_log_group(logGroupName="/aws/lambda/audio-stitch-prod-api_handler")
        logs.create_log_group(logGroupName="/aws/lambda/audio-stitch-prod")  # exists already: kept
        groups = deploy.set_log_retention("prod", 90, client=logs)
        assert groups == ["/aws/lambda/audio-stitch-prod", "/aws/lambda/audio-stitch-prod-process_job",
                          "/aws/lambda/audio-stitch-prod-sweep_jobs"]
        days = {g["logGroupName"]: g.get("retentionInDays") for g in logs.describe_log_groups()["logGroups"]}
        assert {days[g] for g in groups} == {90}
        assert deploy.set_log_retention("prod", None, client=logs) == []


def test_layer_is_published_once_per_content(tmp_path):
    layer = tmp_path / "layer.zip"
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("bin/deno", "#!/bin/sh\n")
    with mock_aws():
        lam = boto3.client("lambda", region_name=REGION)
        first = deploy.publish_layer("prod", layer, client=lam)
        assert first.endswith(":layer:audio-stitch-prod-deno:1")
        assert deploy.publish_layer("prod", layer, client=lam) == first
        with zipfile.ZipFile(layer, "a") as zf:
            zf.writestr("bin/README", "changed")
        assert deploy.publish_layer("prod", layer, client=lam).endswith(":layer:audio-stitch-prod-deno:2")


def test_lambda_wheels_are_asked_for_the_runtimes_python():
    """Chalice gives pip the runtime's ABI (cp312) but not its version: without the pin, pip looks
    for cp311 wheels with a cp312 ABI and a binary dependency (lameenc) goes missing from the zip."""
    from chalice.deploy.packager import PipRunner

    from infra import chalice_guard
    from infra.definitions import LAMBDA_RUNTIME

    chalice_guard.pin_runtime()
    chalice_guard.pin_runtime()  # twice: wrapped once

    class Recording(PipRunner):
        def __init__(self):
            self.calls = []

        def _execute(self, command, args, env_vars=None, shim=None):
            self.calls.append((command, args))
            return 0, b"", b""

    pip = Recording()
    pip.download_manylinux_wheels("cp312", ["lameenc==1.9.0"], "/tmp/x", ["manylinux2014_x86_64"])
    [(command, args)] = pip.calls
    assert command == "download"
    assert args[:2] == ["--python-version", LAMBDA_RUNTIME.removeprefix("python")]
    assert args.count("--python-version") == 1 and args[-1] == "lameenc==1.9.0"
    assert "_execute" not in vars(pip)  # the instance is left as it was
