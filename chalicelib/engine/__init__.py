"""Stitching engine: ``stitch(parts, output_path, options) -> Result``.

Plans a frame-level MP3 join when the parts allow it, otherwise one streaming ffmpeg pass.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import BadRequest, StitchError, UnsupportedAudio
from ..options import Options
from . import mp3
from .probe import AudioInfo, probe
from .types import PartInput, PartSpan, Result

__all__ = ["stitch", "probe", "plan_mode", "AudioInfo", "PartInput", "PartSpan", "Result"]

# Trim points may overshoot a probed duration by this much: container durations are rounded.
_TRIM_SLACK_S = 0.05


def _part_field(index: int, name: str) -> str:
    return f"message_parts[{index}].{name}"


def plan_mode(infos: list[AudioInfo], parts: list[PartInput], options: Options) -> str:
    """"copy" when every part is clean MP3 of one stream kind and nothing asks for decoding."""
    if options.format != "mp3" or options.needs_decode:
        return "encode"
    if not all(p.options.is_identity for p in parts):
        return "encode"
    heads = [i.mp3_head for i in infos]
    if any(h is None for h in heads) or not mp3.compatible(heads):
        return "encode"
    # Only Layer III decoders know to skip a Xing/Info frame; in MP1/MP2 it would play as silence.
    return "copy" if heads[0].header.layer == 3 else "encode"


def _segments(infos: list[AudioInfo], parts: list[PartInput]) -> list:
    """Each part's trimmed span, checked against its real duration."""
    from .encode import Segment

    segments = []
    for info, part in zip(infos, parts, strict=True):
        o = part.options
        start = o.start_s or 0.0
        if start >= info.duration_s:
            raise BadRequest(
                f"{info.label}: start_s ({start:g}) is at or beyond its end ({info.duration_s:.2f} s)",
                field=_part_field(info.index, "start_s"), part=info.index,
            )
        end = info.duration_s
        if o.end_s is not None:
            if o.end_s > info.duration_s + _TRIM_SLACK_S:
                raise BadRequest(
                    f"{info.label}: end_s ({o.end_s:g}) is beyond its end ({info.duration_s:.2f} s)",
                    field=_part_field(info.index, "end_s"), part=info.index,
                )
            end = min(o.end_s, info.duration_s)
        segments.append(Segment(info, start, end - start, o.gain_db, cut_end=o.end_s is not None))
    return segments


def _check_options(segments: list, options: Options) -> float:
    """Reject options that conflict with the parts' durations; return the output duration."""
    xf = options.crossfade_ms / 1000
    if xf and len(segments) > 1:
        for s in segments:
            if xf > s.duration_s:
                raise BadRequest(
                    f"crossfade_ms ({options.crossfade_ms}) is longer than {s.info.label} ({s.duration_s:.1f} s)",
                    field="crossfade_ms", part=s.info.index,
                )
    else:
        xf = 0.0
    total = sum(s.duration_s for s in segments) + (len(segments) - 1) * (options.gap_ms / 1000 - xf)
    for name in ("fade_in_ms", "fade_out_ms"):
        ms = getattr(options, name)
        if ms / 1000 > total + _TRIM_SLACK_S:
            raise BadRequest(f"{name} ({ms}) is longer than the output ({total:.1f} s)", field=name)
    return total


def _spans(durations: list[float], gap_s: float, overlap_s: float) -> list[PartSpan]:
    spans, at = [], 0.0
    for i, d in enumerate(durations):
        spans.append(PartSpan(i, round(at, 6), round(at + d, 6)))
        at += d + gap_s - overlap_s
    return spans


@contextlib.contextmanager
def _temp_beside(output: Path):
    """A temp path in the destination's directory, renamed over ``output`` only on success."""
    output.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: importing tempfile costs more than the rest of a small copy join.
    tmp = str(output.parent / f".{output.name}.{os.urandom(6).hex()}.partial")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stitch(parts: list[PartInput], output_path: str | Path, options: Options,
           progress: Callable[[float], None] | None = None) -> Result:
    """Join ``parts`` (in output order) into ``output_path``.

    Raises PartNotFound / UnsupportedAudio (``part`` = 0-based index) for bad inputs and
    BadRequest (``field`` = the option) for options that conflict with the parts' durations.
    Nothing is left at ``output_path`` on failure.
    """
    if not parts:
        raise BadRequest("at least one part is required", field="message_parts")
    output = Path(output_path)
    # MPEG parts are only peeked at first: a copy join walks their frames while copying them.
    infos = [probe(p.path, i, p.name, walk=False) for i, p in enumerate(parts)]
    if plan_mode(infos, parts, options) == "copy":
        try:
            return _copy(infos, output, progress)
        except _NotClean:
            pass  # junk between frames: ffmpeg decodes it fine, so re-encode instead
    infos = [probe(p.path, i, p.name) if info.mp3_head is not None else info
             for i, (p, info) in enumerate(zip(parts, infos, strict=True))]
    return _encode(infos, parts, output, options, progress)


class _NotClean(Exception):
    pass


def _copy(infos: list[AudioInfo], output: Path, progress) -> Result:
    def scan_part(i: int, head: mp3.Mp3Head, buf: bytearray) -> mp3.Mp3Scan:
        try:
            return mp3.scan(head.path, head, buf)
        except mp3.Mp3Truncated as exc:
            raise UnsupportedAudio(f"{infos[i].label}: {exc}", part=i) from None
        except mp3.Mp3Error:
            raise _NotClean() from None

    with _temp_beside(output) as tmp:
        joined = mp3.join([i.mp3_head for i in infos], tmp, scan_part)
    if progress:
        progress(1.0)
    rate = joined.sample_rate
    spans = [PartSpan(i, round(a / rate, 6), round(b / rate, 6)) for i, (a, b) in enumerate(joined.part_samples)]
    return Result(round(joined.samples / rate, 6), "mp3", joined.size_bytes, "copy", spans)


def _encode(infos, parts, output: Path, options: Options, progress) -> Result:
    # Imported here: a copy join never needs the encoder's machinery.
    from . import encode as enc

    segments = _segments(infos, parts)
    total = _check_options(segments, options)
    rate, channels = enc.output_rate(options, infos), enc.output_channels(options, infos)
    # Loudness matching without crossfades streams the parts into the encoder as their levels
    # become known (measuring overlaps encoding); crossfades need every part in one graph, so
    # there all levels are measured first.
    streamed = options.loudness_lufs is not None and not (options.crossfade_ms and len(segments) > 1)
    if options.loudness_lufs is not None and not streamed:
        gains = enc.loudness_gains(segments, options.loudness_lufs)
        segments = [enc.Segment(s.info, s.start_s, s.duration_s, s.gain_db + g, s.cut_end)
                    for s, g in zip(segments, gains, strict=True)]
    with _temp_beside(output) as tmp:
        try:
            if streamed:
                feed = enc.loudness_feed(segments, options.loudness_lufs, options, rate, channels)
                enc.run_ffmpeg(enc.stream_command(options, rate, channels, total, tmp), total, progress, feed)
            else:
                enc.run_ffmpeg(enc.build_command(segments, options, rate, channels, total, tmp), total, progress)
        except StitchError as exc:
            # Streamed parts are decoded by their own processes, which name a failing part
            # themselves: an encoder fed raw PCM has no part to blame.
            if streamed or isinstance(exc, (UnsupportedAudio, BadRequest)):
                raise
            raise _blame(infos, exc) from None
        size = os.path.getsize(tmp)
    if progress:
        progress(1.0)
    overlap = options.crossfade_ms / 1000 if len(segments) > 1 else 0.0
    spans = _spans([s.duration_s for s in segments], options.gap_ms / 1000, overlap)
    return Result(round(total, 6), options.format, size, "encode", spans)


def _blame(infos: list[AudioInfo], exc: StitchError) -> StitchError:
    """Turn an ffmpeg failure into an error naming the part it could not decode, if one can't."""
    from .encode import decodes

    for info in infos:
        if not decodes(info):
            return UnsupportedAudio(f"{info.label}: cannot be decoded ({info.codec})", part=info.index)
    return exc
