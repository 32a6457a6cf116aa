"""The Chalice commands as users type them, against a moto server (boto3 and Chalice honour
AWS_ENDPOINT_URL), in a copy of the project so nothing lands in the checkout.

* bare `chalice deploy --stage prod` and `chalice package --stage prod OUT`: stop before creating
  anything, naming the make target;
* `make deploy STAGE=prod` (scripts/deploy.py deploy): gets as far as moto allows, i.e. up to API
  Gateway, which cannot import Chalice's Swagger 2 definition, with everything before it right;
* bare `chalice local`: its first line says what it needs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from devstack.stack import MotoServer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import deno_layer  # noqa: E402
import vendor_ffmpeg  # noqa: E402

import infra  # noqa: E402

CHALICE = Path(sys.executable).parent / "chalice"
REGION = "us-east-1"
STAGE = "prod"
SENDER = "ops@stitch.test"  # deploy refuses example.com senders (SES could never verify them)

pytestmark = pytest.mark.skipif(not CHALICE.exists(), reason="the chalice CLI is not installed")


@pytest.fixture(scope="module")
def moto():
    server = MotoServer("127.0.0.1", 0)
    yield server
    server.stop()


@pytest.fixture
def aws(moto, monkeypatch):
    """boto3 clients on the moto server; its state is reset for every test."""
    urllib.request.urlopen(urllib.request.Request(f"{moto.url}/moto-api/reset", method="POST")).read()
    for k, v in _aws_env(moto.url).items():
        monkeypatch.setenv(k, v)
    # A session of its own: boto3's default session would cache these dummy credentials for later tests.
    session = boto3.session.Session()
    return lambda name: session.client(name, region_name=REGION, endpoint_url=moto.url)


def _aws_env(url: str) -> dict:
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


def _env(url: str | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "AUDIO_STITCH_")) and k not in ("WEBHOOK_SECRET", "PYTHONPATH")}
    # No profile or credentials of this machine may leak in.
    env.update(AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    if url:
        env.update(_aws_env(url))
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh-clone-like copy: what Chalice and scripts/deploy.py read, with a real sender address."""
    vendor_ffmpeg.vendor()
    deno_layer.build()
    dest = tmp_path_factory.mktemp("clone")
    for name in ("app.py", "requirements.txt", "requirements-cli.txt", "requirements-lock.txt"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("chalicelib", "infra", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".chalice").mkdir()
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    config["stages"][STAGE]["environment_variables"]["SENDER_EMAIL"] = SENDER
    (dest / ".chalice" / "config.json").write_text(json.dumps(config, indent=2))
    (dest / "vendor").symlink_to(ROOT / "vendor", target_is_directory=True)
    (dest / "build").mkdir()
    (dest / "build" / "layers").symlink_to(ROOT / "build" / "layers", target_is_directory=True)
    # The sender is in the policy's condition: re-render, as docs/deploy.md tells users to.
    subprocess.run([sys.executable, "scripts/deploy.py", "render"], cwd=dest, check=True, capture_output=True)
    return dest


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _nothing_created(client) -> None:
    assert client("iam").list_roles()["Roles"] == []
    assert client("lambda").list_functions()["Functions"] == []
    assert client("lambda").list_event_source_mappings()["EventSourceMappings"] == []
    assert client("apigateway").get_rest_apis()["items"] == []


def test_bare_chalice_deploy_stops_before_creating_anything(project, aws, moto):
    proc = _run([str(CHALICE), "deploy", "--stage", STAGE], project, _env(moto.url))
    assert proc.returncode == 1
    assert f"make deploy STAGE={STAGE}" in proc.stderr and "Nothing was created" in proc.stderr
    assert "Traceback" not in proc.stderr
    _nothing_created(aws)
    assert not (project / ".chalice" / "deployed" / f"{STAGE}.json").exists()


def test_bare_chalice_package_stops_naming_make_package(project, tmp_path):
    out = tmp_path / "out"
    proc = _run([str(CHALICE), "package", "--stage", STAGE, str(out)], project, _env(None))
    assert proc.returncode == 1
    assert f"make package STAGE={STAGE}" in proc.stderr and "Nothing was written" in proc.stderr
    assert not out.exists()
    # With a template to merge it still stops: the zip would lack the layer and the checks.
    merge = project / ".chalice" / f"resources-{STAGE}.json"
    proc = _run([str(CHALICE), "package", "--stage", STAGE, "--merge-template", str(merge), str(out)],
                project, _env(None))
    assert proc.returncode == 1 and f"make package STAGE={STAGE}" in proc.stderr
    assert not out.exists()


def test_make_deploy_gets_to_api_gateway_with_everything_before_it_right(project, aws, moto):
    proc = _run([sys.executable, "scripts/deploy.py", "deploy", "--stage", STAGE], project,
                _env(moto.url, WEBHOOK_SECRET="s3cret"), timeout=600)
    out = proc.stdout + proc.stderr
    # moto stops it at API Gateway (it imports OpenAPI 3 only; Chalice sends Swagger 2).
    assert proc.returncode == 1, out
    assert "rest_api" in out.lower() or "restapi" in out.lower(), out[-3000:]
    # The runtime was said and pinned whatever Python runs chalice (this suite runs 3.11).
    assert f"Lambda runtime {infra.LAMBDA_RUNTIME}" in out and "python3.11 and older" in out
    settings = infra.stage_settings(STAGE, project / ".chalice" / "config.json", REGION)
    # provision ran first: buckets, queues, table, alarms.
    assert {settings.bucket_input, settings.bucket_output} <= {b["Name"] for b in aws("s3").list_buckets()["Buckets"]}
    queue_url = aws("sqs").get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    queue_arn = aws("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    assert aws("dynamodb").describe_table(TableName=settings.jobs_table)["Table"]["TableStatus"] == "ACTIVE"
    alarms = {a["AlarmName"] for a in aws("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert {f"audio-stitch-{STAGE}-dlq-not-empty", f"audio-stitch-{STAGE}-worker-errors"} <= alarms
    # One role per function, each with its own committed policy.
    iam = aws("iam")
    for handler in infra.FUNCTIONS:
        role = f"audio-stitch-{STAGE}-{handler}"
        (policy_name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
        expected = json.loads((project / ".chalice" / infra.policy_file(STAGE, handler)).read_text())
        assert (json.loads(document) if isinstance(document, str) else document) == expected
    lam = aws("lambda")
    worker_name = infra.function_name(STAGE, infra.WORKER_FUNCTION)
    functions = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    worker = functions[worker_name]
    assert worker["Runtime"] == infra.LAMBDA_RUNTIME
    assert worker["Role"].endswith(f"/audio-stitch-{STAGE}-{infra.WORKER_FUNCTION}")
    (layer,) = worker["Layers"]
    assert f":layer:audio-stitch-{STAGE}-deno:" in layer["Arn"]
    assert lam.get_function_concurrency(FunctionName=worker_name)["ReservedConcurrentExecutions"] == 10
    (mapping,) = [m for m in lam.list_event_source_mappings()["EventSourceMappings"]
                  if m["FunctionArn"] == worker["FunctionArn"]]
    assert mapping["EventSourceArn"] == queue_arn and mapping["BatchSize"] == 1
    # Chalice uploaded the zip with ffmpeg in it (the guard would have stopped it otherwise).
    assert worker["CodeSize"] > 20 * 2**20


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_line_of_chalice_local(project: Path, env: dict) -> tuple[str, int, subprocess.Popen]:
    port = _free_port()
    proc = subprocess.Popen([str(CHALICE), "local", "--no-autoreload", "--port", str(port)], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    line = proc.stdout.readline()
    return line, port, proc


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _post(port: int, path: str, body: dict) -> tuple[int, dict]:
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_bare_chalice_local_says_what_it_needs_first(project):
    line, _, proc = _first_line_of_chalice_local(project, _env(None))
    try:
        assert line.startswith("chalice local:"), line
        assert "no credentials found" in line and "`make run`" in line
    finally:
        _stop(proc)


# The error mapping (NoCredentialsError -> 503) is the "robust" branch's (issue 11); until it is
# merged this runs as an expected failure, and strict=True makes it fail loudly once it passes.
_MAPPED = any("NoCredentialsError" in p.read_text() for p in (ROOT / "chalicelib").rglob("*.py"))


@pytest.mark.xfail(not _MAPPED, strict=True, reason="missing credentials are not mapped to 503 yet (issue 11)")
def test_bare_chalice_local_answers_503_without_credentials(project):
    _, port, proc = _first_line_of_chalice_local(project, _env(None))
    try:
        status, body = _post(port, "/stitch", {"message_parts": ["a.mp3"]})
        # Never a bare 500: without credentials the answer is "retry later", saying why.
        assert status == 503, body
        assert "credentials" in body["error"]["message"].lower()
    finally:
        _stop(proc)


def test_chalice_local_against_an_endpoint_names_it(project, moto):
    line, _, proc = _first_line_of_chalice_local(project, _env(moto.url))
    try:
        assert line.startswith(f"chalice local: API only, against {moto.url}"), line
        assert "`make run`" in line
    finally:
        _stop(proc)
