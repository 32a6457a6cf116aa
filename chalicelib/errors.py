"""Error types shared by every layer; mapped to HTTP status codes in one place (app.py).

Each error knows whether it is permanent (the job fails at once) or transient (the SQS
message is retried), and may name the request field or the part index it concerns.
"""
from __future__ import annotations


class StitchError(Exception):
    """Base class. ``status`` is the HTTP code; ``permanent`` decides retry vs fail."""

    status = 500
    code = "internal_error"
    permanent = True

    def __init__(self, message: str, *, field: str | None = None, part: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.part = part

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.part is not None:
            body["part"] = self.part
        return body

    def __str__(self) -> str:  # e.g. "UnsupportedAudio: part 3 (b.txt): no audio stream"
        return f"{type(self).__name__}: {self.message}"


class BadRequest(StitchError):
    """The request (or a CLI option) is malformed; ``field`` names the offending field."""

    status = 400
    code = "bad_request"


class PartNotFound(StitchError):
    """An input key (or local file) does not exist."""

    status = 400
    code = "part_not_found"


class UnsupportedAudio(StitchError):
    """A part is empty, truncated, not audio, or in a codec we cannot decode."""

    status = 400
    code = "unsupported_audio"


class SourceRefused(StitchError):
    """A URL part (or webhook URL) is refused: SSRF guard, scheme, live stream, too long, size cap."""

    status = 400
    code = "source_refused"


class SourceUnavailable(StitchError):
    """A URL part could not be fetched (404, HTML page, unsupported URL, cut off)."""

    status = 400
    code = "source_unavailable"


class NotFound(StitchError):
    """An API resource (job id) does not exist."""

    status = 404
    code = "not_found"


class TransientError(StitchError):
    """Throttling, timeouts, a flaky network: raise so SQS redelivers the message."""

    status = 503
    code = "transient"
    permanent = False


def part_label(index: int, name: str | None) -> str:
    """``part 3 (b.txt)`` — the prefix every per-part error message starts with."""
    return f"part {index} ({name})" if name else f"part {index}"


class InsufficientStorage(StitchError):
    """The work dir (Lambda's /tmp) ran out of space: retry later, it is not the request's fault."""

    status = 507
    code = "insufficient_storage"
    permanent = False


class ServiceUnavailable(TransientError):
    """AWS cannot be reached or called (no credentials, no region, endpoint down): 503, Retry-After."""

    code = "service_unavailable"
