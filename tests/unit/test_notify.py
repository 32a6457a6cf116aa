"""Notifications: SES e-mail read back from moto; webhooks to a real receiver on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac

import boto3
import pytest
from moto import mock_aws

from chalicelib.config import Settings
from chalicelib.notify import Notifier, sign, verify, webhook_body
from tests.integration.stitchenv import SECRET, Receiver

JOB = {"job_id": "f" * 64, "status": "succeeded",
       "result": {"public_url": "https://x/y.mp3", "format": "mp3", "duration_s": 3.0, "expires_at": "T"}}
LOOPBACK = Settings(allow_loopback_urls=True, webhook_secret=SECRET, webhook_attempts=3)


def notifier(settings=LOOPBACK, ses=None):
    sleeps = []
    n = Notifier(ses, settings, sleep=sleeps.append, timeout=2.0)
    n.sleeps = sleeps
    return n


def test_sign_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"a":1}'
    expected = "t=1700000000,v1=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, "k", timestamp=1700000000) == expected
    now = 1700000000 + 10
    assert verify(body, "k", expected, now=now)
    assert not verify(body + b" ", "k", expected, now=now)
    assert not verify(body, "other", expected, now=now)
    assert not verify(body, "k", "", now=now) and not verify(body, "k", "v1=abc", now=now)
    # The timestamp is covered by the MAC: moving it forward breaks the signature.
    assert not verify(body, "k", expected.replace("t=1700000000", "t=1700000100"), now=now)


def test_verify_rejects_replays_outside_five_minutes():
    body = b"{}"
    header = sign(body, "k", timestamp=1_000_000)
    assert verify(body, "k", header, now=1_000_000 + 300) and verify(body, "k", header, now=1_000_000 - 300)
    assert not verify(body, "k", header, now=1_000_000 + 301)
    assert not verify(body, "k", header, now=1_000_000 - 301)


def test_the_readme_snippet_verifies_a_real_signature():
    # The receiver code users copy must agree with what we send.
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"```python\n(# verify-webhook.*?)```", readme, re.S).group(1)
    body = b'{"job_id":"j"}'
    namespace = {}
    exec(snippet, namespace)
    assert namespace["verify_webhook"](body, sign(body, "k"), "k") is True
    assert namespace["verify_webhook"](body, sign(body, "k", timestamp=1), "k") is False
    assert namespace["verify_webhook"](body + b"x", sign(body, "k"), "k") is False


def test_webhook_posts_signed_job_json():
    with Receiver() as rx:
        assert notifier().webhook(rx.url, JOB) is True
    [req] = rx.requests
    assert req["body"] == webhook_body(JOB)
    assert verify(req["body"], SECRET, req["headers"]["X-Signature"])
    assert req["headers"]["Content-Type"] == "application/json"
    assert rx.bodies() == [JOB]


def test_webhook_retries_5xx_and_429_with_backoff_then_succeeds():
    with Receiver([500, 429]) as rx:
        n = notifier()
        assert n.webhook(rx.url, JOB) is True
    assert len(rx.requests) == 3 and n.sleeps == [0.5, 1.0]
    assert len({r["headers"]["X-Signature"] for r in rx.requests}) == 1


def test_webhook_gives_up_after_the_configured_attempts():
    with Receiver([503] * 10) as rx:
        assert notifier().webhook(rx.url, JOB) is False
    assert len(rx.requests) == LOOPBACK.webhook_attempts


@pytest.mark.parametrize("status", [400, 404, 302])
def test_webhook_does_not_retry_client_errors_or_follow_redirects(status):
    with Receiver([status]) as rx:
        assert notifier().webhook(rx.url, JOB) is False
    assert len(rx.requests) == 1  # and the redirect target (port 9) was never contacted


def test_webhook_to_a_refused_address_is_never_sent():
    with Receiver() as rx:
        assert notifier(Settings(webhook_secret=SECRET)).webhook(rx.url, JOB) is False
    assert rx.requests == []


def test_webhook_url_http_client_cannot_send_fails_without_raising():
    with Receiver() as rx:
        n = notifier()
        assert n.webhook(rx.url + "/caf\u00e9", JOB) is False  # the request line must be ASCII
    assert rx.requests == [] and n.sleeps == []


def test_webhook_to_a_closed_port_fails_after_retries():
    with Receiver() as rx:
        url = rx.url
    n = notifier()
    assert n.webhook(url, JOB) is False and len(n.sleeps) == LOOPBACK.webhook_attempts - 1


def test_email_is_sent_through_ses():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    with mock_aws():
        ses = boto3.client("ses", region_name="us-east-1")
        ses.verify_email_identity(EmailAddress=LOOPBACK.sender_email)
        n = notifier(ses=ses)
        assert n.email("user@example.com", JOB) is True
        failed = {"job_id": "e" * 64, "status": "failed", "error": {"message": "part 2 (b.txt): not audio", "part": 2}}
        assert n.email("user@example.com", failed) is True
        sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
        assert [m.destinations["ToAddresses"] for m in sent] == [["user@example.com"]] * 2
        assert sent[0].source == LOOPBACK.sender_email
        assert "https://x/y.mp3" in sent[0].body and "ready" in sent[0].subject
        assert "not audio" in sent[1].body and "(part 2)" in sent[1].body


def test_email_rejected_by_ses_is_reported_not_raised():
    with mock_aws():
        ses = boto3.client("ses", region_name="us-east-1")  # sender never verified: SES refuses
        assert notifier(ses=ses).email("user@example.com", JOB) is False


def test_webhook_host_that_re_resolves_to_loopback_is_refused_at_connect_time(monkeypatch):
    """DNS rebinding: check_url sees a public address, the connection would go to 127.0.0.1."""
    import socket

    calls = []
    with Receiver() as rx:
        port = rx.server.server_port

        def rebinding(host, port_, *args, **kwargs):
            calls.append(host)
            ip = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))]

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        settings = Settings(webhook_secret=SECRET, allowed_url_ports=(port,))
        n = Notifier(None, settings, sleep=lambda _s: None, timeout=2.0)
        assert n.webhook(f"http://hooks.example.com:{port}/hook", JOB) is False
    assert rx.requests == []
    assert calls == ["hooks.example.com"] * 2  # the check, then the guarded dial; no retries


def test_webhook_to_a_receiver_that_does_not_speak_http_fails_without_raising():
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"garbage\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        n = notifier()
        assert n.webhook(f"http://127.0.0.1:{port}/hook", JOB) is False
    finally:
        server.close()
    assert len(n.sleeps) == LOOPBACK.webhook_attempts - 1
