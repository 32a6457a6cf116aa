"""A small client for the audio-stitch API (deployed, or `make run`): standard library only.

    from audio_stitch.client import Client
    api = Client("http://127.0.0.1:8000", api_key=None)
    key = api.upload("intro.mp3")                       # POST /uploads, then straight to S3
    result = api.stitch([key, "samples/outro.mp3"], format="mp3", gap_ms=250)
    api.download(result, "show.mp3")                    # temp file + rename

Results are dataclasses; an error answer is raised as ApiError (its ``code``, ``field`` and
``part`` are the API's); a job that failed is JobFailed; no answer at all is ConnectionFailed.
"""
from __future__ import annotations

import http.client
import itertools
import json
import mimetypes
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 256 * 1024
# How often wait() polls GET /jobs/{id}, growing from the first to the last value.
POLL_INTERVALS = (0.25, 0.5, 1.0, 2.0)


class ClientError(Exception):
    """Base of everything this module raises."""


class ConnectionFailed(ClientError):
    """No HTTP answer: the API (or S3) is down, unreachable, or timed out."""


class ApiError(ClientError):
    """The API answered with an error: ``status`` plus the body's ``error`` object."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 part: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.part, self.retry_after = field, part, retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class JobFailed(ApiError):
    """A queued job ended ``failed``; ``job`` is its last state."""

    def __init__(self, job: Job):
        err = job.error or {}
        super().__init__(200, err.get("code", "internal_error"), err.get("message", "the job failed"),
                         field=err.get("field"), part=err.get("part"))
        self.job = job


@dataclass(frozen=True)
class PartPlacement:
    """Where part ``index`` sits in the output, in seconds."""

    index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class StitchResult:
    """A finished stitch: the 200 body of POST /stitch, or a succeeded job's ``result``."""

    public_url: str | None
    cached: bool
    cache_key: str
    duration_s: float
    format: str
    size_bytes: int
    mode: str
    parts: tuple[PartPlacement, ...]
    expires_at: str | None
    join: str | None = None
    added_silence_ms: float | None = None
    expired: bool = False
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict) -> StitchResult:
        return cls(
            public_url=data.get("public_url"), cached=bool(data.get("cached")), cache_key=data.get("cache_key", ""),
            duration_s=float(data.get("duration_s", 0.0)), format=data.get("format", ""),
            size_bytes=int(data.get("size_bytes", 0)), mode=data.get("mode", ""),
            parts=tuple(PartPlacement(int(p["index"]), float(p["start_s"]), float(p["end_s"]))
                        for p in data.get("parts", [])),
            expires_at=data.get("expires_at"), join=data.get("join"),
            added_silence_ms=data.get("added_silence_ms"), expired=bool(data.get("expired")), raw=data,
        )


@dataclass(frozen=True)
class Ticket:
    """A queued job (202): poll ``job_id``."""

    job_id: str
    status: str
    status_url: str


@dataclass(frozen=True)
class Job:
    """GET /jobs/{id}."""

    job_id: str
    status: str
    progress: float
    result: StitchResult | None = None
    error: dict | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        result = data.get("result")
        return cls(job_id=data["job_id"], status=data["status"], progress=float(data.get("progress") or 0.0),
                   result=StitchResult.from_dict(result) if result else None, error=data.get("error"), raw=data)


@dataclass(frozen=True)
class UploadSlot:
    """POST /uploads: where to send the file's bytes; ``key`` is then usable as a part.

    ``method`` PUT: the body is the file. POST: a multipart form of ``fields`` plus the file.
    """

    key: str
    url: str
    method: str
    fields: dict
    expires_at: str | None

    @classmethod
    def from_dict(cls, data: dict) -> UploadSlot:
        fields = data.get("fields") or {}
        method = (data.get("method") or ("POST" if fields else "PUT")).upper()
        return cls(key=data["key"], url=data.get("upload_url") or data["url"], method=method,
                   fields=dict(fields), expires_at=data.get("expires_at"))


Progress = Callable[[float], None]


class Client:
    """One API base URL (``http://127.0.0.1:8000``, or the URL `chalice deploy` printed)."""

    def __init__(self, api: str, api_key: str | None = None, *, timeout: float = 60.0):
        if not api or urllib.parse.urlsplit(api).scheme not in ("http", "https"):
            raise ClientError(f"the API URL must start with http:// or https://, got {api!r}")
        self.api = api.rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout

    # -- the routes ---------------------------------------------------------------------------
    def health(self) -> dict:
        return self._call("GET", "/health")

    def create_upload(self, filename: str) -> UploadSlot:
        return UploadSlot.from_dict(self._call("POST", "/uploads", {"filename": filename}))

    def submit(self, message_parts: list, **options) -> StitchResult | Ticket:
        """POST /stitch: a StitchResult (200) or a Ticket (202). Use ``async_=True`` for ``async``."""
        body = {"message_parts": list(message_parts), **_options(options)}
        data, status = self._call("POST", "/stitch", body, with_status=True)
        if status == 202:
            return Ticket(data["job_id"], data["status"], data.get("status_url", f"/jobs/{data['job_id']}"))
        return StitchResult.from_dict(data)

    def job(self, job_id: str) -> Job:
        return Job.from_dict(self._call("GET", f"/jobs/{urllib.parse.quote(job_id, safe='')}"))

    # -- composed ------------------------------------------------------------------------------
    def wait(self, job_id: str, *, progress: Progress | None = None, timeout: float | None = None,
             sleep=time.sleep) -> StitchResult:
        """Poll until the job is done; its result, or JobFailed. ``progress`` gets 0..1."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in itertools.count():
            job = self.job(job_id)
            if progress is not None:
                progress(1.0 if job.status == "succeeded" else job.progress)
            if job.status == "failed":
                raise JobFailed(job)
            if job.status == "succeeded" and job.result is not None:
                return job.result
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {job.status} after {timeout:g} s")
            sleep(POLL_INTERVALS[min(attempt, len(POLL_INTERVALS) - 1)])
        raise AssertionError("unreachable")  # itertools.count() never ends

    def stitch(self, message_parts: list, *, progress: Progress | None = None, timeout: float | None = None,
               **options) -> StitchResult:
        """Submit, and wait if the job was queued."""
        answer = self.submit(message_parts, **options)
        if isinstance(answer, Ticket):
            return self.wait(answer.job_id, progress=progress, timeout=timeout)
        if progress is not None:
            progress(1.0)
        return answer

    def upload(self, path: str | os.PathLike, *, filename: str | None = None,
               progress: Callable[[int], None] | None = None) -> str:
        """Upload a local file through a presigned link; returns its key. ``progress`` gets bytes sent."""
        path = Path(path)
        slot = self.create_upload(filename or path.name)
        self.send_file(slot, path, progress=progress)
        return slot.key

    def send_file(self, slot: UploadSlot, path: str | os.PathLike, *,
                  progress: Callable[[int], None] | None = None) -> None:
        """Send a file's bytes to an upload slot (PUT body, or presigned POST form)."""
        path = Path(path)
        size = path.stat().st_size
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if slot.method == "POST":
            body, length, ctype = _multipart(slot.fields, path, size, content_type, progress)
        else:
            body, length, ctype = _file_chunks(path, progress), size, content_type
        request = urllib.request.Request(slot.url, data=body, method=slot.method,
                                         headers={"Content-Length": str(length), "Content-Type": ctype})
        self._send(request, what=f"upload of {path.name}")

    def download(self, result: StitchResult | str, path: str | os.PathLike, *,
                 progress: Callable[[int, int | None], None] | None = None) -> Path:
        """Fetch the result to ``path`` atomically (a temp file beside it, then a rename)."""
        url = result if isinstance(result, str) else result.public_url
        if not url:
            raise ClientError("the result has no link (it expired): stitch again to make it again")
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as out, self._open(urllib.request.Request(url), what="download") as resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                done = 0
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:  # cut off, reset, timed out
                        raise ConnectionFailed(f"download cut off after {done} bytes: {exc!r}") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                if total is not None and done != total:
                    raise ConnectionFailed(f"download cut off after {done} of {total} bytes")
            os.chmod(tmp, 0o644 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # -- HTTP ----------------------------------------------------------------------------------
    def _call(self, method: str, route: str, body: dict | None = None, *, with_status: bool = False):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["x-api-key"] = self.api_key
        request = urllib.request.Request(self.api + route, data=data, method=method, headers=headers)
        with self._open(request, what=f"{method} {route}") as resp:
            payload = _json(resp.read(), resp.status, f"{method} {route}")
            return (payload, resp.status) if with_status else payload

    def _send(self, request: urllib.request.Request, *, what: str) -> None:
        with self._open(request, what=what) as resp:
            resp.read()

    def _open(self, request: urllib.request.Request, *, what: str):
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raise _api_error(err, what) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionFailed(f"{what}: cannot reach {request.full_url.split('?')[0]}: {reason}") from None


def _options(options: dict) -> dict:
    out = {k: v for k, v in options.items() if v is not None}
    if "async_" in out:
        out["async"] = out.pop("async_")
    return out


def _json(raw: bytes, status: int, what: str):
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(status, "bad_response", f"{what}: the answer is not JSON: {raw[:120]!r}") from None


def _api_error(err: urllib.error.HTTPError, what: str) -> ApiError:
    raw = err.read()
    retry = err.headers.get("Retry-After") if err.headers else None
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    try:
        detail = json.loads(raw)["error"]
        return ApiError(err.code, detail.get("code", "error"), detail.get("message", ""), field=detail.get("field"),
                        part=detail.get("part"), retry_after=retry_after)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    # Not the API's own error shape: API Gateway (403 without a key), or S3's XML on an upload.
    text = raw.decode("utf-8", "replace")
    if "<Code>" in text:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0]
        return ApiError(err.code, code, f"{what}: refused by storage ({code})", retry_after=retry_after)
    message = text.strip()[:200] or err.reason
    if err.code == 403:
        message = f"{what}: forbidden (a deployed stage needs --api-key / AUDIO_STITCH_API_KEY): {message}"
    return ApiError(err.code, "http_error", f"{what}: HTTP {err.code}: {message}", retry_after=retry_after)


def _file_chunks(path: Path, progress) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sent += len(chunk)
            yield chunk
            if progress is not None:
                progress(sent)


def _multipart(fields: dict, path: Path, size: int, content_type: str, progress):
    """A presigned POST form, streamed: the fields, then the file last (S3 ignores fields after it)."""
    boundary = f"----audio-stitch-{uuid.uuid4().hex}"
    quote_name = urllib.parse.quote(path.name)
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quote_name}"\r\n'
             f"Content-Type: {content_type}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        yield from _file_chunks(path, progress)
        yield tail

    return body(), len(head) + size + len(tail), f"multipart/form-data; boundary={boundary}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
