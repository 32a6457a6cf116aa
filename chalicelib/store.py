"""S3 adapter: head, download, upload (one object write), presigned GET and POST uploads.

Takes its boto3 S3 client as a constructor argument so tests hand in one bound to moto.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from .errors import TransientError

log = logging.getLogger(__name__)

# Below this boto3 sends one PUT; above it a multipart upload, which S3 also makes visible
# atomically on completion, so readers never see a partial cache object.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
HEAD_WORKERS = 16
CHUNK_BYTES = 1024 * 1024
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestTimeout",
    "RequestTimeoutException", "ServiceUnavailable", "InternalError", "InternalFailure",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "TransactionInProgressException",
    "500", "503",
})
_EXPIRY = re.compile(r'expiry-date="([^"]+)"')


class ObjectMissing(Exception):
    """The object is gone (404)."""


class ObjectChanged(Exception):
    """The object no longer matches the ETag/VersionId it was requested with (412)."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    expires_at: float | None = None  # from S3's lifecycle Expiration header, epoch seconds
    metadata: dict = field(default_factory=dict)  # x-amz-meta-*, lower-case keys


def as_transient(exc: BaseException) -> TransientError | None:
    """A TransientError for throttling/5xx/network failures from botocore, else None."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if err.get("Code") in _TRANSIENT_CODES or status >= 500:
            return TransientError(f"AWS is throttling or unavailable ({err.get('Code')}): {err.get('Message')}")
    elif isinstance(exc, (ConnectionError, HTTPClientError, IncompleteReadError)):
        # HTTPClientError: read timeouts, a connection closed mid-response, a download stream cut off.
        return TransientError(f"network error talking to AWS: {exc}")
    elif isinstance(exc, BotoCoreError) and "timeout" in str(exc).lower():
        return TransientError(f"timeout talking to AWS: {exc}")
    return None


def raise_if_transient(exc: BaseException) -> None:
    """Re-raise a transient botocore failure as TransientError (so SQS retries); else return."""
    transient = as_transient(exc)
    if transient is not None:
        raise transient from exc


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def parse_expiration(header: str | None) -> float | None:
    """Epoch seconds of the ``expiry-date`` in S3's ``x-amz-expiration`` header, if any."""
    m = _EXPIRY.search(header or "")
    if not m:
        return None
    try:
        return parsedate_to_datetime(m.group(1)).timestamp()
    except (TypeError, ValueError):
        return None


def iso(epoch: float) -> str:
    """UTC ISO-8601 with a Z, the one time format the API speaks."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """S3 operations the service needs, with 404 meaning "absent" rather than an error."""

    def __init__(self, s3_client, *, multipart_threshold: int = MULTIPART_THRESHOLD, clock=time.time):
        self.s3 = s3_client
        self.multipart_threshold = multipart_threshold
        self.clock = clock

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Metadata of one object, or None when it does not exist (including just expired)."""
        from botocore.exceptions import ClientError

        try:
            r = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise_if_transient(exc)
            raise
        return ObjectInfo(
            bucket=bucket, key=key, size=int(r.get("ContentLength", 0)), etag=r.get("ETag", "").strip('"'),
            version_id=r.get("VersionId"), expires_at=parse_expiration(r.get("Expiration")),
            metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
        )

    def head_many(self, bucket: str, keys: list[str]) -> list[ObjectInfo | None]:
        """HEAD every key concurrently (a 100-part request is one round trip, not 100)."""
        if len(keys) <= 1:
            return [self.head(bucket, k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(HEAD_WORKERS, len(keys))) as pool:
            return list(pool.map(lambda k: self.head(bucket, k), keys))

    def list_prefix(self, bucket: str, prefix: str, *, max_keys: int = 1000) -> list[ObjectInfo]:
        """The first ``max_keys`` objects under ``prefix`` (key order), without their metadata."""
        from botocore.exceptions import ClientError

        try:
            r = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=max_keys)
        except ClientError as exc:
            raise_if_transient(exc)
            raise
        return [ObjectInfo(bucket=bucket, key=o["Key"], size=int(o.get("Size", 0)), etag=o.get("ETag", "").strip('"'))
                for o in r.get("Contents", [])]

    def download(self, bucket: str, key: str, path: Path, *, etag: str | None = None,
                 version_id: str | None = None) -> Path:
        """Download to ``path`` (temp name, then rename); pinned to ``etag``/``version_id`` when given."""
        args = {"Bucket": bucket, "Key": key}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        elif etag:
            # The managed downloader cannot pin an ETag; one streamed GET with If-Match can.
            args["IfMatch"] = f'"{etag}"'
        self._get(args, Path(path))
        return Path(path)

    def get_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        """Download to ``path`` like ``download``; returns what was read, its metadata included."""
        r = self._get({"Bucket": bucket, "Key": key}, Path(path))
        return ObjectInfo(bucket=bucket, key=key, size=int(r.get("ContentLength", 0)),
                          etag=r.get("ETag", "").strip('"'), version_id=r.get("VersionId"),
                          metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()})

    def _get(self, args: dict, path: Path) -> dict:
        """One streamed GET into ``path``; the response without its body."""
        from botocore.exceptions import ClientError

        key = args["Key"]
        tmp = path.with_name(path.name + ".part")
        try:
            r = self.s3.get_object(**args)
            body = r.pop("Body")
            # Closed on every way out: a failed write (a full /tmp) must not keep the connection.
            with body, open(tmp, "wb") as out:
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if _code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise ObjectMissing(key) from exc
            if _code(exc) in ("412", "PreconditionFailed"):
                raise ObjectChanged(key) from exc
            raise_if_transient(exc)
            raise
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            raise_if_transient(exc)
            raise
        os.replace(tmp, path)
        return r

    def put_file(self, path: Path, bucket: str, key: str, *, metadata: dict | None = None) -> None:
        """Write a small file in one PUT (no multipart): visible whole or not at all."""
        from botocore.exceptions import ClientError

        try:
            with open(path, "rb") as body:
                self.s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata or {})
        except ClientError as exc:
            raise_if_transient(exc)
            raise

    def upload(self, path: Path, bucket: str, key: str, *, content_type: str, filename: str,
               metadata: dict | None = None) -> None:
        """Write one object (single PUT, multipart above the threshold), with download headers."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig

        extra = {
            "ContentType": content_type,
            "ContentDisposition": f'attachment; filename="{filename}"',
        }
        if metadata:
            extra["Metadata"] = metadata
        config = TransferConfig(multipart_threshold=self.multipart_threshold)
        try:
            self.s3.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config)
        except S3UploadFailedError as exc:
            # The managed upload wraps the ClientError (throttling, 5xx) it failed on; it is the context.
            raise_if_transient(exc.__context__ or exc)
            raise

    def put_json(self, bucket: str, key: str, data: dict) -> None:
        """Write a small JSON document in one PUT."""
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(data).encode("utf-8"),
                               ContentType="application/json")
        except ClientError as exc:
            raise_if_transient(exc)
            raise

    def get_json(self, bucket: str, key: str) -> dict | None:
        """Read a small JSON document, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise_if_transient(exc)
            raise
        return json.loads(body)

    def presign_get(self, bucket: str, key: str, ttl: int) -> tuple[str, str]:
        """A GET link valid ``ttl`` seconds, and when it expires (ISO-8601 UTC)."""
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl
        )
        return url, iso(self.clock() + ttl)

    def presign_post(self, bucket: str, key: str, ttl: int, max_bytes: int) -> tuple[str, dict, str]:
        """A browser-style POST upload of one object of 1..``max_bytes`` bytes: S3 refuses a larger
        (or empty) file itself. Returns the URL, the form fields to send before the file, and
        when the link expires (ISO-8601 UTC)."""
        post = self.s3.generate_presigned_post(
            Bucket=bucket, Key=key, ExpiresIn=ttl, Conditions=[["content-length-range", 1, max_bytes]],
        )
        return post["url"], post["fields"], iso(self.clock() + ttl)
