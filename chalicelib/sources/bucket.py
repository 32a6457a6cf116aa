"""Parts named by a key in the input bucket: identified by one HEAD, pinned to that version."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import Settings
from ..errors import PartNotFound, TransientError, part_label
from ..spec import PartIdentity, PartSpec
from ..store import ObjectChanged, ObjectMissing, Store

DOWNLOAD_WORKERS = 8


class BucketSource:
    kind = "key"

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings

    def _missing(self, part: PartSpec, what: str = "no such key") -> PartNotFound:
        return PartNotFound(f"{part_label(part.index, part.key)}: {what} in bucket {self.settings.bucket_input}",
                            part=part.index)

    def identify(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        """HEAD every distinct key at once (a jingle used 10 times is one HEAD); PartNotFound for a missing one."""
        bucket = self.settings.bucket_input
        unique = list(dict.fromkeys(p.key for p in parts))
        heads = dict(zip(unique, self.store.head_many(bucket, unique), strict=True))
        identities = []
        for part in parts:
            info = heads[part.key]
            if info is None:
                raise self._missing(part)
            identities.append(PartIdentity.of_object(part, bucket, info.etag, info.version_id, size_bytes=info.size))
        return identities

    def settle(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        # Never needed (identify settles bucket parts); asked anyway, a fresh HEAD is the answer.
        return self.identify(parts)

    def fetch(self, parts: Sequence[PartSpec], identities: Sequence[PartIdentity], workdir: Path, *,
              inline: bool, progress: Callable[[float], None] | None = None) -> dict[int, Path]:
        """Download concurrently; parts reading the same object version share one download (the
        engine only reads them)."""

        def one(part: PartSpec) -> tuple[int, Path]:
            ident = identities[part.index]
            target = workdir / f"part-{part.index:03d}{Path(part.key).suffix[:10]}"
            try:
                return part.index, self.store.download(ident.bucket or self.settings.bucket_input, part.key, target,
                                                       etag=ident.etag, version_id=ident.version_id)
            except ObjectMissing:
                raise self._missing(part) from None
            except ObjectChanged:
                message = f"{part_label(part.index, part.key)}: the object was replaced while the request ran"
                if inline:
                    raise TransientError(message + "; retry", part=part.index) from None
                raise PartNotFound(message + "; submit the request again", part=part.index) from None

        firsts: dict[tuple, PartSpec] = {}
        for p in parts:
            firsts.setdefault(identities[p.index].object_ref, p)
        if not firsts:
            return {}
        with ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, len(firsts))) as pool:
            got = dict(pool.map(one, firsts.values()))
        return {p.index: got[firsts[identities[p.index].object_ref].index] for p in parts}
