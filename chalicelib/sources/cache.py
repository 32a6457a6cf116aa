"""The source cache: URL parts already fetched, kept in the input bucket under their source id.

An optimisation only: when it cannot be read or written, the part is fetched from its origin.
Content-addressed (``{sources_prefix}<extractor>/<id>.<ext>``), so a concurrent identical upload
writes the same bytes and a reader never sees a partial object.
"""
from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path

from ..config import Settings
from ..errors import SourceRefused
from ..store import Store
from .rules import FetchedSource, cache_prefix, duration_refusal

log = logging.getLogger(__name__)


class SourceCache:
    """Fetched sources over the ``Store`` adapter, checked against today's limits when read."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings

    def get(self, extractor: str, video_id: str, target: Path, label: str) -> FetchedSource | None:
        """The cached source as ``target`` plus the cached extension, or None (absent or unreadable).

        Raises SourceRefused when the cached file breaks today's size or duration limit (it may
        have been fetched under looser ones)."""
        key = self._find(extractor, video_id, label)
        if key is None:
            return None
        path = target.with_name(f"{target.name}.{key.rsplit('.', 1)[-1]}")
        try:
            meta = self.store.get_file(self.settings.bucket_input, key, path).metadata
        except Exception as exc:  # expired between list and get, throttled...: fetch from the origin
            log.warning("source cache read of %s failed (%s); fetching from the origin", key, exc)
            return None
        duration = float(meta["duration"]) if meta.get("duration") else None
        reason = duration_refusal(duration, self.settings.max_source_seconds)
        if reason:
            path.unlink(missing_ok=True)
            raise SourceRefused(f"{label}: {reason}")
        title = urllib.parse.unquote(meta["title"]) if meta.get("title") else None
        return FetchedSource(path=path, source_id=f"{extractor}:{video_id}", duration_s=duration, title=title,
                             cached=True)

    def _find(self, extractor: str, video_id: str, label: str) -> str | None:
        s = self.settings
        prefix = cache_prefix(s, extractor, video_id)
        try:
            found = self.store.list_prefix(s.bucket_input, prefix, max_keys=5)
        except Exception as exc:  # the cache is an optimisation: without it, fetch from the origin
            log.warning("source cache lookup of %s failed: %s", prefix, exc)
            return None
        objects = sorted((o for o in found if o.size > 0), key=lambda o: o.key)
        if not objects:
            return None
        if objects[0].size > s.max_source_bytes:
            raise SourceRefused(f"{label}: file is larger than the {s.max_source_bytes} byte limit")
        return objects[0].key

    def put(self, extractor: str, video_id: str, fetched: FetchedSource, url: str) -> None:
        """Keep a complete, accepted download (failures are logged: the job has its file already)."""
        s = self.settings
        key = f"{cache_prefix(s, extractor, video_id)}{fetched.path.suffix.lstrip('.')}"
        meta = {"source-url": urllib.parse.quote(url[:1000], safe=":/?&=")}
        if fetched.duration_s is not None:
            meta["duration"] = f"{fetched.duration_s:.3f}"
        if fetched.title:
            meta["title"] = urllib.parse.quote(fetched.title[:500])
        try:
            self.store.put_file(fetched.path, s.bucket_input, key, metadata=meta)
        except Exception as exc:
            log.warning("could not store source %s in the cache: %s", key, exc)
