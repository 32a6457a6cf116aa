"""The engine's public data types (no heavy imports: the API reads Result dicts too)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..options import PartOptions


@dataclass(frozen=True)
class PartInput:
    """One input file, in output order. ``name`` is used in error messages (defaults to the file name)."""

    path: Path
    options: PartOptions = field(default_factory=PartOptions)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


@dataclass(frozen=True)
class PartSpan:
    """Where a part sits in the output (chapters / cue points), in seconds."""

    index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Result:
    duration_s: float
    format: str
    size_bytes: int
    mode: str  # "copy" (frame-level join, no re-encode) or "encode"
    parts: list[PartSpan]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        return cls(
            duration_s=data["duration_s"], format=data["format"], size_bytes=data["size_bytes"],
            mode=data["mode"], parts=[PartSpan(**p) for p in data["parts"]],
        )
