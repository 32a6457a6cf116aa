"""In-memory stand-ins for the service's adapters and the engine, keeping the same contracts.

The service's branches are tested against these in milliseconds; the real adapters are tested
against moto (test_store, test_jobs, test_sources_fetch) and the wiring end to end in
test_service_wiring and test_app. Each fake keeps only the behaviour the service relies on:
None for absent objects, ObjectMissing / ObjectChanged on a download, conditional job writes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chalicelib.engine.types import PartSpan, Result
from chalicelib.errors import UnsupportedAudio
from chalicelib.jobs import FINISHED, QUEUED, RUNNING, Job
from chalicelib.store import ObjectChanged, ObjectInfo, ObjectMissing, iso

# -- S3 ---------------------------------------------------------------------------------------------


@dataclass
class _Object:
    data: bytes
    metadata: dict
    content_type: str = ""
    filename: str = ""

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data).hexdigest()  # noqa: S324 - what S3 uses for a single PUT


class FakeStore:
    """The ``Store`` adapter over a dict; ``expires_in`` plays S3's lifecycle expiry header."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.objects: dict[tuple[str, str], _Object] = {}
        self.heads: list[str] = []
        self.downloads: list[str] = []
        self.expires_in: float | None = None
        self._lock = threading.Lock()

    # test helpers
    def put(self, bucket: str, key: str, data: bytes, metadata: dict | None = None) -> str:
        with self._lock:
            self.objects[(bucket, key)] = _Object(bytes(data), {k.lower(): v for k, v in (metadata or {}).items()})
        return key

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def keys(self, bucket: str) -> list[str]:
        return sorted(k for b, k in self.objects if b == bucket)

    def data(self, bucket: str, key: str) -> bytes:
        return self.objects[(bucket, key)].data

    # the Store contract
    def _info(self, bucket: str, key: str, obj: _Object) -> ObjectInfo:
        expires = self.clock() + self.expires_in if self.expires_in is not None else None
        return ObjectInfo(bucket=bucket, key=key, size=len(obj.data), etag=obj.etag, expires_at=expires,
                          metadata=dict(obj.metadata))

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self.heads.append(key)
        obj = self.objects.get((bucket, key))
        return None if obj is None else self._info(bucket, key, obj)

    def head_many(self, bucket: str, keys: list[str]) -> list[ObjectInfo | None]:
        return [self.head(bucket, k) for k in keys]

    def list_prefix(self, bucket: str, prefix: str, *, max_keys: int = 1000) -> list[ObjectInfo]:
        return [self._info(bucket, k, self.objects[(bucket, k)]) for k in self.keys(bucket)
                if k.startswith(prefix)][:max_keys]

    def download(self, bucket: str, key: str, path: Path, *, etag: str | None = None,
                 version_id: str | None = None) -> Path:
        self.downloads.append(key)
        obj = self.objects.get((bucket, key))
        if obj is None:
            raise ObjectMissing(key)
        if etag and etag != obj.etag:
            raise ObjectChanged(key)
        Path(path).write_bytes(obj.data)
        return Path(path)

    def get_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        self.download(bucket, key, path)
        return self._info(bucket, key, self.objects[(bucket, key)])

    def upload(self, path: Path, bucket: str, key: str, *, content_type: str, filename: str,
               metadata: dict | None = None) -> None:
        with self._lock:
            self.objects[(bucket, key)] = _Object(Path(path).read_bytes(), dict(metadata or {}), content_type, filename)

    def put_file(self, path: Path, bucket: str, key: str, *, metadata: dict | None = None) -> None:
        self.put(bucket, key, Path(path).read_bytes(), metadata)

    def put_json(self, bucket: str, key: str, data: dict) -> None:
        self.put(bucket, key, json.dumps(data).encode())

    def get_json(self, bucket: str, key: str) -> dict | None:
        obj = self.objects.get((bucket, key))
        return None if obj is None else json.loads(obj.data)

    def presign_get(self, bucket: str, key: str, ttl: int) -> tuple[str, str]:
        return f"https://{bucket}.s3.test/{key}?X-Amz-Expires={ttl}", iso(self.clock() + ttl)

    def presign_post(self, bucket: str, key: str, ttl: int, max_bytes: int) -> tuple[str, dict, str]:
        fields = {"key": key, "x-max-bytes": str(max_bytes), "x-expires": str(ttl)}
        return f"https://{bucket}.s3.test/", fields, iso(self.clock() + ttl)


# -- DynamoDB + SQS -----------------------------------------------------------------------------------


class FakeJobStore:
    """``JobStore``'s conditional writes over a dict: each one checks and writes under one lock."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self.records: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _update(self, job_id: str, condition, change) -> Job | None:
        with self._lock:
            job = self.records.get(job_id)
            if job is None or not condition(job):
                return None
            change(job)
            job.updated_at = self.clock()
            return copy.deepcopy(job)

    def create(self, job_id: str, spec: dict) -> bool:
        with self._lock:
            if job_id in self.records:
                return False
            now = self.clock()
            self.records[job_id] = Job(job_id, QUEUED, spec=json.loads(json.dumps(spec)), created_at=now,
                                       updated_at=now)
            return True

    def add_targets(self, job_id: str, emails: list[str], webhooks: list[str]) -> None:
        if emails or webhooks:
            self._update(job_id, lambda j: True, lambda j: (j.emails.update(emails), j.webhooks.update(webhooks)))

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self.records.get(job_id)
            return copy.deepcopy(job) if job is not None else None

    def requeue(self, job: Job) -> Job | None:
        def change(j: Job) -> None:
            j.status, j.run, j.progress, j.lease_until = QUEUED, job.run + 1, 0.0, 0.0
            j.result = j.error = None
            j.emails, j.webhooks = set(), set()

        return self._update(job.job_id, lambda j: j.status == job.status and j.run == job.run, change)

    def claim(self, job_id: str, lease_seconds: int) -> Job | None:
        now = self.clock()

        def change(j: Job) -> None:
            j.status, j.lease_until, j.attempts = RUNNING, now + lease_seconds, j.attempts + 1

        return self._update(job_id, lambda j: j.status == QUEUED or (j.status == RUNNING and j.lease_until < now),
                            change)

    def _owned(self, job: Job):
        return lambda j: j.status == RUNNING and j.attempts == job.attempts

    def release(self, job: Job) -> bool:
        def change(j: Job) -> None:
            j.status, j.lease_until = QUEUED, 0.0

        return self._update(job.job_id, self._owned(job), change) is not None

    def set_progress(self, job: Job, fraction: float) -> bool:
        def change(j: Job) -> None:
            j.progress = round(min(max(fraction, 0.0), 1.0), 4)

        return self._update(job.job_id, self._owned(job), change) is not None

    def finish(self, job: Job, status: str, *, result: dict | None = None, error: dict | None = None) -> Job | None:
        assert status in FINISHED

        def change(j: Job) -> None:
            j.status, j.lease_until = status, 0.0
            if result is not None:
                j.result, j.progress = json.loads(json.dumps(result)), 1.0
            if error is not None:
                j.error = json.loads(json.dumps(error))

        return self._update(job.job_id, self._owned(job), change)

    def mark_notified(self, job_id: str, marker: str) -> bool:
        return self._update(job_id, lambda j: marker not in j.notified, lambda j: j.notified.add(marker)) is not None


class FakeQueue:
    """The FIFO queue: a send repeating a (job, run) already sent is dropped, as deduplication does."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def send(self, job_id: str, run: int = 1) -> None:
        if (job_id, run) not in self.sent:
            self.sent.append((job_id, run))

    def dedup_ids(self) -> list[str]:
        return sorted(job_id if run == 1 else f"{job_id}-{run}" for job_id, run in self.sent)


# -- SES + webhooks ------------------------------------------------------------------------------------


class FakeNotifier:
    def __init__(self):
        self.sent: list[tuple[str, str, dict]] = []

    def email(self, to: str, job: dict) -> bool:
        self.sent.append(("email", to, job))
        return True

    def webhook(self, url: str, job: dict) -> bool:
        self.sent.append(("webhook", url, job))
        return True

    def emails(self) -> list[str]:
        return sorted(t for kind, t, _ in self.sent if kind == "email")


# -- the engine ----------------------------------------------------------------------------------------

FAKE_AUDIO = b"FAKEAUDIO "
BYTES_PER_SECOND = 16_000  # about a 128 kb/s MP3: keeps the inline budgets meaningful


def fake_audio(seconds: float) -> bytes:
    """What FakeEngine reads as ``seconds`` of audio; anything else it refuses as not audio."""
    head = FAKE_AUDIO + f"{seconds:.6f}\n".encode()
    return head + b"\0" * max(0, int(seconds * BYTES_PER_SECOND) - len(head))


@dataclass
class FakeEngine:
    """``engine.stitch``'s contract: durations from trims, copy vs exact from the join policy and
    the parts, UnsupportedAudio naming the part; ``failures`` first calls raise ``exc``."""

    failures: int = 0
    exc: BaseException | None = None
    calls: list = field(default_factory=list)

    def __call__(self, parts, output_path, options, progress=None) -> Result:
        self.calls.append((list(parts), options))
        if len(self.calls) <= self.failures:
            raise self.exc
        spans, at = [], 0.0
        for i, part in enumerate(parts):
            data = Path(part.path).read_bytes()
            if not data.startswith(FAKE_AUDIO):
                raise UnsupportedAudio(f"part {i} ({part.label}): not an audio file", part=i)
            seconds = float(data[len(FAKE_AUDIO):].split(b"\n", 1)[0])
            o = part.options
            length = min(o.end_s if o.end_s is not None else seconds, seconds) - (o.start_s or 0.0)
            spans.append(PartSpan(i, at, at + length))
            at += length
            if progress is not None:
                progress((i + 1) / len(parts))
        copies = options.join != "exact" and not options.needs_decode and options.format == "mp3" and all(
            p.options.is_identity for p in parts)
        with open(output_path, "wb") as out:
            for part in parts:
                with open(part.path, "rb") as src:
                    shutil.copyfileobj(src, out)
        return Result(at, options.format, Path(output_path).stat().st_size, "copy" if copies else "exact",
                      spans, added_silence_ms=26.0 if copies and len(parts) > 1 else 0.0)


# -- the service over all of them ----------------------------------------------------------------------


class FakeUrlSource:
    """URL parts without a network: ``media`` maps a URL to (source id, seconds); others are unavailable."""

    kind = "url"

    def __init__(self, media: dict[str, tuple[str, float]] | None = None):
        self.media = dict(media or {})
        self.fetched: list[str] = []

    def identify(self, parts):
        from chalicelib.spec import PartIdentity

        return [PartIdentity.of_url(p) for p in parts]

    def settle(self, parts):
        from chalicelib.errors import SourceUnavailable
        from chalicelib.spec import PartIdentity

        out = []
        for p in parts:
            if p.url not in self.media:
                raise SourceUnavailable(f"part {p.index} ({p.url}): HTTP 404 not found", part=p.index)
            out.append(PartIdentity.of_source(p, self.media[p.url][0]))
        return out

    def fetch(self, parts, identities, workdir, *, inline, progress=None):
        paths = {}
        for n, p in enumerate(parts, 1):
            self.fetched.append(p.url)
            paths[p.index] = Path(workdir) / f"url-{p.index}.mp3"
            paths[p.index].write_bytes(fake_audio(self.media[p.url][1]))
            if progress is not None:
                progress(n / len(parts))
        return paths


@dataclass
class FakeEnv:
    settings: object
    service: object
    store: FakeStore
    jobs: FakeJobStore
    queue: FakeQueue
    notifier: FakeNotifier
    engine: FakeEngine
    urls: FakeUrlSource

    def put_audio(self, key: str, seconds: float = 1.0) -> str:
        return self.store.put(self.settings.bucket_input, key, fake_audio(seconds))

    def put_bytes(self, key: str, data: bytes) -> str:
        return self.store.put(self.settings.bucket_input, key, data)

    def output_keys(self) -> list[str]:
        return self.store.keys(self.settings.bucket_output)

    def work_dir_entries(self) -> list[str]:
        return sorted(p.name for p in Path(self.settings.work_dir).iterdir())


def make_fake_env(tmp_path: Path, *, engine: FakeEngine | None = None, **settings_overrides) -> FakeEnv:
    """The real StitchService and BucketSource over fakes of everything that does I/O or runs ffmpeg."""
    from chalicelib.config import Settings
    from chalicelib.service import StitchService
    from chalicelib.sources.bucket import BucketSource

    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    settings = Settings(work_dir=str(work), **settings_overrides)
    store, jobs, queue, notifier = FakeStore(), FakeJobStore(), FakeQueue(), FakeNotifier()
    engine = engine or FakeEngine()
    urls = FakeUrlSource()
    service = StitchService(settings, store, jobs, queue, notifier, stitch=engine,
                            sources={"key": BucketSource(store, settings), "url": urls})
    return FakeEnv(settings, service, store, jobs, queue, notifier, engine, urls)
