"""Shared fixture for the API/service tests: every AWS resource in moto, real ffmpeg audio."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chalicelib.config import Settings
from tests.audio import make_tone

REGION = "us-east-1"
SECRET = "test-webhook-secret"


@dataclass
class Env:
    settings: Settings
    service: object
    s3: object
    sqs: object
    dynamodb: object
    ses: object
    tmp: Path
    urls: dict = field(default_factory=dict)

    def put_tone(self, key: str, seconds: float = 1.0, *, freq: int = 440, **kw) -> str:
        """Generate a tone with ffmpeg and upload it to the input bucket; returns the key."""
        local = self.tmp / "src" / key.replace("/", "_")
        local.parent.mkdir(parents=True, exist_ok=True)
        make_tone(local, seconds, freq=freq, **kw)
        self.s3.upload_file(str(local), self.settings.bucket_input, key)
        return key

    def put_bytes(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.settings.bucket_input, Key=key, Body=data)
        return key

    def download_output(self, key: str, name: str) -> Path:
        out = self.tmp / "out" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(self.settings.bucket_output, key, str(out))
        return out

    def messages(self, queue: str = "queue_url") -> list[dict]:
        """Every message currently receivable on the jobs queue (or the DLQ), made visible again after."""
        url = self.urls[queue]
        got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                       AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
        return got

    def sent_emails(self) -> list:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    def work_dir_entries(self) -> list[str]:
        return sorted(p.name for p in Path(self.settings.work_dir).iterdir())


def make_env(tmp_path: Path, **settings_overrides) -> Env:
    """Create every resource with infra.ensure_resources inside an active moto mock."""
    import boto3

    from chalicelib.bootstrap import build_service
    from infra import ensure_resources

    work = tmp_path / "work"
    work.mkdir()
    settings = Settings(work_dir=str(work), webhook_secret=SECRET, aws_region=REGION, **settings_overrides)
    clients = {name: boto3.client(name, region_name=REGION) for name in ("s3", "sqs", "dynamodb", "ses")}
    urls = ensure_resources(settings, clients)
    service = build_service(settings)
    service.notifier.sleep = lambda _s: None  # retries still happen, without the wall-clock wait
    return Env(settings, service, clients["s3"], clients["sqs"], clients["dynamodb"], clients["ses"],
               tmp_path, urls)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records webhook POSTs; ``statuses`` scripts its answers."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]
