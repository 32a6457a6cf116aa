"""What a client is told about a failure that is not a typed error of ours.

The REST path and the worker both turn an unexpected exception into an error of ours here: AWS
throttling, hangs and missing credentials, a full work dir, an engine (ffmpeg) failure. Tool output
and stack traces go to the log; the client gets what failed, which part, and what to do.
"""
from __future__ import annotations

import errno
import logging

from .errors import InsufficientStorage, ServiceUnavailable, StitchError

log = logging.getLogger(__name__)
_NO_SPACE = ("No space left on device", "Disk quota exceeded")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def out_of_space(exc: BaseException) -> bool:
    """True when the failure is a full disk: ENOSPC anywhere in the chain, or ffmpeg saying so."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if type(e) is StitchError and any(s in e.message for s in _NO_SPACE):
            return True
    return False


def _aws_unavailable(exc: BaseException) -> StitchError | None:
    try:
        from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError
    except ImportError:  # pragma: no cover - botocore is always there on Lambda
        return None
    from .store import as_transient

    for e in _chain(exc):
        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return ServiceUnavailable("the service cannot reach AWS: it has no AWS credentials configured; "
                                      "try again later (operators: see docs/TROUBLESHOOTING.md)")
        if isinstance(e, NoRegionError):
            return ServiceUnavailable("the service cannot reach AWS: no AWS region is configured (AWS_REGION); "
                                      "try again later")
        transient = as_transient(e)
        if transient is not None:
            return ServiceUnavailable(f"AWS did not answer in time or is unavailable ({transient.message}); "
                                      "try again in a few seconds")
    return None


def public_error(exc: BaseException, *, where: str = "request") -> StitchError | None:
    """Our own error for ``exc``: typed errors pass through; the rest get a message of ours.

    An untyped StitchError is an engine failure (its message is ffmpeg's stderr): logged, replaced.
    None for an exception nobody expected (a bug): the caller logs it and answers generically.
    """
    if out_of_space(exc):
        log.warning("%s: out of disk space in the work dir: %s", where, exc)
        return InsufficientStorage(
            "the work directory ran out of disk space while making the result; nothing was stored. "
            "Try again later; if it keeps failing, the inputs are too large for one job")
    if isinstance(exc, StitchError) and type(exc) is not StitchError:
        return exc
    aws = _aws_unavailable(exc)
    if aws is not None:
        log.warning("%s: AWS unavailable: %s: %s", where, type(exc).__name__, exc)
        return aws
    if isinstance(exc, StitchError):
        log.error("%s: engine failure: %s", where, exc.message)
        return StitchError("the audio engine failed while making the result, and no part was found at fault "
                           "(each part decodes on its own); try again, and report it if it keeps failing",
                           part=exc.part, field=exc.field)
    return None
