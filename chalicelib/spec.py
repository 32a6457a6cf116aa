"""The validated stitch request, its canonical form and its cache key.

Standard library only (plus the option contract): the REST path validates every request
here before touching AWS, and the worker rebuilds the same object from the job record.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config import Settings
from .errors import BadRequest
from .options import ENGINE_VERSION, Options, PartOptions, reject_unknown

PART_SOURCES = ("key", "url")
TOP_LEVEL_FIELDS = frozenset({"message_parts", "notify_email", "webhook_url", "async", *Options.field_names()})
MAX_KEY_BYTES = 1024  # S3's own limit
MAX_URL_CHARS = 2048
MAX_EMAIL_CHARS = 254
# Deliberately simple: one @, no spaces, a dot in the domain. SES rejects the rest with a reason.
_EMAIL = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JOB_ID = re.compile(r"^[0-9a-f]{64}$")
# A valid request is 4 levels deep (body, message_parts, a part, its fields); 32 leaves room
# and keeps every later walk of the body far from Python's recursion limit.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class PartSpec:
    """One requested part: an input-bucket ``key`` or a ``url``, with trim and gain."""

    index: int
    key: str | None = None
    url: str | None = None
    options: PartOptions = PartOptions()

    @property
    def kind(self) -> str:
        """Which field names the part ("key" or "url"): the service hands it to that kind's Source."""
        return "key" if self.key is not None else "url"

    @property
    def name(self) -> str:
        """What error messages call this part."""
        return self.key if self.key is not None else self.url or ""

    def to_dict(self) -> dict:
        source = {"key": self.key} if self.key is not None else {"url": self.url}
        return {**source, **_trim(self.options)}


@dataclass(frozen=True)
class StitchSpec:
    """A validated ``POST /stitch`` body."""

    parts: tuple[PartSpec, ...]
    options: Options
    notify_email: str | None = None
    webhook_url: str | None = None
    force_async: bool = False

    @property
    def has_urls(self) -> bool:
        return any(p.url is not None for p in self.parts)

    def to_dict(self) -> dict:
        """Canonical JSON-able form (stored in job records); ``from_dict`` reads it back."""
        body = {"message_parts": [p.to_dict() for p in self.parts], **self.options.to_dict()}
        if self.notify_email:
            body["notify_email"] = self.notify_email
        if self.webhook_url:
            body["webhook_url"] = self.webhook_url
        if self.force_async:
            body["async"] = True
        return body

    @classmethod
    def from_dict(cls, data: dict, settings: Settings) -> StitchSpec:
        return parse_request(data, settings, check_urls=False)


def _trim(options: PartOptions) -> dict:
    """Part options in canonical form: start 0 is no trim, so both spell the same cache key."""
    out = options.to_dict()
    if out.get("start_s") == 0.0:
        del out["start_s"]
    return out


def parse_body(raw: bytes | str | None) -> dict:
    """Decode a JSON request body into a dict, or raise BadRequest (never a 500)."""
    if raw is None or (isinstance(raw, (bytes, str)) and not raw.strip()):
        raise BadRequest("request body must be a JSON object", field="body")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", field="body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(data).__name__}", field="body")
    check_text(data)
    return data


def _path(parent: str, name) -> str:
    if isinstance(name, int):
        return f"{parent}[{name}]"
    return f"{parent}.{name}" if parent else str(name)


def check_text(data) -> None:
    """Reject bodies nested deeper than MAX_JSON_DEPTH, and strings (values or keys) that are not
    Unicode text: JSON's ``\\ud800`` escape decodes to a lone surrogate, which no encoder, S3 key,
    e-mail or HTTP header accepts. The error names the field."""
    stack = [(data, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep",
                             field=where or "body")
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise BadRequest(f"{where or 'body'} is not valid Unicode text (it has a lone UTF-16 surrogate)",
                                 field=where or "body")
        elif isinstance(value, dict):
            for name, item in value.items():
                if _SURROGATE.search(name):
                    shown = name.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                    raise BadRequest(f"field name {shown!r} in {where or 'the body'} is not valid Unicode text",
                                     field=where or "body")
                stack.append((item, _path(where, name), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, _path(where, i), depth + 1) for i, item in enumerate(value))


def parse_request(data: dict, settings: Settings, *, check_urls: bool = True) -> StitchSpec:
    """Validate a ``POST /stitch`` body; every error names the offending field.

    ``check_urls`` runs the SSRF guard on URL parts and the webhook (the REST path); the
    worker re-reads stored specs without it and the fetcher checks again before connecting.
    """
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", field="body")
    reject_unknown(data, set(TOP_LEVEL_FIELDS))
    parts = _parse_parts(data.get("message_parts"), settings, check_urls)
    options = Options.from_dict(data)
    notify_email = _parse_email(data.get("notify_email"))
    webhook_url = data.get("webhook_url")
    if webhook_url is not None:
        if check_urls and settings.require_webhook_secret and not settings.webhook_secret:
            # Receivers could not tell our POST from anyone's: refuse rather than send it unsigned.
            raise BadRequest("webhook_url cannot be used on this stage: it has no WEBHOOK_SECRET to sign webhooks "
                             "with (leave webhook_url out, or ask the operator to set WEBHOOK_SECRET)",
                             field="webhook_url")
        webhook_url = _parse_url(webhook_url, "webhook_url", settings, check_urls)
    force_async = data.get("async", False)
    if not isinstance(force_async, bool):
        raise BadRequest(f"async must be true or false, got {type(force_async).__name__}", field="async")
    return StitchSpec(parts, options, notify_email, webhook_url, force_async)


def _parse_parts(items, settings: Settings, check_urls: bool) -> tuple[PartSpec, ...]:
    if items is None:
        raise BadRequest("message_parts is required", field="message_parts")
    if not isinstance(items, list):
        raise BadRequest(f"message_parts must be a list, got {type(items).__name__}", field="message_parts")
    if not items:
        raise BadRequest("message_parts must not be empty", field="message_parts")
    if len(items) > settings.max_parts:
        raise BadRequest(
            f"message_parts has {len(items)} parts; at most {settings.max_parts} are allowed",
            field="message_parts",
        )
    return tuple(_parse_part(i, item, settings, check_urls) for i, item in enumerate(items))


def _parse_part(index: int, item, settings: Settings, check_urls: bool) -> PartSpec:
    where = f"message_parts[{index}]"
    if isinstance(item, str):
        return PartSpec(index, key=_parse_key(item, f"{where}"))
    if not isinstance(item, dict):
        raise BadRequest(
            f"{where} must be a key string or an object with key or url, got {type(item).__name__}", field=where
        )
    reject_unknown(item, {*PART_SOURCES, *PartOptions.FIELDS}, where)
    given = [s for s in PART_SOURCES if s in item]
    if len(given) != 1:
        raise BadRequest(f"{where} must have exactly one of key or url", field=where)
    options = PartOptions.from_dict(item, where)
    if given[0] == "key":
        return PartSpec(index, key=_parse_key(item["key"], f"{where}.key"), options=options)
    url = _parse_url(item["url"], f"{where}.url", settings, check_urls)
    return PartSpec(index, url=url, options=options)


def _parse_key(key, where: str) -> str:
    if not isinstance(key, str):
        raise BadRequest(f"{where} must be a string, got {type(key).__name__}", field=where)
    if not key.strip():
        raise BadRequest(f"{where} must not be empty", field=where)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise BadRequest(f"{where} is longer than {MAX_KEY_BYTES} bytes", field=where)
    if ".." in key:
        raise BadRequest(f"{where} must not contain '..'", field=where)
    if _CONTROL.search(key):
        raise BadRequest(f"{where} must not contain control characters", field=where)
    return key


def _parse_url(url, where: str, settings: Settings, check: bool) -> str:
    if not isinstance(url, str):
        raise BadRequest(f"{where} must be a string, got {type(url).__name__}", field=where)
    if len(url) > MAX_URL_CHARS:
        raise BadRequest(f"{where} is longer than {MAX_URL_CHARS} characters", field=where)
    if _CONTROL.search(url) or " " in url:
        raise BadRequest(f"{where} must not contain spaces or control characters", field=where)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise BadRequest(f"{where} is not a valid URL: {exc}", field=where) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadRequest(f"{where} must be an http or https URL", field=where)
    if not parts.hostname:
        raise BadRequest(f"{where} has no host", field=where)
    if check:
        # Imported here so a missing or broken guard fails only requests that carry a URL.
        from .urlguard import check_url

        check_url(url, settings, field=where)
    return url


def _parse_email(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"notify_email must be a string, got {type(value).__name__}", field="notify_email")
    if len(value) > MAX_EMAIL_CHARS or not _EMAIL.match(value):
        raise BadRequest(f"notify_email is not a valid e-mail address: {value[:80]!r}", field="notify_email")
    return value


@dataclass(frozen=True)
class PartIdentity:
    """One entry of the cache key: which bytes a part reads, plus its trim and gain.

    Exactly one of: an input-bucket object (``bucket``, ``key`` and its ``version_id`` or
    ``etag``); a ``url`` as requested (what a URL request's job id is made of); or a ``source``,
    a fetched URL part named by what it is (``youtube:<id>``), not by how it was spelled.
    """

    trim: tuple[tuple[str, float], ...] = ()
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    version_id: str | None = None
    url: str | None = None
    source: str | None = None
    # Not part of the identity: what the inline budget counts, when the source knows it.
    size_bytes: int | None = field(default=None, compare=False, repr=False)

    _NAMES = ("bucket", "key", "etag", "version_id", "url", "source")

    @classmethod
    def of_object(cls, part: PartSpec, bucket: str, etag: str | None, version_id: str | None = None,
                  size_bytes: int | None = None) -> PartIdentity:
        """A bucket part: the exact object version."""
        trim = _trim_items(part.options)
        # A VersionId pins the bytes even if the ETag scheme changes (multipart vs single PUT).
        if version_id and version_id != "null":
            return cls(trim, bucket=bucket, key=part.key, version_id=version_id, size_bytes=size_bytes)
        return cls(trim, bucket=bucket, key=part.key, etag=(etag or "").strip('"'), size_bytes=size_bytes)

    @classmethod
    def of_url(cls, part: PartSpec) -> PartIdentity:
        """A URL part as requested; the worker settles it with ``of_source``."""
        return cls(_trim_items(part.options), url=part.url)

    @classmethod
    def of_source(cls, part: PartSpec, source_id: str) -> PartIdentity:
        return cls(_trim_items(part.options), source=source_id)

    @property
    def settled(self) -> bool:
        """Whether this names content (so a cache lookup means something); a URL as spelled does not."""
        return self.url is None

    @property
    def object_ref(self) -> tuple:
        """Which stored bytes a bucket part reads (trim and gain aside): parts that share it share a download."""
        return self.bucket, self.key, self.etag, self.version_id

    def to_dict(self) -> dict:
        """The canonical form hashed into the cache key and kept in job records."""
        ident = {n: getattr(self, n) for n in self._NAMES if getattr(self, n) is not None}
        return {**ident, **dict(self.trim)}

    @classmethod
    def from_dict(cls, data: dict) -> PartIdentity:
        names = {n: data[n] for n in cls._NAMES if n in data}
        return cls(tuple(sorted((k, v) for k, v in data.items() if k not in cls._NAMES)), **names)


def _trim_items(options: PartOptions) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(_trim(options).items()))


def cache_key(identities: list[PartIdentity], options: Options) -> str:
    """sha256 over the canonical JSON of the ordered part identities, options and engine version."""
    doc = {"engine": ENGINE_VERSION, "options": options.to_dict(), "parts": [i.to_dict() for i in identities]}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def output_key(settings: Settings, key: str, options: Options) -> str:
    """Where a result lives in the output bucket."""
    return f"{settings.cache_prefix}{key}.{options.output_format.extension}"
