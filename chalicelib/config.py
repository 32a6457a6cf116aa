"""Settings, read once from the environment (set per stage in .chalice/config.json).

Only the standard library is imported here: this module is on the REST path's cold start.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

# The checkout (locally) or /var/task (on Lambda): where app.py, vendor/ and .chalice/ are.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Field name = environment variable name in lower case."""

    stage: str = "dev"
    bucket_input: str = "audio-stitch-input-dev"
    bucket_output: str = "audio-stitch-output-dev"
    cache_prefix: str = "cache/"
    cache_ttl_days: int = 7
    sources_prefix: str = "sources/"
    sources_ttl_days: int = 3
    uploads_prefix: str = "uploads/"
    uploads_ttl_days: int = 1
    queue_name: str = "audio-stitch-jobs-dev.fifo"
    dlq_name: str = "audio-stitch-jobs-dlq-dev.fifo"
    max_receive_count: int = 3
    jobs_table: str = "audio-stitch-jobs-dev"
    job_ttl_days: int = 14
    # The running attempt renews its lease every HEARTBEAT_SECONDS; the sweeper (every minute)
    # sends a job whose lease ran out again: a killed worker's job runs again within
    # lease + 60 s + a poll, and a lease of two heartbeats and a bit survives one slow write.
    job_lease_seconds: int = 45
    heartbeat_seconds: int = 20
    max_attempts: int = 3
    presign_ttl_seconds: int = 3600
    # Largest file a POST /uploads link accepts (S3 enforces it: the policy's content-length-range).
    max_upload_bytes: int = 512 * 1024 * 1024
    inline_max_bytes: int = 25 * 1024 * 1024
    # Inline budget when the result needs a re-encode rather than a frame-level MP3 copy: encoding
    # ran at about 2 MB of 128k MP3 input per second on a 2-core dev box, the API function has about
    # half a core, and API Gateway cuts requests at 29 s.
    inline_encode_max_bytes: int = 8 * 1024 * 1024
    max_parts: int = 100
    sender_email: str = "noreply@example.com"
    webhook_secret: str = ""
    # Deployed stages: without webhook_secret, requests naming a webhook_url are refused (400).
    require_webhook_secret: bool = False
    webhook_attempts: int = 3
    max_source_seconds: int = 1800
    max_source_bytes: int = 512 * 1024 * 1024
    allowed_extractors: tuple[str, ...] = ("youtube", "generic")
    # Off by default and in every deployed stage: lets URL parts and webhooks reach 127.0.0.1
    # (the local stack and the tests serve audio and receive webhooks there).
    allow_loopback_urls: bool = False
    allowed_url_ports: tuple[int, ...] = ()
    # POST routes need an API key (x-api-key); true in every deployed stage.
    require_api_key: bool = False
    # Browser origins allowed to call the API (CORS); empty: no CORS headers at all.
    cors_allow_origins: tuple[str, ...] = ()
    work_dir: str = "/tmp"
    worker_timeout_seconds: int = 900
    aws_region: str = field(default="us-east-1")

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unknown variables are ignored."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if f.name == "aws_region":
                raw = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, tuple):
                items = _list(raw)
                values[f.name] = tuple(int(i) for i in items) if f.name.endswith("ports") else items
            else:
                values[f.name] = raw
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()
