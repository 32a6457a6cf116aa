"""yt-dlp's failures in our words: refused, unavailable or (rarely) transient, by an ordered table."""
from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable

from ..errors import SourceRefused, SourceUnavailable, StitchError, TransientError
from ..urlguard import RefusedConnection


class TooBig(Exception):
    pass


def _chain(exc: BaseException | None) -> list[BaseException]:
    """The exception and everything it wraps (yt-dlp keeps causes in several attributes)."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        exc_info = getattr(e, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            stack.append(exc_info[1])
        reason = getattr(e, "reason", None)
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__,
                      reason if isinstance(reason, BaseException) else None])
    return seen


def ytdlp_message(exc: BaseException) -> str:
    text = str(getattr(exc, "orig_msg", None) or getattr(exc, "msg", None) or exc)
    text = re.sub(r"^(ERROR:\s*)?(\[[^\]]+\]\s*)?([\w-]+:\s)?", "", text.strip())
    return text.split("; please report this issue")[0].strip()[:300]


# Each rule reads one exception of the chain: (exception, label, max_bytes) -> our error, or None.
# Rules are in tiers; within a tier the first exception of the chain that a rule matches wins, so
# a size refusal outranks an HTTP status, which outranks what the socket said.
Rule = Callable[[BaseException, str, "int | None"], "StitchError | None"]


def _too_big(e: BaseException, label: str, max_bytes: int | None) -> StitchError | None:
    if isinstance(e, TooBig) or "max-filesize" in str(e):
        return SourceRefused(f"{label}: file is larger than the {max_bytes} byte limit")
    return None


def _http_status(e: BaseException, label: str, _max: int | None) -> StitchError | None:
    from yt_dlp.networking.exceptions import HTTPError

    if not isinstance(e, HTTPError):
        return None
    status, reason = e.status, getattr(e, "reason", None) or ""
    if status == 429:
        return TransientError(f"{label}: throttled by the server (HTTP 429)")
    if status >= 500:
        return TransientError(f"{label}: server error (HTTP {status} {reason})".rstrip())
    if status in (404, 410):
        return SourceUnavailable(f"{label}: HTTP {status} not found")
    return SourceUnavailable(f"{label}: HTTP {status} {reason}".rstrip())


def _unsupported(e: BaseException, label: str, _max: int | None) -> StitchError | None:
    from yt_dlp.utils import UnsupportedError

    if isinstance(e, UnsupportedError):
        return SourceUnavailable(f"{label}: unsupported URL: not an audio/video file or a page yt-dlp can read")
    return None


def _cut_off(e: BaseException, label: str, _max: int | None) -> StitchError | None:
    from yt_dlp.networking.exceptions import IncompleteRead
    from yt_dlp.utils import ContentTooShortError

    if not isinstance(e, (ContentTooShortError, IncompleteRead)):
        return None
    got, expected = getattr(e, "downloaded", None), getattr(e, "expected", None)
    detail = f" (got {got} of {expected} bytes)" if got is not None and expected else ""
    return SourceUnavailable(f"{label}: download was cut off midway{detail}")


_UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, socket.EAI_NONAME)


def _network(e: BaseException, label: str, _max: int | None) -> StitchError | None:
    if isinstance(e, TimeoutError):
        return TransientError(f"{label}: timed out talking to the server")
    if isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN:
        return TransientError(f"{label}: temporary DNS failure")
    if isinstance(e, RefusedConnection):
        return SourceRefused(f"{label}: {e}")
    if isinstance(e, ConnectionResetError):
        return SourceUnavailable(f"{label}: the server reset the connection")
    if isinstance(e, OSError) and e.errno in _UNREACHABLE:
        return SourceUnavailable(f"{label}: host unreachable ({e.strerror or e})")
    return None


TIERS: tuple[tuple[Rule, ...], ...] = ((_too_big,), (_http_status,), (_unsupported, _cut_off), (_network,))

# When the exception is gone (yt-dlp's retry manager reports some failures as text only):
# (pattern in the message, the error it means), first match wins.
TEXT_RULES: tuple[tuple[re.Pattern, Callable[[re.Match, str], StitchError]], ...] = (
    (re.compile(r"Downloaded (\d+) bytes, expected (\d+) bytes"),
     lambda m, label: SourceUnavailable(f"{label}: download was cut off midway (got {m[1]} of {m[2]} bytes)")),
    (re.compile(r"Did not get any data blocks"),
     lambda m, label: SourceUnavailable(f"{label}: download was cut off midway (no data received)")),
    (re.compile(r"timed out", re.IGNORECASE),
     lambda m, label: TransientError(f"{label}: timed out talking to the server")),
)


def classify_failure(exc: BaseException, label: str, *, refusal: SourceRefused | None = None,
                     max_bytes: int | None = None) -> StitchError:
    """Turn a yt-dlp failure into our typed error: refused, unavailable, or (rarely) transient.

    ``refusal`` (what the guard refused, if anything) explains the failure whatever yt-dlp made
    of the cut connection."""
    if refusal is not None:
        return SourceRefused(f"{label}: {refusal.message}")
    chain = _chain(exc)
    for tier in TIERS:
        for e in chain:
            for rule in tier:
                error = rule(e, label, max_bytes)
                if error is not None:
                    return error
    text = ytdlp_message(exc)
    for pattern, make in TEXT_RULES:
        m = pattern.search(text)
        if m:
            return make(m, label)
    return SourceUnavailable(f"{label}: {text}")
