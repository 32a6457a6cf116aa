"""The use cases: submit a stitch, run a job (worker), job status, create an upload.

Written against the adapters (Store, JobStore, JobQueue, Notifier), which are handed in, so the
REST path, the worker, the local stack and the tests all run this same code. The engine and the
URL fetcher are imported only when a job really needs them (cold start of the REST path).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .config import Settings
from .errors import BadRequest, NotFound, TransientError
from .faults import public_error
from .jobs import FAILED, SUCCEEDED, Job, JobQueue, JobStore, notify_marker
from .lease import Heartbeat
from .notify import Notifier
from .options import ENGINE_VERSION, Options, reject_unknown
from .results import StoredResult
from .sources.base import Source
from .spec import JOB_ID, PartIdentity, PartSpec, StitchSpec, cache_key, output_key, parse_request
from .store import Store
from .workdirs import remove_abandoned, work_dir

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 2.0
PROGRESS_STEP = 0.05
_FILENAME_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class _Stored:
    """A stored result with a freshly presigned link; ``cached`` says whether this request made it."""

    result: StoredResult
    url: str
    expires_at: str
    cached: ClassVar[bool]

    def body(self) -> dict:
        return self.result.public(url=self.url, expires_at=self.expires_at, cached=self.cached)


class Cached(_Stored):
    """Answered from the cache."""

    cached = True


class Rendered(_Stored):
    """Made during the request (small enough), and stored as the cache object."""

    cached = False


@dataclass(frozen=True)
class Queued:
    """Handed to the worker: a job, new or joined (``status`` is the job's, maybe already finished)."""

    job_id: str
    status: str = "queued"

    def body(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, "status_url": f"/jobs/{self.job_id}"}


class ProgressReporter:
    """Engine progress -> job record, throttled so a long job makes a few dozen writes, not thousands."""

    def __init__(self, jobs: JobStore, job: Job, *, lo: float = 0.1, hi: float = 0.95, clock=time.monotonic,
                 beat: Heartbeat | None = None):
        self.jobs, self.job, self.lo, self.hi, self.clock, self.beat = jobs, job, lo, hi, clock, beat
        self._last_at = 0.0
        self._last = -1.0

    def __call__(self, *args) -> None:
        # The engine reports a fraction; tolerate (done, total) too.
        try:
            fraction = float(args[0]) / float(args[1]) if len(args) >= 2 else float(args[0])
        except (TypeError, ValueError, ZeroDivisionError, IndexError):
            return
        value = self.lo + (self.hi - self.lo) * min(max(fraction, 0.0), 1.0)
        if self.beat is not None:
            self.beat.progress = value
        now = self.clock()
        if value - self._last < PROGRESS_STEP or now - self._last_at < PROGRESS_INTERVAL_S:
            return
        self._last, self._last_at = value, now
        try:
            self.jobs.set_progress(self.job, value)
        except Exception:  # progress is cosmetic: never fail a job over it
            log.warning("progress update failed for job=%s", self.job.job_id, exc_info=True)


class StitchService:
    """Use cases over injected adapters. ``sources`` maps each kind of part ("key", "url") to the
    Source that reads it (bootstrap.py builds them); ``stitch`` defaults to the engine."""

    def __init__(self, settings: Settings, store: Store, jobs: JobStore, queue: JobQueue, notifier: Notifier,
                 *, sources: Mapping[str, Source], stitch=None, clock=time.time):
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.queue = queue
        self.notifier = notifier
        self._stitch = stitch
        self.sources = sources  # by the request field that names such a part: "key", "url"
        self.clock = clock

    # -- collaborators --------------------------------------------------------------------------
    @property
    def stitch(self):
        if self._stitch is None:
            from .engine import stitch

            self._stitch = stitch
        return self._stitch

    def _by_source(self, parts) -> list[tuple[Source, list[PartSpec]]]:
        """The parts grouped by the source that reads them, in the sources' order."""
        return [(src, group) for kind, src in self.sources.items()
                if (group := [p for p in parts if p.kind == kind])]

    def _identify(self, spec: StitchSpec) -> list[PartIdentity]:
        """Every part's identity, by part index, each from its own kind of source."""
        identities: list[PartIdentity | None] = [None] * len(spec.parts)
        for src, parts in self._by_source(spec.parts):
            for p, ident in zip(parts, src.identify(parts), strict=True):
                identities[p.index] = ident
        return identities

    # -- POST /stitch ---------------------------------------------------------------------------
    def submit(self, body: dict) -> Cached | Rendered | Queued:
        """Validate, then answer from the cache, render inline or queue a job."""
        s = self.settings
        spec = parse_request(body, s)
        identities = self._identify(spec)
        key = cache_key(identities, spec.options)
        if all(i.settled for i in identities):
            hit = self.cached_result(key, spec.options)
            if hit is not None:
                return Cached(hit, *self._link(hit))
            if not spec.force_async and self._fits_inline(spec, identities):
                rendered = self._render_inline(key, spec, identities)
                return Rendered(rendered, *self._link(rendered))
        return self._enqueue(key, spec, identities)

    def _fits_inline(self, spec: StitchSpec, identities: list[PartIdentity]) -> bool:
        """Small enough to render within the request: a frame copy has a larger budget than a re-encode."""
        s = self.settings
        if any(i.size_bytes is None for i in identities):
            return False
        total_bytes = sum(i.size_bytes for i in identities)  # repeats count: they cost render time
        if total_bytes <= min(s.inline_max_bytes, s.inline_encode_max_bytes):
            return True
        if total_bytes > s.inline_max_bytes:
            return False
        # Only here is the guess needed, and the engine package worth importing (it renders next).
        from .engine.estimate import copy_likely

        return copy_likely(spec.options, [(p.name, p.options) for p in spec.parts],
                           sizes=[i.size_bytes for i in identities])

    def _enqueue(self, job_id: str, spec: StitchSpec, identities: list[PartIdentity]) -> Queued:
        """Create or join the job for this cache key, adding this request's notify targets."""
        request = {k: v for k, v in spec.to_dict().items() if k not in ("notify_email", "webhook_url", "async")}
        # URL parts get their identity from the worker (source id); storing the URL twice could push
        # a 100-part record past DynamoDB's 400 KB item limit.
        stored = {"request": request,
                  "identities": [ident.to_dict() if ident.settled else None for ident in identities]}
        emails = [spec.notify_email] if spec.notify_email else []
        webhooks = [spec.webhook_url] if spec.webhook_url else []
        created = self.jobs.create(job_id, stored)
        # Added before reading the job: if it finishes meanwhile, we see it finished (and rerun),
        # otherwise the worker's final read includes our targets.
        self.jobs.add_targets(job_id, emails, webhooks)
        run = 1
        if not created:
            job = self.jobs.get(job_id)
            if job is None:  # expired by TTL between the two calls: start afresh
                return self._enqueue(job_id, spec, identities)
            run = job.run
            if job.finished:
                if self._reusable(job):
                    return Queued(job_id, job.status)
                # Failed, or its result is gone, or someone new wants to hear: run it again. The
                # requeue forgets the old run's targets (they were told); ours are added back below.
                again = self.jobs.requeue(job)
                run = again.run if again is not None else (self.jobs.get(job_id) or job).run
            # Again, in case a concurrent requeue cleared the targets after our first add.
            self.jobs.add_targets(job_id, emails, webhooks)
        # Sent on every submit while queued: FIFO deduplication drops the repeats, and a job whose
        # first send was lost (crash between put and send) gets its message after all.
        self.queue.send(job_id, run)
        return Queued(job_id)

    def _reusable(self, job: Job) -> bool:
        """A finished job that needs no new run: it succeeded, its result is still stored, and
        every target has been told (URL requests reach this; bucket-key ones hit the cache first)."""
        if job.status != SUCCEEDED or not job.result or self._pending_targets(job):
            return False
        return self.store.head(self.settings.bucket_output, job.result["output_key"]) is not None

    @staticmethod
    def _pending_targets(job: Job) -> list[tuple[str, str]]:
        """(kind, target) pairs not yet notified of this run's outcome."""
        targets = [("email", t) for t in sorted(job.emails)] + [("webhook", t) for t in sorted(job.webhooks)]
        return [(k, t) for k, t in targets if notify_marker(job.run, job.status, k, t) not in job.notified]

    # -- cache ------------------------------------------------------------------------------------
    def cached_result(self, key: str, options: Options) -> StoredResult | None:
        """The stored result for ``key`` from one HEAD, or None (absent, or expiring before a link would)."""
        s = self.settings
        obj = output_key(s, key, options)
        info = self.store.head(s.bucket_output, obj)
        if info is None:
            return None
        if info.expires_at is not None and info.expires_at <= self.clock() + s.presign_ttl_seconds:
            # Lifecycle will delete it while the link is still valid: treat as a miss and re-render
            # (the new PUT restarts the object's lifecycle clock).
            return None
        try:
            sidecar = (self.store.get_json(s.bucket_output, f"{obj}.json")
                       if StoredResult.needs_sidecar(info.metadata) else None)
            return StoredResult.from_metadata(key, obj, options.format, info.size, info.metadata, sidecar)
        except (KeyError, ValueError):
            log.warning("cache object %s has no usable metadata; re-rendering", obj)
            return None

    def _link(self, result: StoredResult) -> tuple[str, str]:
        """A freshly presigned GET of the result, and when it expires."""
        return self.store.presign_get(self.settings.bucket_output, result.output_key,
                                      self.settings.presign_ttl_seconds)

    # -- rendering (inline and worker) --------------------------------------------------------------
    def _workdir(self, label: str):
        # Lambda keeps /tmp: first clear what a killed render (ours or an earlier sandbox's) left.
        remove_abandoned(self.settings.work_dir)
        return work_dir(self.settings.work_dir, label)

    def _render_inline(self, key: str, spec: StitchSpec, identities: list[PartIdentity]) -> StoredResult:
        with self._workdir(key) as workdir:
            paths = self._fetch(spec, identities, workdir, inline=True)
            return self._render(key, spec, paths, workdir, progress=None)

    def _fetch(self, spec: StitchSpec, identities: list[PartIdentity], workdir: Path, *, inline: bool,
               progress=None) -> dict[int, Path]:
        paths: dict[int, Path] = {}
        for src, parts in self._by_source(spec.parts):
            paths.update(src.fetch(parts, identities, workdir, inline=inline, progress=progress))
        return paths

    def _render(self, key: str, spec: StitchSpec, paths: dict[int, Path], workdir: Path,
                progress) -> StoredResult:
        """Run the engine over local files and store the result as the cache object (one write)."""
        from .engine import PartInput

        s = self.settings
        fmt = spec.options.output_format
        inputs = [PartInput(path=paths[p.index], options=p.options, name=p.name) for p in spec.parts]
        output = workdir / f"output.{fmt.extension}"
        result = self.stitch(inputs, output, spec.options, progress=progress)
        stored = StoredResult.from_engine(key, output_key(s, key, spec.options), result, output.stat().st_size)
        sidecar = stored.sidecar()
        if sidecar is not None:
            # Written first, so any reader that sees the audio object also finds its sidecar.
            self.store.put_json(s.bucket_output, f"{stored.output_key}.json", sidecar)
        self.store.upload(output, s.bucket_output, stored.output_key, content_type=fmt.content_type,
                          filename=f"stitched-{key[:12]}.{fmt.extension}", metadata=stored.metadata(ENGINE_VERSION))
        return stored

    # -- the worker ------------------------------------------------------------------------------
    def run_job(self, job_id: str, *, receive_count: int = 1) -> str:
        """Process one queue message. Returns the outcome; raises only when SQS should retry.

        Permanent errors fail the job at once. Transient ones release the job and raise; on the
        last receive (``max_receive_count``) the job is marked failed first, then the message
        goes on to the dead-letter queue.
        """
        started = time.monotonic()
        outcome, attempt = "?", 0
        try:
            outcome, attempt = self._run_job(job_id, receive_count)
            return outcome
        except BaseException as exc:
            outcome = f"retry ({type(exc).__name__})"
            raise
        finally:
            log.info("job=%s outcome=%s attempt=%s receive=%d seconds=%.2f", job_id, outcome, attempt,
                     receive_count, time.monotonic() - started)

    def _run_job(self, job_id: str, receive_count: int) -> tuple[str, int]:
        job = self.jobs.get(job_id)
        if job is None:
            log.warning("job=%s: no record (expired or never created); dropping the message", job_id)
            return "missing", 0
        if job.finished:
            self.notify(job)  # completes notifications of an attempt that died right after finishing
            return "noop", job.attempts
        claimed = self.jobs.claim(job_id, self.settings.job_lease_seconds)
        if claimed is None:
            job = self.jobs.get(job_id)
            if job is None or job.finished:
                if job is not None:
                    self.notify(job)
                return "noop", 0
            if receive_count >= self.settings.max_receive_count:
                # Another attempt holds a live lease and will finish the job; don't fail it under it.
                return "busy", job.attempts
            raise TransientError(f"job {job_id} is running under another attempt's lease")
        s = self.settings
        last = receive_count >= s.max_receive_count or claimed.attempts >= s.max_attempts
        try:
            with Heartbeat(self.jobs, claimed, s.heartbeat_seconds, s.job_lease_seconds) as beat:
                result = self._execute(claimed, beat)
        except Exception as exc:
            error = public_error(exc, where=f"job={job_id}")
            if error is not None and error.permanent:
                self._finish(claimed, FAILED, error=error.to_dict())
                return "failed", claimed.attempts
            reason = error.message if error is not None else f"internal error ({type(exc).__name__})"
            if error is None:
                log.exception("job=%s attempt=%d: unexpected error", job_id, claimed.attempts)
            if last:
                self._finish(claimed, FAILED, error={
                    "code": "transient",
                    "message": f"gave up after {max(receive_count, claimed.attempts)} attempts: {reason}"})
            else:
                self.jobs.release(claimed)
            raise
        self._finish(claimed, SUCCEEDED, result=result)
        return "succeeded", claimed.attempts

    def _finish(self, job: Job, status: str, **kwargs) -> None:
        done = self.jobs.finish(job, status, **kwargs)
        if done is None:
            log.warning("job=%s attempt=%d lost its lease before finishing; outcome dropped",
                        job.job_id, job.attempts)
            return
        self.notify(done)

    def _execute(self, job: Job, beat: Heartbeat | None = None) -> dict:
        """Settle what the request could not identify, check the content cache, fetch, render, store."""
        s = self.settings
        spec = StitchSpec.from_dict(job.spec["request"], s)
        identities = [PartIdentity.from_dict(i) if i is not None else None for i in job.spec["identities"]]
        with self._workdir(job.job_id) as workdir:
            for src, parts in self._by_source([p for p in spec.parts if identities[p.index] is None]):
                for p, ident in zip(parts, src.settle(parts), strict=True):
                    identities[p.index] = ident
            key = cache_key(identities, spec.options)
            hit = self.cached_result(key, spec.options)
            if hit is not None:
                return hit.to_record(cached=True)
            # Fetching is the first tenth of the progress bar, the engine the rest.
            fetching = ProgressReporter(self.jobs, job, lo=0.0, hi=0.1, beat=beat)
            paths = self._fetch(spec, identities, workdir, inline=False, progress=fetching)
            progress = ProgressReporter(self.jobs, job, beat=beat)
            progress(0.0)
            return self._render(key, spec, paths, workdir, progress).to_record(cached=False)

    # -- notifications -----------------------------------------------------------------------------
    def notify(self, job: Job) -> None:
        """Tell every target about this run's outcome, each at most once (conditional markers)."""
        pending = self._pending_targets(job) if job.finished else []
        if not pending:
            return
        view = self.job_view(job)
        for kind, target in pending:
            if self.jobs.mark_notified(job.job_id, notify_marker(job.run, job.status, kind, target)):
                if kind == "email":
                    self.notifier.email(target, view)
                else:
                    self.notifier.webhook(target, view)

    # -- GET /jobs/{id} ------------------------------------------------------------------------------
    def job_view(self, job: Job) -> dict:
        """The job as the API shows it; a stored result comes with a fresh link, an expired one with none."""
        body = job.public()
        if job.result is not None:
            stored = StoredResult.from_record(job.result)
            url, expires_at = self._link(stored)
            result = stored.public(url=url, expires_at=expires_at, cached=bool(job.result.get("cached")))
            # Job records outlive cached results (JOB_TTL_DAYS > CACHE_TTL_DAYS): never hand out
            # a link to an object the lifecycle rule has already deleted.
            if self.store.head(self.settings.bucket_output, job.result["output_key"]) is None:
                result.update(public_url=None, expires_at=None, expired=True)
            body["result"] = result
        return body

    def job_status(self, job_id: str) -> dict:
        """The job as JSON, with a fresh link when it succeeded; NotFound for unknown ids."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise NotFound(f"no job {job_id!r}", field="job_id")
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", field="job_id")
        return self.job_view(job)

    # -- POST /uploads -------------------------------------------------------------------------------
    def create_upload(self, body: dict) -> dict:
        """A presigned POST into the input bucket under ``uploads/`` (at most MAX_UPLOAD_BYTES); the key
        is then usable as a part."""
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object", field="body")
        reject_unknown(body, {"filename"})
        name = body.get("filename")
        if name is None:
            raise BadRequest("filename is required", field="filename")
        if not isinstance(name, str):
            raise BadRequest(f"filename must be a string, got {type(name).__name__}", field="filename")
        if not name.strip() or len(name) > 200 or name in (".", "..") or _FILENAME_BAD.search(name) or ".." in name:
            raise BadRequest("filename must be a plain file name (1-200 characters, no '/', '\\' or '..')",
                             field="filename")
        s = self.settings
        key = f"{s.uploads_prefix}{uuid.uuid4().hex}/{name}"
        url, fields, expires_at = self.store.presign_post(s.bucket_input, key, s.presign_ttl_seconds,
                                                          s.max_upload_bytes)
        return {"key": key, "upload_url": url, "method": "POST", "fields": fields,
                "max_bytes": s.max_upload_bytes, "expires_at": expires_at}
