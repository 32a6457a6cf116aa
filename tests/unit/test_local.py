"""`python -m audio_stitch run` pieces that need no child process: environment, locking, ports, moto, seeding."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import boto3
import pytest
from moto import mock_aws

import infra
from devstack import stack as local
from tests.audio import decoded_duration

CONFIG = {
    "version": "2.0",
    "environment_variables": {"CACHE_PREFIX": "cache/", "WORK_DIR": "/tmp", "ALLOW_LOOPBACK_URLS": "false"},
    "stages": {
        "dev": {"environment_variables": {"BUCKET_INPUT": "in-dev", "WORK_DIR": "/var/dev"}},
        "prod": {"environment_variables": {"BUCKET_INPUT": "in-prod"}},
    },
}


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def test_stage_environment_merges_top_level_then_stage(project):
    config = project / ".chalice" / "config.json"
    env = infra.stage_environment("dev", config)
    assert env == {"CACHE_PREFIX": "cache/", "WORK_DIR": "/var/dev", "ALLOW_LOOPBACK_URLS": "false",
                   "BUCKET_INPUT": "in-dev"}
    assert infra.stage_environment("prod", config)["WORK_DIR"] == "/tmp"
    with pytest.raises(infra.ProvisionError, match="stage 'nope' is not in"):
        local.child_environment("nope", "http://x", {}, project)


def test_a_stage_missing_from_the_config_stops_the_stack_with_the_reason(tmp_path):
    stack = local.LocalStack(local.parse_args(["--stage", "nope", "--port", "0", "--moto-port", "0",
                                               "--state-dir", str(tmp_path)]))
    try:
        with pytest.raises(local.StackFailed, match=r"stage 'nope' is not in .*\(have: dev, "):
            stack.start()
    finally:
        stack.stop()


def test_child_environment_precedence_and_forced_aws(project):
    base = {"PATH": "/bin", "WORK_DIR": "/mine", "AWS_PROFILE": "prod-admin",
            "AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SESSION_TOKEN": "tok", "WEBHOOK_SECRET": "",
            "AWS_ENDPOINT_URL_S3": "https://s3.amazonaws.com", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    env = local.child_environment("dev", "http://127.0.0.1:4999", base, project)
    assert env["BUCKET_INPUT"] == "in-dev"           # stage config
    assert env["WORK_DIR"] == "/mine"                # what the caller exported wins
    assert env["ALLOW_LOOPBACK_URLS"] == "true"      # local override beats the config's "false"
    assert len(env["WEBHOOK_SECRET"]) == 32          # generated: empty counts as unset
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4999"
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert not {"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"} & set(env)
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_CONFIG_FILE"] == env["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(project)
    kept = local.child_environment("dev", "http://x", {"WEBHOOK_SECRET": "s3cret", "ALLOW_LOOPBACK_URLS": "0"},
                                   project)
    assert kept["WEBHOOK_SECRET"] == "s3cret" and kept["ALLOW_LOOPBACK_URLS"] == "0"


def test_loopback_bypasses_a_configured_proxy(project):
    import urllib.request

    base = {"http_proxy": "http://proxy.corp:3128", "NO_PROXY": "corp.example"}
    env = local.child_environment("dev", "http://127.0.0.1:4999", base, project)
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,127.0.0.1,localhost"
    proxies = {"http": base["http_proxy"], "no": env["NO_PROXY"]}
    assert urllib.request.proxy_bypass_environment("127.0.0.1", proxies)
    assert not urllib.request.proxy_bypass_environment("example.org", proxies)


def test_second_instance_is_refused_with_the_running_ones_urls(tmp_path):
    held = local.acquire_lock(tmp_path)
    try:
        local.RunState(pid=4242, api_url="http://127.0.0.1:8000", moto_url="http://127.0.0.1:4566").write(tmp_path)
        with pytest.raises(local.AlreadyRunning) as err:
            local.acquire_lock(tmp_path)
        message = str(err.value)
        assert "already running (pid 4242)" in message
        assert "http://127.0.0.1:8000" in message and "kill 4242" in message
    finally:
        held.close()
    local.acquire_lock(tmp_path).close()  # released with the file: a dead run never blocks the next


def test_busy_port_is_reported_with_the_variable_to_change(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert local.port_in_use(port)
        status = local.main(["--moto-port", str(port), "--port", "0", "--state-dir", str(tmp_path)])
    assert status == 1
    err = capsys.readouterr().err
    assert f"port {port} (moto) on 127.0.0.1 is already in use" in err
    assert f"MOTO_PORT={port + 1} make run" in err
    assert not local.port_in_use(port)
    assert not (tmp_path / "run.json").exists()


def test_bad_port_value_names_the_setting():
    with pytest.raises(SystemExit, match="API port must be a port number, got 'eighty'"):
        local.parse_args(["--port", "eighty"])
    with pytest.raises(SystemExit, match="moto port must be between 0 and 65535"):
        local.parse_args(["--moto-port", "70000"])


def test_moto_server_serves_aws_and_frees_its_port(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    server = local.MotoServer("127.0.0.1", 0)
    try:
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        s3.create_bucket(Bucket="probe")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["probe"]
    finally:
        server.stop()
    assert not local.port_in_use(server.port)


def _seconds(data: bytes, tmp_path) -> float:
    (tmp_path / "sample.mp3").write_bytes(data)
    return decoded_duration(tmp_path / "sample.mp3")


def test_seed_samples_uploads_decodable_mp3s(tmp_path):
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="seed-input")
        keys = local.seed_samples(s3, "seed-input")
        assert keys == [key for key, _, _ in local.SAMPLES]
        for key, seconds, _ in local.SAMPLES:
            obj = s3.get_object(Bucket="seed-input", Key=key)
            assert obj["ContentType"] == "audio/mpeg"
            # mp3 adds encoder padding of a frame or two, never a whole 50 ms.
            assert _seconds(obj["Body"].read(), tmp_path) == pytest.approx(seconds, abs=0.06)


def test_chalice_config_only_fills_in_what_the_supervisor_left_unset(monkeypatch):
    from devstack.api import _ParentEnvWins

    monkeypatch.setenv("WORK_DIR", "/from/run")
    monkeypatch.delenv("CACHE_PREFIX", raising=False)
    # What chalice's CLIFactory.load_chalice_app does with the stage's environment_variables:
    _ParentEnvWins().update({"WORK_DIR": "/tmp", "CACHE_PREFIX": "cache/"})
    assert os.environ["WORK_DIR"] == "/from/run"
    assert os.environ["CACHE_PREFIX"] == "cache/"


def test_wait_ready_reports_a_child_that_died_while_starting(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait()
    with pytest.raises(local.StackFailed, match="worker exited with status 3 while starting"):
        local.wait_ready({"worker": child}, tmp_path / "api.port", [tmp_path / "w.ready"], timeout=60)


def test_wait_ready_gives_up_when_nothing_answers(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "w.ready").write_text("1")
        with pytest.raises(local.StackFailed, match="not ready after 0s"):
            local.wait_ready({"api": child}, tmp_path / "api.port", [tmp_path / "w.ready"], timeout=0.3)
    finally:
        child.kill()
        child.wait()
