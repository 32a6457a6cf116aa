"""URL and YouTube parts: identify with yt-dlp, fetch the audio onto local disk, cache it in S3.

yt-dlp is imported inside functions only (the REST path must not pay for it). All of yt-dlp's
HTTP traffic, redirects included, goes through one request handler whose sockets are opened by
``urlguard.GuardedConnector``: every hop is checked after DNS resolution and before connecting,
and the connection goes to the checked address (no DNS-rebinding window).

The decisions (format choice, live and duration checks, extractor allow-list, cache identity,
error classification) are pure functions of yt-dlp info dicts, tested without a network.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import (
    SourceRefused,
    SourceUnavailable,
    StitchError,
    TransientError,
    UnsupportedAudio,
    part_label,
)
from .urlguard import GuardedConnector, RefusedConnection, check_url, url_refusal

log = logging.getLogger(__name__)

# Network knobs: module constants (tests shorten them) rather than per-stage settings, because
# they bound a single download attempt and the worker's own timeout bounds the job.
SOCKET_TIMEOUT_SECONDS = 20.0
RETRIES = 2
METADATA_DEADLINE_SECONDS = 120.0
DOWNLOAD_DEADLINE_SECONDS = 600.0
MAX_URL_HOPS = 5

# Protocols whose downloaders fetch through yt-dlp's request handlers (and so through the
# guard). "m3u8" (ffmpeg), rtmp, websockets... open their own connections; so may m3u8_native:
# yt-dlp's HLS downloader hands streams with features it lacks to ffmpeg, past the guard.
GUARDED_PROTOCOLS = frozenset({"http", "https", "http_dash_segments"})
LIVE_STATUSES = frozenset({"is_live", "is_upcoming", "post_live"})
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass
class SourceInfo:
    """What a URL points at, from metadata only (no media downloaded)."""

    source_id: str  # "<extractor>:<id>", the stitch cache key's name for this part
    extractor: str
    id: str
    duration_s: float | None
    title: str | None
    is_live: bool
    ext: str | None


@dataclass
class FetchedSource:
    """A URL part's audio on local disk."""

    path: Path
    source_id: str
    duration_s: float | None
    title: str | None
    cached: bool


# --------------------------------------------------------------------------------------------
# Pure decisions on yt-dlp info dicts


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, default port and fragment dropped; path and query kept."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == {"http": 80, "https": 443}.get(scheme) else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def generic_id(url: str) -> str:
    """The generic extractor's id is a file name (collides across hosts): hash the URL instead."""
    return hashlib.sha256(normalise_url(url).encode()).hexdigest()[:32]


def source_identity(extractor: str, video_id: str | None, url: str) -> tuple[str, str]:
    """``(extractor, id)`` naming a source in the cache: URL hash for generic, else the site's id."""
    extractor = extractor.lower()
    if extractor == "generic" or not video_id:
        return extractor, generic_id(url)
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(video_id))[:128]
    return extractor, safe


def extractor_refusal(info: dict, allowed: Iterable[str]) -> str | None:
    """Why this info dict's extractor is not allowed, or None."""
    name = str(info.get("extractor") or info.get("extractor_key") or "").lower()
    if name in {a.lower() for a in allowed}:
        return None
    return f"extractor {name or '(unknown)'!r} is not allowed (allowed: {', '.join(allowed)})"


def live_refusal(info: dict) -> str | None:
    """Live, upcoming and just-ended streams have no fixed length: refuse them."""
    status = info.get("live_status")
    if info.get("is_live") or status in LIVE_STATUSES:
        kind = {"is_upcoming": "an upcoming (not yet started) stream",
                "post_live": "a stream that has just ended and is still being processed"}.get(
            status, "a live stream")
        return f"is {kind}; only recorded media can be fetched"
    return None


def duration_refusal(duration: float | None, max_seconds: int) -> str | None:
    """Why ``duration`` exceeds the cap, or None (None duration = unknown, checked after download)."""
    if duration is not None and duration > max_seconds:
        return f"is {_clock(duration)} long, over the {_clock(max_seconds)} limit"
    return None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _protocol(fmt: dict) -> str:
    if fmt.get("protocol"):
        return str(fmt["protocol"])
    return urllib.parse.urlsplit(str(fmt.get("url") or "")).scheme.lower() or "https"


def select_audio_format(formats: list[dict]) -> dict | None:
    """The best audio-only format among ``formats``, or None.

    Only formats downloaded through yt-dlp's own HTTP stack (so through the SSRF guard), without
    DRM, with audio. Known video formats are never chosen; a format whose codecs are unknown
    (a direct link served as ``application/octet-stream``) is the fallback when no format says
    it is audio-only. Ranking: the original/default language track, then not dynamic-range
    compressed, then bitrate and sample rate; ties go to the later format (yt-dlp lists worst
    first). The ranking is ours so the choice does not depend on whether yt-dlp sorted yet.
    """
    usable = [f for f in formats
              if _protocol(f) in GUARDED_PROTOCOLS and not f.get("has_drm") and f.get("acodec") != "none"]
    pool = [f for f in usable if f.get("vcodec") == "none"]
    if not pool:
        pool = [f for f in usable if f.get("vcodec") is None]
    if not pool:
        return None

    def rank(item):
        position, f = item
        drc = "drc" in str(f.get("format_id", "")).lower() or "drc" in str(f.get("format_note", "")).lower()
        return (f.get("language_preference") or 0, not drc, f.get("abr") or f.get("tbr") or 0,
                f.get("asr") or 0, position)

    return max(enumerate(pool), key=rank)[1]


def info_formats(info: dict) -> list[dict]:
    """The formats yt-dlp would choose from (a top-level ``url`` is a single format)."""
    if info.get("formats"):
        return list(info["formats"])
    return [info] if info.get("url") else []


def safe_ext(ext: str | None) -> str:
    ext = (ext or "").lower()
    return ext if _SAFE_EXT.match(ext) else "bin"


def cache_prefix(settings: Settings, extractor: str, video_id: str) -> str:
    """List prefix for a source's cache object; the object is ``<prefix><ext>``."""
    return f"{settings.sources_prefix}{extractor}/{video_id}."


# --------------------------------------------------------------------------------------------
# Error classification


class _TooBig(Exception):
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


def _ytdlp_message(exc: BaseException) -> str:
    text = str(getattr(exc, "orig_msg", None) or getattr(exc, "msg", None) or exc)
    text = re.sub(r"^(ERROR:\s*)?(\[[^\]]+\]\s*)?([\w-]+:\s)?", "", text.strip())
    return text.split("; please report this issue")[0].strip()[:300]


def classify_failure(exc: BaseException, label: str, *, refusal: SourceRefused | None = None,
                     max_bytes: int | None = None) -> StitchError:
    """Turn a yt-dlp failure into our typed error: refused, unavailable, or (rarely) transient."""
    if refusal is not None:
        return SourceRefused(f"{label}: {refusal.message}")
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead
    from yt_dlp.utils import ContentTooShortError, UnsupportedError

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, _TooBig) or "max-filesize" in str(e):
            return SourceRefused(f"{label}: file is larger than the {max_bytes} byte limit")
    for e in chain:
        if isinstance(e, HTTPError):
            status = e.status
            reason = getattr(e, "reason", None) or ""
            if status == 429:
                return TransientError(f"{label}: throttled by the server (HTTP 429)")
            if status >= 500:
                return TransientError(f"{label}: server error (HTTP {status} {reason})".rstrip())
            if status in (404, 410):
                return SourceUnavailable(f"{label}: HTTP {status} not found")
            return SourceUnavailable(f"{label}: HTTP {status} {reason}".rstrip())
    for e in chain:
        if isinstance(e, UnsupportedError):
            return SourceUnavailable(
                f"{label}: unsupported URL: not an audio/video file or a page yt-dlp can read")
        if isinstance(e, (ContentTooShortError, IncompleteRead)):
            got, expected = getattr(e, "downloaded", None), getattr(e, "expected", None)
            detail = f" (got {got} of {expected} bytes)" if got is not None and expected else ""
            return SourceUnavailable(f"{label}: download was cut off midway{detail}")
    for e in chain:
        if isinstance(e, TimeoutError):
            return TransientError(f"{label}: timed out talking to the server")
        if isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN:
            return TransientError(f"{label}: temporary DNS failure")
        if isinstance(e, RefusedConnection):
            return SourceRefused(f"{label}: {e}")
        if isinstance(e, ConnectionResetError):
            return SourceUnavailable(f"{label}: the server reset the connection")
        if isinstance(e, OSError) and e.errno in (
                errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, socket.EAI_NONAME):
            return SourceUnavailable(f"{label}: host unreachable ({e.strerror or e})")
    text = _ytdlp_message(exc)
    # yt-dlp's retry manager reports a short body as text, the exception itself is gone.
    short = re.search(r"Downloaded (\d+) bytes, expected (\d+) bytes", text)
    if short:
        return SourceUnavailable(
            f"{label}: download was cut off midway (got {short[1]} of {short[2]} bytes)")
    if "Did not get any data blocks" in text:
        return SourceUnavailable(f"{label}: download was cut off midway (no data received)")
    if "timed out" in text.lower():
        return TransientError(f"{label}: timed out talking to the server")
    return SourceUnavailable(f"{label}: {text}")


# --------------------------------------------------------------------------------------------
# yt-dlp plumbing


class _Collector:
    """yt-dlp logger: keeps errors and warnings for the failure message, debug goes nowhere."""

    def __init__(self):
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        if "max-filesize" in msg:
            self.errors.append(msg.strip())

    info = debug

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def error(self, msg: str) -> None:
        self.errors.append(msg)


@functools.lru_cache(maxsize=1)
def _guarded_ydl_class():
    """Build (once) a YoutubeDL subclass whose only request handler goes through the guard."""
    import http.client
    import urllib.request

    from yt_dlp import YoutubeDL

    # yt-dlp's urllib handler is the one stack it ships without optional dependencies; we reuse
    # its response adapting and error mapping and replace how sockets are opened.
    from yt_dlp.networking._urllib import HTTPHandler, RedirectHandler, UrllibRH

    def make_connection(conn_class, source_address, connector, *args, **kwargs):
        conn = conn_class(*args, **kwargs)
        conn._create_connection = connector  # http.client's hook for opening the socket
        if source_address is not None:
            conn.source_address = (source_address, 0)
        return conn

    class GuardedHTTPHandler(HTTPHandler):
        def __init__(self, connector, **kwargs):
            super().__init__(**kwargs)
            self._connector = connector

        def http_open(self, req):
            req.headers.pop("Ytdl-socks-proxy", None)
            return self.do_open(functools.partial(
                make_connection, http.client.HTTPConnection, self._source_address, self._connector), req)

        def https_open(self, req):
            req.headers.pop("Ytdl-socks-proxy", None)
            return self.do_open(functools.partial(
                make_connection, http.client.HTTPSConnection, self._source_address, self._connector),
                req, context=self._context)

    class GuardedRedirectHandler(RedirectHandler):
        def __init__(self, connector: GuardedConnector):
            super().__init__()
            self._connector = connector

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            # Scheme, userinfo and port rules need the URL; the connector re-checks the address.
            try:
                check_url(newurl, self._connector.settings, field="url", resolver=self._connector.resolver)
            except SourceRefused as exc:
                refusal = SourceRefused(f"redirected to {exc.message}")
                self._connector.refuse(refusal)
                fp.close()
                raise RefusedConnection(refusal.message) from None
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    class GuardedUrllibRH(UrllibRH):
        _SUPPORTED_URL_SCHEMES = ("http", "https")
        _SUPPORTED_PROXY_SCHEMES = ()
        RH_NAME = "urllib (SSRF-guarded)"

        def __init__(self, *, connector: GuardedConnector, **kwargs):
            kwargs["enable_file_urls"] = False
            super().__init__(**kwargs)
            self.connector = connector

        def _get_proxies(self, request):
            return {}  # a proxy would make the connection on our behalf, past the guard

        def _check_proxies(self, proxies):
            return None

        def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
            opener = urllib.request.OpenerDirector()
            for handler in (
                GuardedHTTPHandler(
                    self.connector, debuglevel=0,
                    context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                    source_address=self.source_address),
                urllib.request.HTTPCookieProcessor(cookiejar),
                urllib.request.UnknownHandler(),
                urllib.request.HTTPDefaultErrorHandler(),
                urllib.request.HTTPErrorProcessor(),
                GuardedRedirectHandler(self.connector),
            ):
                opener.add_handler(handler)
            opener.addheaders = []
            return opener

    class GuardedYoutubeDL(YoutubeDL):
        def __init__(self, params, *, connector: GuardedConnector):
            self.connector = connector
            super().__init__(params)

        def build_request_director(self, handlers, preferences=None):
            # Whatever handlers are installed (requests, curl_cffi, websockets), use only ours.
            return super().build_request_director(
                [functools.partial(GuardedUrllibRH, connector=self.connector)], preferences)

    GuardedUrllibRH.RH_KEY = "Urllib"
    return GuardedYoutubeDL


def _writable_home(work_dir: str) -> None:
    # yt-dlp expands "~" for its defaults; on Lambda HOME is unset or read-only.
    home = os.environ.get("HOME")
    if not home or not os.access(home, os.W_OK):
        os.environ["HOME"] = work_dir


def _ydl_params(settings: Settings, collector: _Collector, download_dir: Path | None,
                hooks: list) -> dict:
    from .ffmpeg import ffmpeg_binary

    def format_selector(ctx):
        chosen = select_audio_format(list(ctx.get("formats") or []))
        if chosen is not None:
            yield chosen

    params = {
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "no_color": True,
        "logger": collector,
        "format": format_selector,
        "noplaylist": True,
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "extractor_retries": RETRIES,
        "file_access_retries": 1,
        "retry_sleep_functions": {},
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "max_filesize": settings.max_source_bytes,
        "allowed_extractors": [re.escape(e.lower()) for e in settings.allowed_extractors],
        "hls_prefer_native": True,
        "fixup": "never",
        "postprocessors": [],
        "writethumbnail": False,
        "writesubtitles": False,
        "writeinfojson": False,
        "check_formats": False,
        "continuedl": False,
        "overwrites": True,
        "restrictfilenames": True,
        "cachedir": str(Path(settings.work_dir) / "yt-dlp-cache"),
        "ffmpeg_location": ffmpeg_binary(),
        "progress_hooks": hooks,
        "proxy": "",
    }
    if download_dir is not None:
        params["paths"] = {"home": str(download_dir), "temp": str(download_dir)}
        params["outtmpl"] = {"default": "media.%(ext)s"}
    return params


def _new_ydl(settings: Settings, collector: _Collector, download_dir: Path | None = None,
             hooks: list | None = None):
    _writable_home(settings.work_dir)
    connector = GuardedConnector(settings)
    ydl = _guarded_ydl_class()(_ydl_params(settings, collector, download_dir, hooks or []),
                               connector=connector)
    return ydl, connector


class _Deadline:
    """Wall-clock limit on everything one YoutubeDL does: a timer aborts its connections."""

    def __init__(self, connector: GuardedConnector, seconds: float, label: str, what: str):
        self.seconds, self.label, self.what = seconds, label, what
        self.fired = False
        self._connector = connector
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        self._connector.abort(f"deadline of {self.seconds:g} s reached")

    def error(self) -> SourceUnavailable:
        return SourceUnavailable(f"{self.label}: {self.what} did not finish within {self.seconds:g} s "
                                 "(the server is too slow)")

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._timer.cancel()
        # Whatever yt-dlp made of the cut connections, the reason is the deadline.
        if self.fired and exc is not None and not isinstance(exc, SourceRefused):
            raise self.error() from None


def _label(index: int, url: str) -> str:
    return part_label(index, url if len(url) <= 120 else url[:117] + "...")


def _extract(ydl, connector: GuardedConnector, url: str, *, index: int, settings: Settings) -> dict:
    """Metadata for ``url`` (no format selection, no download), following url results."""
    from yt_dlp.utils import DownloadError, YoutubeDLError

    label = _label(index, url)
    target, carried = single_video_url(url), {}
    for _ in range(MAX_URL_HOPS):
        try:
            info = ydl.extract_info(target, download=False, process=False)
        except (DownloadError, YoutubeDLError) as exc:
            raise classify_failure(exc, label, refusal=connector.refusal,
                                   max_bytes=settings.max_source_bytes) from None
        if info is None:
            raise SourceUnavailable(f"{label}: yt-dlp returned no information")
        kind = info.get("_type", "video")
        if kind in ("url", "url_transparent"):
            if kind == "url_transparent":
                carried.update({k: v for k, v in info.items()
                                if k in ("title", "duration") and v is not None})
            target = info["url"]
            try:
                check_url(target, settings, field="url")
            except SourceRefused as exc:
                raise SourceRefused(f"{label}: leads to {exc.message}") from None
            continue
        if kind != "video":
            raise SourceRefused(f"{label}: is a {kind}, not a single video or audio file")
        return {**carried, **info}
    raise SourceUnavailable(f"{label}: more than {MAX_URL_HOPS} redirections")


def check_info(info: dict, url: str, *, index: int, settings: Settings) -> SourceInfo:
    """Apply the source rules to a yt-dlp info dict (``process=False``) and name the source.

    Refuses (SourceRefused) a disallowed extractor, a live/upcoming stream, a known duration
    over ``settings.max_source_seconds``; SourceUnavailable when no audio format can be chosen.
    """
    label = _label(index, url)
    reason = (extractor_refusal(info, settings.allowed_extractors) or live_refusal(info)
              or duration_refusal(info.get("duration"), settings.max_source_seconds))
    if reason:
        raise SourceRefused(f"{label}: {reason}")
    chosen = select_audio_format(info_formats(info))
    if chosen is None:
        raise SourceUnavailable(f"{label}: no audio-only format to download")
    extractor, video_id = source_identity(str(info.get("extractor") or "generic"), info.get("id"), url)
    duration = info.get("duration")
    return SourceInfo(
        source_id=f"{extractor}:{video_id}", extractor=extractor, id=video_id,
        duration_s=float(duration) if duration is not None else None,
        title=info.get("title"), is_live=False, ext=safe_ext(chosen.get("ext") or info.get("ext")))


def _refuse_unsafe(url: str, *, index: int, settings: Settings) -> tuple[str, str]:
    """Up-front refusals (SSRF rule, extractor allow-list); returns the offline identity."""
    label = _label(index, url)
    reason = url_refusal(url, settings)
    if reason:
        raise SourceRefused(f"{label}: {reason}", part=index)
    extractor, video_id = offline_identity(url, settings)
    if extractor not in {a.lower() for a in settings.allowed_extractors}:
        raise SourceRefused(f"{label}: no allowed extractor handles this URL "
                            f"(allowed: {', '.join(settings.allowed_extractors)})", part=index)
    return extractor, video_id


# identify_url's metadata, reused by the fetch that usually follows within the same job, so a
# YouTube page is not extracted twice. Short-lived: signed media URLs expire.
INFO_MEMO_SECONDS = 300.0
_INFO_MEMO: dict[tuple, tuple[float, dict]] = {}
_INFO_MEMO_LOCK = threading.Lock()


def _memo_key(url: str, settings: Settings) -> tuple:
    return (normalise_url(url), settings.allowed_extractors, settings.allow_loopback_urls,
            settings.allowed_url_ports)


def _remember(url: str, settings: Settings, info: dict) -> None:
    now = time.monotonic()
    with _INFO_MEMO_LOCK:
        for key in [k for k, (t, _) in _INFO_MEMO.items() if now - t > INFO_MEMO_SECONDS]:
            del _INFO_MEMO[key]
        if len(_INFO_MEMO) >= 32:
            del _INFO_MEMO[min(_INFO_MEMO, key=lambda k: _INFO_MEMO[k][0])]
        _INFO_MEMO[_memo_key(url, settings)] = (now, info)


def _recall(url: str, settings: Settings) -> dict | None:
    with _INFO_MEMO_LOCK:
        found = _INFO_MEMO.pop(_memo_key(url, settings), None)
    if found and time.monotonic() - found[0] <= INFO_MEMO_SECONDS:
        return found[1]
    return None


def identify_url(url: str, *, index: int, settings: Settings) -> SourceInfo:
    """Read a URL's metadata (``extract_info(download=False)``) and apply the source rules.

    Raises SourceRefused (SSRF, live, too long, extractor not allowed), SourceUnavailable or
    TransientError, each with ``part=index``.
    """
    _refuse_unsafe(url, index=index, settings=settings)
    ydl, connector = _new_ydl(settings, _Collector())
    try:
        with ydl, _Deadline(connector, METADATA_DEADLINE_SECONDS, _label(index, url), "reading the metadata"):
            info = _extract(ydl, connector, url, index=index, settings=settings)
            source = check_info(info, url, index=index, settings=settings)
    except StitchError as exc:
        exc.part = index
        raise
    _remember(url, settings, info)
    return source


_YOUTUBE_HOSTS = re.compile(r"(^|\.)(youtube\.com|youtube-nocookie\.com)$")
_PLAYLIST_PARAMS = frozenset({"list", "index", "start_radio", "pp"})


def single_video_url(url: str) -> str:
    """A YouTube watch URL without its playlist parameters (``noplaylist`` made explicit).

    yt-dlp hands ``watch?v=X&list=Y`` to its playlist extractor, which is not an allowed one;
    the video alone is what a part means.
    """
    parts = urllib.parse.urlsplit(url)
    if not _YOUTUBE_HOSTS.search((parts.hostname or "").lower()):
        return url
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "v" for k, _ in query) or not any(k in _PLAYLIST_PARAMS for k, _ in query):
        return url
    kept = urllib.parse.urlencode([(k, v) for k, v in query if k not in _PLAYLIST_PARAMS])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, kept, parts.fragment))


def offline_identity(url: str, settings: Settings) -> tuple[str, str]:
    """``(extractor, id)`` decided from the URL alone, so a cached source needs no request.

    A specific allowed extractor (e.g. youtube) whose URL pattern matches gives its video id;
    anything else is the generic extractor and the URL hash.
    """
    from yt_dlp.extractor import gen_extractor_classes

    url = single_video_url(url)
    allowed = {a.lower() for a in settings.allowed_extractors}
    for ie in gen_extractor_classes():
        name = ie.IE_NAME.lower()
        if name in allowed and name != "generic" and ie.suitable(url):
            video_id = ie.get_temp_id(url)
            if video_id:
                return source_identity(name, video_id, url)
            break
    return source_identity("generic", None, url)


# --------------------------------------------------------------------------------------------
# Duration of a downloaded file


def measure_seconds(path: Path) -> float | None:
    """Duration of a downloaded file as the engine's probe reads it; None if it is not audio."""
    from .engine.probe import probe

    try:
        # walk=False: an MP3's duration from its header, as mutagen would; the engine walks the
        # frames (and checks truncation) when it stitches the part.
        return probe(path, walk=False).duration_s
    except StitchError:
        return None


# --------------------------------------------------------------------------------------------
# The source cache (S3) and the fetch


def _cached_key(s3_client, settings: Settings, extractor: str, video_id: str, label: str) -> str | None:
    prefix = cache_prefix(settings, extractor, video_id)
    try:
        resp = s3_client.list_objects_v2(Bucket=settings.bucket_input, Prefix=prefix, MaxKeys=5)
    except Exception as exc:  # the cache is an optimisation: without it, fetch from the origin
        log.warning("source cache lookup of %s failed: %s", prefix, exc)
        return None
    objects = sorted((o for o in resp.get("Contents", []) if o.get("Size", 0) > 0), key=lambda o: o["Key"])
    if not objects:
        return None
    # The cache may hold a source fetched under looser limits: today's limits still apply.
    if objects[0]["Size"] > settings.max_source_bytes:
        raise SourceRefused(f"{label}: file is larger than the {settings.max_source_bytes} byte limit")
    return objects[0]["Key"]


def _from_cache(s3_client, settings: Settings, key: str, target: Path, source_id: str,
                label: str) -> FetchedSource | None:
    tmp = target.with_name(f".{target.name}.part")
    try:
        resp = s3_client.get_object(Bucket=settings.bucket_input, Key=key)
        with open(tmp, "wb") as out:
            for chunk in resp["Body"].iter_chunks(1024 * 1024):
                out.write(chunk)
        os.replace(tmp, target)
    except Exception as exc:  # expired between list and get, throttled...: fetch from the origin
        log.warning("source cache read of %s failed (%s); fetching from the origin", key, exc)
        tmp.unlink(missing_ok=True)
        return None
    meta = resp.get("Metadata") or {}
    duration = float(meta["duration"]) if meta.get("duration") else None
    reason = duration_refusal(duration, settings.max_source_seconds)
    if reason:
        target.unlink(missing_ok=True)
        raise SourceRefused(f"{label}: {reason}")
    title = urllib.parse.unquote(meta["title"]) if meta.get("title") else None
    return FetchedSource(path=target, source_id=source_id, duration_s=duration, title=title, cached=True)


def _put_cache(s3_client, settings: Settings, key: str, path: Path, fetched: FetchedSource, url: str) -> None:
    meta = {"source-url": urllib.parse.quote(url[:1000], safe=":/?&=")}
    if fetched.duration_s is not None:
        meta["duration"] = f"{fetched.duration_s:.3f}"
    if fetched.title:
        meta["title"] = urllib.parse.quote(fetched.title[:500])
    try:
        with open(path, "rb") as body:
            # One PUT of a complete file to a content-addressed key: a concurrent identical
            # upload writes the same bytes, and a reader never sees a partial object.
            s3_client.put_object(Bucket=settings.bucket_input, Key=key, Body=body, Metadata=meta)
    except Exception as exc:  # the cache is an optimisation; the job has its file already
        log.warning("could not store source %s in the cache: %s", key, exc)


def _produced_file(result: dict | None, download_dir: Path) -> Path | None:
    for item in (result or {}).get("requested_downloads") or []:
        path = item.get("filepath")
        if path and Path(path).is_file():
            return Path(path)
    files = [p for p in download_dir.iterdir()
             if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp")) and p.stat().st_size > 0]
    return files[0] if len(files) == 1 else None


def fetch_url(url: str, *, index: int, workdir: Path, settings: Settings, s3_client) -> FetchedSource:
    """Get a URL part's audio into ``workdir``: from the source cache, else with yt-dlp.

    The cache object ``{sources_prefix}<extractor>/<id>.<ext>`` in the input bucket is written
    only after a complete, accepted download. On any failure nothing is left in the cache or in
    ``workdir``. Errors carry ``part=index``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch(url, index=index, workdir=workdir, settings=settings, s3_client=s3_client)
    except StitchError as exc:
        exc.part = index
        raise


def _fetch(url: str, *, index: int, workdir: Path, settings: Settings, s3_client) -> FetchedSource:
    from yt_dlp.utils import DownloadCancelled, DownloadError, YoutubeDLError

    label = _label(index, url)
    extractor, video_id = _refuse_unsafe(url, index=index, settings=settings)
    key = _cached_key(s3_client, settings, extractor, video_id, label)
    if key:
        hit = _from_cache(s3_client, settings, key, workdir / f"url-{index}.{key.rsplit('.', 1)[-1]}",
                          f"{extractor}:{video_id}", label)
        if hit:
            return hit

    collector = _Collector()
    download_dir = Path(tempfile.mkdtemp(prefix=f".fetch-{index}-", dir=workdir))

    class _Cancel(DownloadCancelled):
        def __init__(self, why: Exception):
            super().__init__(str(why))
            self.why = why

    def guard_progress(status: dict) -> None:
        # max_filesize only acts on a Content-Length; chunked or compressed bodies are capped here.
        done = status.get("downloaded_bytes") or 0
        if done > settings.max_source_bytes:
            raise _Cancel(_TooBig())

    try:
        ydl, connector = _new_ydl(settings, collector, download_dir, [guard_progress])
        with ydl, _Deadline(connector, DOWNLOAD_DEADLINE_SECONDS, label, "the download") as deadline:
            info = _recall(url, settings) or _extract(ydl, connector, url, index=index, settings=settings)
            source = check_info(info, url, index=index, settings=settings)
            if (source.extractor, source.id) != (extractor, video_id):
                # The URL led elsewhere (e.g. a short link to a YouTube video): maybe cached there.
                key = _cached_key(s3_client, settings, source.extractor, source.id, label)
                if key:
                    hit = _from_cache(s3_client, settings, key, workdir / f"url-{index}.{key.rsplit('.', 1)[-1]}",
                                      source.source_id, label)
                    if hit:
                        return hit
            try:
                result = ydl.process_ie_result(info, download=True)
            except _Cancel as exc:
                raise classify_failure(exc.why, label, max_bytes=settings.max_source_bytes) from None
            except (DownloadError, YoutubeDLError) as exc:
                raise classify_failure(exc, label, refusal=connector.refusal,
                                       max_bytes=settings.max_source_bytes) from None

        if deadline.fired:  # a body read until the connection closes looks complete: it is not
            raise deadline.error()
        produced = _produced_file(result, download_dir)
        if produced is None:
            # yt-dlp skips silently (size limit, filters): say why if it told us.
            if any("max-filesize" in m for m in collector.errors):
                raise SourceRefused(f"{label}: file is larger than the {settings.max_source_bytes} byte limit")
            detail = collector.errors[-1] if collector.errors else "yt-dlp produced no file"
            raise SourceUnavailable(f"{label}: {_ytdlp_message(Exception(detail))}")
        if produced.stat().st_size > settings.max_source_bytes:
            raise SourceRefused(f"{label}: file is larger than the {settings.max_source_bytes} byte limit")

        duration = source.duration_s
        if duration is None:
            duration = measure_seconds(produced)
            if duration is None:
                raise UnsupportedAudio(f"{label}: the downloaded file is not decodable audio")
            reason = duration_refusal(duration, settings.max_source_seconds)
            if reason:
                raise SourceRefused(f"{label}: {reason}")

        ext = safe_ext(produced.suffix.lstrip(".") or source.ext)
        target = workdir / f"url-{index}.{ext}"
        os.replace(produced, target)
        fetched = FetchedSource(path=target, source_id=source.source_id, duration_s=duration,
                                title=source.title, cached=False)
        _put_cache(s3_client, settings, f"{cache_prefix(settings, source.extractor, source.id)}{ext}",
                   target, fetched, url)
        return fetched
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(download_dir)
