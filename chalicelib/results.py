"""A stitched result as the service keeps it: one type, and the three forms it is stored in.

The cache object's S3 metadata (what a cache hit reads back), the job record's JSON (what
``GET /jobs`` reads back) and the public body all come from here, so a hit, a fresh render and a
finished job answer alike. Standard library only: the REST path reads results on every hit.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_PARTS_METADATA = 1500  # S3 user metadata is capped at 2 KB; longer part lists go to a sidecar
SIDECAR = "sidecar"


def _ms(seconds: float) -> float:
    # Milliseconds are what the metadata keeps: rounding once, here, is what makes a hit and a
    # miss give the same numbers.
    return round(float(seconds), 3)


@dataclass(frozen=True)
class Span:
    """Where a part sits in the output, in seconds; ``gain_limited_db`` as the engine reported it."""

    index: int
    start_s: float
    end_s: float
    gain_limited_db: float = 0.0

    @classmethod
    def from_dict(cls, data: dict) -> Span:
        return cls(int(data["index"]), _ms(data["start_s"]), _ms(data["end_s"]),
                   float(data.get("gain_limited_db") or 0.0))

    def to_dict(self) -> dict:
        data = {"index": self.index, "start_s": self.start_s, "end_s": self.end_s}
        if self.gain_limited_db:
            data["gain_limited_db"] = self.gain_limited_db
        return data


def encode_spans(spans: tuple[Span, ...]) -> str:
    """The compact metadata form: ``start-end`` per part, ``:limit`` appended when a boost was limited."""
    return ",".join(f"{s.start_s:.3f}-{s.end_s:.3f}" + (f":{s.gain_limited_db:g}" if s.gain_limited_db else "")
                    for s in spans)


def decode_spans(text: str) -> tuple[Span, ...]:
    spans = []
    for i, item in enumerate(filter(None, text.split(","))):
        span, _, limited = item.partition(":")
        start, end = span.split("-")
        spans.append(Span(i, float(start), float(end), float(limited) if limited else 0.0))
    return tuple(spans)


@dataclass(frozen=True)
class StoredResult:
    """A result in the output bucket: where it is, and what the engine said about it."""

    cache_key: str
    output_key: str
    duration_s: float
    format: str
    size_bytes: int
    mode: str
    parts: tuple[Span, ...]
    join: str = ""  # "" in job records written before the engine reported it
    added_silence_ms: float = 0.0

    @classmethod
    def from_engine(cls, cache_key: str, output_key: str, result, size_bytes: int) -> StoredResult:
        """From the engine's ``Result`` (``engine.types``; not imported: the REST path stays light)."""
        return cls(cache_key, output_key, _ms(result.duration_s), result.format, int(size_bytes), result.mode,
                   tuple(Span.from_dict(p.to_dict()) for p in result.parts), result.join,
                   float(result.added_silence_ms))

    # -- the cache object's metadata ---------------------------------------------------------------
    def metadata(self, engine_version: str) -> dict:
        """S3 user metadata; ``parts`` is ``"sidecar"`` when the spans need the ``sidecar()`` document."""
        meta = {"duration-s": f"{self.duration_s:.3f}", "mode": self.mode, "engine": engine_version}
        if self.join:
            meta["join"] = self.join
            meta["added-silence-ms"] = f"{self.added_silence_ms:g}"
        encoded = encode_spans(self.parts)
        meta["parts"] = SIDECAR if len(encoded) > MAX_PARTS_METADATA else encoded
        return meta

    def sidecar(self) -> dict | None:
        """The JSON document kept next to the object when the spans do not fit in its metadata."""
        if len(encode_spans(self.parts)) <= MAX_PARTS_METADATA:
            return None
        return {"parts": [p.to_dict() for p in self.parts]}

    @staticmethod
    def needs_sidecar(meta: dict) -> bool:
        return meta.get("parts") == SIDECAR

    @classmethod
    def from_metadata(cls, cache_key: str, output_key: str, fmt: str, size_bytes: int, meta: dict,
                      sidecar: dict | None = None) -> StoredResult:
        """Read back what ``metadata`` wrote; KeyError/ValueError when it is not ours."""
        if cls.needs_sidecar(meta):
            if sidecar is None:
                raise KeyError("sidecar")
            parts = tuple(Span.from_dict(p) for p in sidecar["parts"])
        else:
            parts = decode_spans(meta.get("parts", ""))
        return cls(cache_key, output_key, float(meta["duration-s"]), fmt, int(size_bytes), meta.get("mode", ""),
                   parts, meta.get("join", ""), float(meta.get("added-silence-ms") or 0.0))

    # -- the job record -----------------------------------------------------------------------------
    def to_record(self, *, cached: bool) -> dict:
        """The job record's ``result``: this, and whether the job found it in the cache."""
        return {"cache_key": self.cache_key, "output_key": self.output_key, "cached": cached,
                **self._described()}

    @classmethod
    def from_record(cls, data: dict) -> StoredResult:
        return cls(data["cache_key"], data["output_key"], float(data["duration_s"]), data["format"],
                   int(data["size_bytes"]), data.get("mode", ""),
                   tuple(Span.from_dict(p) for p in data.get("parts", [])),
                   data.get("join", ""), float(data.get("added_silence_ms") or 0.0))

    # -- the API ------------------------------------------------------------------------------------
    def public(self, *, url: str | None, expires_at: str | None, cached: bool) -> dict:
        """The 200 body (and a job's ``result``): this with a presigned link."""
        return {"public_url": url, "cached": cached, "cache_key": self.cache_key, **self._described(),
                "expires_at": expires_at}

    def _described(self) -> dict:
        body = {"duration_s": self.duration_s, "format": self.format, "size_bytes": self.size_bytes,
                "mode": self.mode}
        if self.join:
            body["join"] = self.join
            body["added_silence_ms"] = self.added_silence_ms
        body["parts"] = [p.to_dict() for p in self.parts]
        return body
