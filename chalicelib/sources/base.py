"""The contract every kind of part source meets, so the service never asks which kind a part is."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from ..spec import PartIdentity, PartSpec


class Source(Protocol):
    """Parts of one kind (``kind`` is the request field that names them: "key", "url")."""

    kind: str

    def identify(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        """Identities at request time, cheaply. A settled one names content (the cache can be asked
        and, when it is sized, the part rendered inline); an unsettled one waits for ``settle``."""
        ...

    def settle(self, parts: Sequence[PartSpec]) -> list[PartIdentity]:
        """In the worker: what unsettled parts really are (may call out, e.g. yt-dlp's metadata)."""
        ...

    def fetch(self, parts: Sequence[PartSpec], identities: Sequence[PartIdentity], workdir: Path, *,
              inline: bool, progress: Callable[[float], None] | None = None) -> dict[int, Path]:
        """The parts' bytes as local files, by part index, read as their identities pin them.

        ``inline``: the request is waiting (a part changed under it is worth a retry)."""
        ...
