"""The rules a URL part must pass, as pure functions of yt-dlp info dicts and URLs (no network).

Format choice, live and duration checks, the extractor allow-list and how a source is named in
the caches: tested on hand-written info dicts.
"""
from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import SourceRefused, SourceUnavailable, part_label

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


def url_label(index: int, url: str) -> str:
    return part_label(index, url if len(url) <= 120 else url[:117] + "...")


def check_info(info: dict, url: str, *, index: int, settings: Settings) -> SourceInfo:
    """Apply the source rules to a yt-dlp info dict (``process=False``) and name the source.

    Refuses (SourceRefused) a disallowed extractor, a live/upcoming stream, a known duration
    over ``settings.max_source_seconds``; SourceUnavailable when no audio format can be chosen.
    """
    label = url_label(index, url)
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
