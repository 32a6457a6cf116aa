"""Tell people a job finished: an SES e-mail and an HMAC-signed webhook POST.

Both are best effort: a failed notification is logged, never fails the job. Whether a target is
notified at all (once per outcome) is decided by the caller's bookkeeping in jobs.py.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import time
import urllib.error
import urllib.request

from .config import Settings
from .errors import StitchError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
# Receivers should refuse signatures older (or newer) than this: a captured POST cannot be replayed later.
SIGNATURE_TOLERANCE_S = 300
WEBHOOK_TIMEOUT_S = 5.0
BACKOFF_S = 0.5


def _mac(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + the exact body bytes>``.

    The timestamp is inside the MAC, so a receiver that checks its age rejects replays."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(body, secret, t)}"


def verify(body: bytes, secret: str, header: str, *, tolerance: float = SIGNATURE_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Check an ``X-Signature`` header: a v1 MAC that matches, with ``t`` within ``tolerance`` seconds."""
    fields: dict[str, list[str]] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = _mac(body, secret, t)
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


def webhook_body(job: dict) -> bytes:
    """The exact bytes POSTed (and signed): the job JSON, keys sorted."""
    return json.dumps(job, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _describe(job: dict) -> tuple[str, str]:
    """Subject and plain-text body of the e-mail for a finished job."""
    job_id = job.get("job_id", "")
    if job.get("status") == "succeeded":
        result = job.get("result") or {}
        subject = "Your audio is ready"
        text = (
            f"Job {job_id} succeeded.\n\n"
            f"Download ({result.get('format', '')}, {result.get('duration_s', 0):.1f} s): {result.get('public_url', '')}\n"
            f"The link expires at {result.get('expires_at', '')}; GET /jobs/{job_id} gives a fresh one.\n"
        )
    else:
        error = job.get("error") or {}
        subject = "Your audio job failed"
        where = f" (part {error['part']})" if error.get("part") is not None else ""
        text = f"Job {job_id} failed{where}: {error.get('message', 'unknown error')}\n"
    return subject, text


class Notifier:
    """Sends e-mail through an SES client and webhooks through urllib (no extra dependencies)."""

    def __init__(self, ses_client, settings: Settings, *, sleep=time.sleep,
                 timeout: float = WEBHOOK_TIMEOUT_S, backoff: float = BACKOFF_S, resolver=None):
        self.ses = ses_client
        self.settings = settings
        self.sleep = sleep
        self.timeout = timeout
        self.backoff = backoff
        self.resolver = resolver  # getaddrinfo-shaped; tests use it to simulate DNS answers

    def email(self, to: str, job: dict) -> bool:
        """One SES message from SENDER_EMAIL; True when SES accepted it."""
        from botocore.exceptions import BotoCoreError, ClientError

        subject, text = _describe(job)
        try:
            self.ses.send_email(
                Source=self.settings.sender_email,
                Destination={"ToAddresses": [to]},
                Message={"Subject": {"Data": subject, "Charset": "UTF-8"},
                         "Body": {"Text": {"Data": text, "Charset": "UTF-8"}}},
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("email job=%s failed: %s", job.get("job_id"), exc)
            return False
        return True

    def webhook(self, url: str, job: dict) -> bool:
        """POST the signed job JSON; retry network errors, 429 and 5xx a bounded number of times."""
        from .urlguard import RefusedConnection, check_url, guarded_opener

        try:
            # Checked again here, not only at request time: DNS may have changed since.
            check_url(url, self.settings, field="webhook_url", resolver=self.resolver)
        except StitchError as exc:
            log.warning("webhook job=%s refused: %s", job.get("job_id"), exc.message)
            return False
        body = webhook_body(job)
        headers = {"Content-Type": "application/json", "User-Agent": "audio-stitch-webhook/1",
                   "X-Job-Id": str(job.get("job_id", ""))}
        if self.settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(body, self.settings.webhook_secret)
        else:
            log.warning("webhook job=%s sent unsigned: WEBHOOK_SECRET is not set", job.get("job_id"))
        attempts = max(1, self.settings.webhook_attempts)
        # Dials only addresses the SSRF guard accepts (after the lookup it connects with), no proxy,
        # no redirects: a 3xx could point the POST somewhere the guard never saw.
        opener = guarded_opener(self.settings, resolver=self.resolver)
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with opener.open(request, timeout=self.timeout) as response:
                    response.read(1024)
                    return True
            except urllib.error.HTTPError as exc:
                retry = exc.code == 429 or exc.code >= 500
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
                # HTTPException: a reply that is not HTTP (BadStatusLine...), which urllib lets through.
                cause = getattr(exc, "reason", exc)
                # The guard refused the address it was about to dial: asking again won't change that.
                retry = not isinstance(cause, RefusedConnection)
                reason = str(cause)
            except ValueError as exc:  # a URL http.client cannot send (a non-ASCII path): no retry helps
                retry, reason = False, str(exc)
            log.warning("webhook job=%s attempt %d/%d failed: %s", job.get("job_id"), attempt, attempts, reason)
            if not retry:
                return False
            if attempt < attempts:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        return False
