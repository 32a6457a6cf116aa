"""The engine's public data types (no heavy imports: the API reads Result dicts too)."""
from __future__ import annotations

from pathlib import Path

from ..options import PartOptions
from ..records import field, record


@record(frozen=True)
class PartInput:
    """One input file, in output order. ``name`` is used in error messages (defaults to the file name)."""

    path: Path
    options: PartOptions = field(default_factory=PartOptions)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


@record(frozen=True)
class PartSpan:
    """Where a part sits in the output (chapters / cue points), in seconds as a decoder plays it.

    ``gain_limited_db`` > 0: the part's boost (gain_db and/or loudness matching) was lowered by
    that much to keep the output's true peak at or under -1 dBTP."""

    index: int
    start_s: float
    end_s: float
    gain_limited_db: float = 0.0

    def to_dict(self) -> dict:
        data = {"index": self.index, "start_s": self.start_s, "end_s": self.end_s}
        if self.gain_limited_db:
            data["gain_limited_db"] = self.gain_limited_db
        return data


@record(frozen=True)
class Result:
    """What ``stitch`` wrote. ``join`` is how: "copy" (MP3 frames joined as they are, keeping
    ``added_silence_ms`` of encoder padding at the joins) or "exact" (decoded and re-encoded to
    the sample; ``added_silence_ms`` is 0)."""

    duration_s: float
    format: str
    size_bytes: int
    join: str
    parts: list[PartSpan]
    added_silence_ms: float = 0.0

    @property
    def mode(self) -> str:
        """The older name of ``join``: "copy" or "encode"."""
        return "copy" if self.join == "copy" else "encode"

    def to_dict(self) -> dict:
        return {"duration_s": self.duration_s, "format": self.format, "size_bytes": self.size_bytes,
                "join": self.join, "mode": self.mode, "added_silence_ms": self.added_silence_ms,
                "parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        join = data.get("join") or ("copy" if data.get("mode") == "copy" else "exact")
        return cls(
            duration_s=data["duration_s"], format=data["format"], size_bytes=data["size_bytes"],
            join=join, parts=[PartSpan(**p) for p in data["parts"]],
            added_silence_ms=data.get("added_silence_ms", 0.0),
        )
