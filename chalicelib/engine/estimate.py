"""Guesses about a stitch made before any part is read: what the service's inline budget needs.

Next to ``plan_join`` because it predicts it: keep the two in step when the plan's rules change.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..options import Options, PartOptions

# join=auto copies only parts long enough for the padding kept at a join to be inaudible (about
# 4.5 s at 44.1 kHz); objects smaller than this are likely shorter, so their join likely re-encodes.
AUTO_COPY_MIN_PART_BYTES = 100_000


def copy_likely(options: Options, parts: Iterable[tuple[str, PartOptions]],
                sizes: Iterable[int] | None = None) -> bool:
    """Whether ``plan_join`` will probably copy frames rather than re-encode, from ``(name, options)``
    per part: the names' extensions stand in for the probe, and the objects' ``sizes`` for their
    lengths under ``join=auto``. A wrong guess costs time, never correctness."""
    if options.join == "exact":
        return False
    if options.join == "auto" and sizes is not None and min(sizes, default=0) < AUTO_COPY_MIN_PART_BYTES:
        return False
    return options.format == "mp3" and not options.needs_decode and all(
        name.lower().endswith(".mp3") and part.is_identity for name, part in parts)
