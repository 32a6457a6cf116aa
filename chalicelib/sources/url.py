"""URL and YouTube parts: identify with yt-dlp, fetch the audio onto local disk, keep it in the source cache.

yt-dlp is imported inside functions only (the REST path must not pay for it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import Settings
from ..errors import SourceRefused, SourceUnavailable, StitchError, UnsupportedAudio
from ..spec import PartIdentity, PartSpec
from ..urlguard import GuardedConnector, check_url, url_refusal
from .cache import SourceCache
from .failures import TooBig, classify_failure, ytdlp_message
from .rules import (
    FetchedSource,
    SourceInfo,
    check_info,
    duration_refusal,
    normalise_url,
    safe_ext,
    single_video_url,
    source_identity,
    url_label,
)
from .ytdlp import Collector, Deadline, new_ydl

log = logging.getLogger(__name__)

METADATA_DEADLINE_SECONDS = 120.0
DOWNLOAD_DEADLINE_SECONDS = 600.0
MAX_URL_HOPS = 5


def _extract(ydl, connector: GuardedConnector, url: str, *, index: int, settings: Settings) -> dict:
    """Metadata for ``url`` (no format selection, no download), following url results."""
    from yt_dlp.utils import DownloadError, YoutubeDLError

    label = url_label(index, url)
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


def _refuse_unsafe(url: str, *, index: int, settings: Settings) -> tuple[str, str]:
    """Up-front refusals (SSRF rule, extractor allow-list); returns the offline identity."""
    label = url_label(index, url)
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
    ydl, connector = new_ydl(settings, Collector())
    try:
        with ydl, Deadline(connector, METADATA_DEADLINE_SECONDS, url_label(index, url), "reading the metadata"):
            info = _extract(ydl, connector, url, index=index, settings=settings)
            source = check_info(info, url, index=index, settings=settings)
    except StitchError as exc:
        exc.part = index
        raise
    _remember(url, settings, info)
    return source


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


def measure_seconds(path: Path) -> float | None:
    """Duration of a downloaded file as the engine's probe reads it; None if it is not audio."""
    from ..engine.probe import probe

    try:
        # walk=False: an MP3's duration from its header, as mutagen would; the engine walks the
        # frames (and checks truncation) when it stitches the part.
        return probe(path, walk=False).duration_s
    except StitchError:
        return None


def _produced_file(result: dict | None, download_dir: Path) -> Path | None:
    for item in (result or {}).get("requested_downloads") or []:
        path = item.get("filepath")
        if path and Path(path).is_file():
            return Path(path)
    files = [p for p in download_dir.iterdir()
             if p.is_file() and not p.name.endswith((".part", ".ytdl", ".temp")) and p.stat().st_size > 0]
    return files[0] if len(files) == 1 else None


def fetch_url(url: str, *, index: int, workdir: Path, settings: Settings, cache: SourceCache) -> FetchedSource:
    """Get a URL part's audio into ``workdir``: from the source cache, else with yt-dlp.

    The cache object ``{sources_prefix}<extractor>/<id>.<ext>`` in the input bucket is written
    only after a complete, accepted download. On any failure nothing is left in the cache or in
    ``workdir``. Errors carry ``part=index``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch(url, index=index, workdir=workdir, settings=settings, cache=cache)
    except StitchError as exc:
        exc.part = index
        raise


def _fetch(url: str, *, index: int, workdir: Path, settings: Settings, cache: SourceCache) -> FetchedSource:
    from yt_dlp.utils import DownloadCancelled, DownloadError, YoutubeDLError

    label = url_label(index, url)
    extractor, video_id = _refuse_unsafe(url, index=index, settings=settings)
    hit = cache.get(extractor, video_id, workdir / f"url-{index}", label)
    if hit:
        return hit

    collector = Collector()
    download_dir = Path(tempfile.mkdtemp(prefix=f".fetch-{index}-", dir=workdir))

    class _Cancel(DownloadCancelled):
        def __init__(self, why: Exception):
            super().__init__(str(why))
            self.why = why

    def guard_progress(status: dict) -> None:
        # max_filesize only acts on a Content-Length; chunked or compressed bodies are capped here.
        done = status.get("downloaded_bytes") or 0
        if done > settings.max_source_bytes:
            raise _Cancel(TooBig())

    try:
        ydl, connector = new_ydl(settings, collector, download_dir, [guard_progress])
        with ydl, Deadline(connector, DOWNLOAD_DEADLINE_SECONDS, label, "the download") as deadline:
            info = _recall(url, settings) or _extract(ydl, connector, url, index=index, settings=settings)
            source = check_info(info, url, index=index, settings=settings)
            if (source.extractor, source.id) != (extractor, video_id):
                # The URL led elsewhere (e.g. a short link to a YouTube video): maybe cached there.
                hit = cache.get(source.extractor, source.id, workdir / f"url-{index}", label)
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
            raise SourceUnavailable(f"{label}: {ytdlp_message(Exception(detail))}")
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
        cache.put(source.extractor, source.id, fetched, url)
        return fetched
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(download_dir)


class UrlSource:
    """Parts named by an http(s) link: identified as spelled, settled and fetched in the worker."""

    kind = "url"

    def __init__(self, settings: Settings, cache: SourceCache):
        self.settings = settings
        self.cache = cache

    def identify(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        # Never settled at request time: naming the content takes yt-dlp, which is the worker's job.
        return [PartIdentity.of_url(p) for p in parts]

    def settle(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        return [PartIdentity.of_source(p, identify_url(p.url, index=p.index, settings=self.settings).source_id)
                for p in parts]

    def fetch(self, parts: Sequence[PartSpec], identities: Sequence[PartIdentity], workdir: Path, *,
              inline: bool, progress: Callable[[float], None] | None = None) -> dict[int, Path]:
        paths = {}
        for n, p in enumerate(parts, 1):
            fetched = fetch_url(p.url, index=p.index, workdir=workdir, settings=self.settings, cache=self.cache)
            paths[p.index] = Path(fetched.path)
            if progress is not None:
                progress(n / len(parts))
        return paths
