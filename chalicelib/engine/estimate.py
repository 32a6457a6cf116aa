"""Guesses about a stitch made before any part is read: what the service's inline budget needs.

Next to ``plan_join`` because it predicts it: keep the two in step when the plan's rules change.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..options import Options, PartOptions


def copy_likely(options: Options, parts: Iterable[tuple[str, PartOptions]]) -> bool:
    """Whether ``plan_join`` will probably copy frames rather than re-encode, from ``(name, options)``
    per part: the names' extensions stand in for the probe. ``join=auto`` may still re-encode
    parts whose padding would be heard; a wrong guess costs time, never correctness."""
    return options.format == "mp3" and not options.needs_decode and all(
        name.lower().endswith(".mp3") and part.is_identity for name, part in parts)
