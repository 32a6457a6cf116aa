"""The composition root: boto3 clients, the adapters over them, and the service they make up.

Entrypoints (app.py, the local stack) call ``build_service``; nothing else builds boto3 clients.
"""
from __future__ import annotations

import threading

from .config import Settings, get_settings
from .jobs import JobQueue, JobStore
from .notify import Notifier
from .service import StitchService
from .sources.bucket import BucketSource
from .sources.cache import SourceCache
from .sources.url import UrlSource
from .store import Store

_CLIENT_LOCK = threading.Lock()  # boto3 sessions are not safe for concurrent client creation


class LazyClient:
    """A boto3 client built on first use: a cache hit never loads the DynamoDB, SQS or SES models
    (about 60-80 ms each on a cold start)."""

    def __init__(self, factory):
        self._factory = factory
        self._client = None

    @property
    def client(self):
        if self._client is None:
            with _CLIENT_LOCK:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def __getattr__(self, name):
        return getattr(self.client, name)


# The REST path's AWS deadlines: a hung call costs at most 2 x (1 + 3) s plus a backoff, and a
# request makes its calls one after another, so the first hung one answers 503 in under 10 s.
API_CONNECT_TIMEOUT_S = 1
API_READ_TIMEOUT_S = 3
API_MAX_ATTEMPTS = 2


def build_service(settings: Settings | None = None, *, role: str = "worker", **overrides) -> StitchService:
    """Wire the real adapters to boto3 clients (AWS_ENDPOINT_URL is honoured by boto3 itself).

    ``role="api"``: short connect/read timeouts and one retry, so a request whose AWS call hangs
    answers 503 within a few seconds rather than at API Gateway's 29 s; the worker waits longer.
    """
    import boto3
    from botocore.config import Config

    settings = settings or get_settings()
    session = boto3.session.Session(region_name=settings.aws_region)
    if role == "api":
        base = Config(retries={"mode": "standard", "total_max_attempts": API_MAX_ATTEMPTS},
                      connect_timeout=API_CONNECT_TIMEOUT_S, read_timeout=API_READ_TIMEOUT_S)
    else:
        base = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=60)

    def client(name: str, config: Config = base) -> LazyClient:
        return LazyClient(lambda: session.client(name, config=config))

    store = Store(client("s3", base.merge(Config(signature_version="s3v4"))))
    jobs = JobStore(client("dynamodb"), settings.jobs_table, ttl_days=settings.job_ttl_days)
    queue = JobQueue(client("sqs"), settings.queue_name)
    notifier = Notifier(client("ses"), settings)
    sources = {"key": BucketSource(store, settings), "url": UrlSource(settings, SourceCache(store, settings))}
    return StitchService(settings, store, jobs, queue, notifier, **{"sources": sources, **overrides})
