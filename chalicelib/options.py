"""Output options and per-part options: the engine's input contract, validated in one place.

Pure data, standard library only, so the REST path can validate a request without importing
the engine. The engine, the API (spec.py) and the CLI all build these through ``from_dict``,
which names the offending field in every error.
"""
from __future__ import annotations

import math
import re

from .errors import BadRequest
from .records import asdict, fields, record

# Bump when the engine's output for the same input and options changes: it is part of the
# cache key, so old cached results stop being served.
ENGINE_VERSION = "4"  # 4: plain MP3 joins decoded by libsndfile in this process (other bytes); 3: MP3 chunks from LAME in this process


@record(frozen=True)
class Format:
    name: str
    extension: str
    content_type: str
    codec: str  # ffmpeg encoder
    muxer: str  # ffmpeg -f
    lossless: bool = False


FORMATS: dict[str, Format] = {
    "mp3": Format("mp3", "mp3", "audio/mpeg", "libmp3lame", "mp3"),
    "m4a": Format("m4a", "m4a", "audio/mp4", "aac", "ipod"),
    "ogg": Format("ogg", "ogg", "audio/ogg", "libvorbis", "ogg"),
    "wav": Format("wav", "wav", "audio/wav", "pcm_s16le", "wav", lossless=True),
    "flac": Format("flac", "flac", "audio/flac", "flac", "flac", lossless=True),
}
SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_BITRATE = re.compile(r"^(\d{1,3})k$")
MAX_GAP_MS = 60_000
MAX_FADE_MS = 600_000
MAX_CROSSFADE_MS = 60_000
MAX_GAIN_DB = 60.0
# libvorbis refuses a bitrate outside what its modes cover for the output's rate and channels
# (measured with the shipped ffmpeg, 1 kbit/s steps): (sample rate, channels) -> (lo, hi) kbit/s.
VORBIS_KBPS = {
    (8000, 1): (8, 42), (8000, 2): (12, 84), (11025, 1): (12, 50), (11025, 2): (16, 100),
    (12000, 1): (12, 50), (12000, 2): (16, 100), (16000, 1): (16, 100), (16000, 2): (24, 200),
    (22050, 1): (16, 90), (22050, 2): (30, 180), (24000, 1): (16, 90), (24000, 2): (30, 180),
    (32000, 1): (30, 190), (32000, 2): (36, 320), (44100, 1): (32, 240), (44100, 2): (45, 320),
    (48000, 1): (32, 240), (48000, 2): (45, 320),
}
# How parts are joined: "exact" decodes and re-encodes so the output plays exactly the parts'
# gapless lengths; "copy" joins MP3 frames as they are (fast, keeps encoder padding at each join)
# wherever the parts allow it; "auto" copies only where the padding kept could not be heard.
JOIN_POLICIES = ("auto", "exact", "copy")


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _number(data: dict, name: str, prefix: str, *, integer: bool, lo: float, hi: float):
    """Read an optional number from ``data``; bools and strings are rejected."""
    value = data.get(name)
    if value is None:
        return None
    where = _field(prefix, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"{where} must be {kind}, got {type(value).__name__}", field=where)
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise BadRequest(f"{where} must be an integer, got {value}", field=where)
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{where} must be a finite number", field=where)
    if not lo <= value <= hi:
        raise BadRequest(f"{where} must be between {lo:g} and {hi:g}, got {value:g}", field=where)
    return value


def bitrate_range(fmt: str, rate: int, channels: int) -> tuple[int, int]:
    """The kbit/s range the encoder of ``fmt`` accepts at this output rate and channel count."""
    if fmt != "ogg":
        return 8, 320
    # An unlisted rate (an input at 96 kHz kept as is) is judged like the nearest listed one below it.
    listed = [r for r, c in VORBIS_KBPS if c == min(channels, 2) and r <= rate] or [8000]
    return VORBIS_KBPS[(max(listed), min(channels, 2))]


def check_bitrate(fmt: str, bitrate: str, rate: int, channels: int, where: str = "bitrate") -> None:
    """BadRequest naming ``where`` when the encoder would refuse ``bitrate`` for this output."""
    lo, hi = bitrate_range(fmt, rate, channels)
    kbps = int(bitrate.rstrip("k"))
    if not lo <= kbps <= hi:
        layout = "mono" if channels == 1 else "stereo"
        raise BadRequest(f"{where} {bitrate} is outside what {fmt} can encode at {rate} Hz {layout} "
                         f"({lo}k to {hi}k); pick a bitrate in that range, or another sample_rate or channels",
                         field=where)


def reject_unknown(data: dict, allowed: set[str], prefix: str = "") -> None:
    """Raise BadRequest naming the first field of ``data`` not in ``allowed``."""
    for name in data:
        if name not in allowed:
            where = _field(prefix, str(name))
            raise BadRequest(f"unknown field {where}", field=where)


@record(frozen=True)
class PartOptions:
    """Per-part trim (seconds in the source) and gain."""

    start_s: float | None = None
    end_s: float | None = None
    gain_db: float = 0.0

    FIELDS = ("start_s", "end_s", "gain_db")

    @classmethod
    def from_dict(cls, data: dict, prefix: str = "") -> PartOptions:
        start = _number(data, "start_s", prefix, integer=False, lo=0, hi=86_400)
        end = _number(data, "end_s", prefix, integer=False, lo=0, hi=86_400)
        if end is not None and end <= 0:
            where = _field(prefix, "end_s")
            raise BadRequest(f"{where} must be greater than 0 (it is where the part stops), got {end:g}", field=where)
        gain = _number(data, "gain_db", prefix, integer=False, lo=-MAX_GAIN_DB, hi=MAX_GAIN_DB)
        if start is not None and end is not None and end <= start:
            where = _field(prefix, "end_s")
            raise BadRequest(f"{where} ({end:g}) must be after start_s ({start:g})", field=where)
        return cls(
            start_s=float(start) if start is not None else None,
            end_s=float(end) if end is not None else None,
            gain_db=float(gain or 0.0),
        )

    @property
    def is_identity(self) -> bool:
        """True when the part is used whole and unchanged (a copy-mode join is possible)."""
        return self.start_s in (None, 0.0) and self.end_s is None and self.gain_db == 0.0

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@record(frozen=True)
class Options:
    """Job-wide output options. ``None`` means "keep what the inputs have" where that applies."""

    format: str = "mp3"
    bitrate: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    gap_ms: int = 0
    crossfade_ms: int = 0
    fade_in_ms: int = 0
    fade_out_ms: int = 0
    loudness_lufs: float | None = None
    join: str = "auto"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict, prefix: str = "") -> Options:
        """Validate the option fields present in ``data`` (other keys are the caller's)."""
        fmt = data.get("format", "mp3")
        if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
            where = _field(prefix, "format")
            raise BadRequest(f"{where} must be one of {', '.join(FORMATS)}, got {fmt!r}", field=where)
        fmt = fmt.lower()
        bitrate = data.get("bitrate")
        if bitrate is not None:
            where = _field(prefix, "bitrate")
            if isinstance(bitrate, int) and not isinstance(bitrate, bool):
                bitrate = f"{bitrate}k"
            m = _BITRATE.match(bitrate) if isinstance(bitrate, str) else None
            if not m or not 8 <= int(m.group(1)) <= 320:
                raise BadRequest(f"{where} must look like '128k' (8k to 320k), got {bitrate!r}", field=where)
            if FORMATS[fmt].lossless:
                raise BadRequest(f"{where} does not apply to lossless format {fmt}", field=where)
        rate = _number(data, "sample_rate", prefix, integer=True, lo=8000, hi=48000)
        if rate is not None and rate not in SAMPLE_RATES:
            where = _field(prefix, "sample_rate")
            allowed = ", ".join(str(r) for r in SAMPLE_RATES)
            raise BadRequest(f"{where} must be one of {allowed}, got {rate}", field=where)
        channels = _number(data, "channels", prefix, integer=True, lo=1, hi=2)
        if bitrate is not None:
            # Without a rate or channel count the inputs decide: refuse only what no output could
            # encode here; the engine checks the exact range once it knows the inputs.
            where = _field(prefix, "bitrate")
            if rate and channels:
                check_bitrate(fmt, bitrate, rate, channels, where)
            else:
                ranges = [bitrate_range(fmt, r, c) for r in ((rate,) if rate else SAMPLE_RATES)
                          for c in ((channels,) if channels else (1, 2))]
                lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
                if not lo <= int(bitrate[:-1]) <= hi:
                    raise BadRequest(f"{where} {bitrate} is outside what {fmt} can encode ({lo}k to {hi}k)",
                                     field=where)
        gap = _number(data, "gap_ms", prefix, integer=True, lo=0, hi=MAX_GAP_MS) or 0
        crossfade = _number(data, "crossfade_ms", prefix, integer=True, lo=0, hi=MAX_CROSSFADE_MS) or 0
        if gap and crossfade:
            where = _field(prefix, "crossfade_ms")
            raise BadRequest(f"{where} and gap_ms cannot both be set", field=where)
        fade_in = _number(data, "fade_in_ms", prefix, integer=True, lo=0, hi=MAX_FADE_MS) or 0
        fade_out = _number(data, "fade_out_ms", prefix, integer=True, lo=0, hi=MAX_FADE_MS) or 0
        lufs = _number(data, "loudness_lufs", prefix, integer=False, lo=-70, hi=-5)
        join = data.get("join", "auto")
        if not isinstance(join, str) or join.lower() not in JOIN_POLICIES:
            where = _field(prefix, "join")
            raise BadRequest(f"{where} must be one of {', '.join(JOIN_POLICIES)}, got {join!r}", field=where)
        return cls(
            format=fmt,
            bitrate=bitrate,
            sample_rate=rate,
            channels=channels,
            gap_ms=gap,
            crossfade_ms=crossfade,
            fade_in_ms=fade_in,
            fade_out_ms=fade_out,
            loudness_lufs=float(lufs) if lufs is not None else None,
            join=join.lower(),
        )

    def encoder_bitrate(self, rate: int, channels: int, default: str | None) -> str | None:
        """The bitrate to encode with: the requested one (BadRequest if the encoder would refuse
        it at this rate and channel count), else ``default`` brought into the encoder's range."""
        if self.bitrate is not None:
            check_bitrate(self.format, self.bitrate, rate, channels)
            return self.bitrate
        if default is None:
            return None
        lo, hi = bitrate_range(self.format, rate, channels)
        return f"{min(max(int(default[:-1]), lo), hi)}k"

    @property
    def output_format(self) -> Format:
        return FORMATS[self.format]

    @property
    def needs_decode(self) -> bool:
        """True when an option forces a re-encode whatever the inputs are."""
        return bool(
            self.join == "exact" or self.sample_rate or self.channels or self.bitrate or self.gap_ms or self.crossfade_ms
            or self.fade_in_ms or self.fade_out_ms or self.loudness_lufs is not None
        )

    def to_dict(self) -> dict:
        """Canonical form (for cache keys and job records): defaults included, None dropped."""
        return {k: v for k, v in asdict(self).items() if v is not None}
