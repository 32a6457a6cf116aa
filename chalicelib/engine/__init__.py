"""Stitching engine: ``stitch(parts, output_path, options) -> Result``.

Plans the join from the ``join`` option and the parts' own headers: a frame-level MP3 copy, or an
exact join (a decode graph streaming PCM into an encoder, see graph.py and encode.py).
"""
from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import BadRequest, StitchError, UnsupportedAudio
from ..options import Options
from . import mp3
from .probe import AudioInfo, probe
from .types import PartInput, PartSpan, Result

__all__ = ["stitch", "probe", "plan_join", "plan_mode", "AudioInfo", "PartInput", "PartSpan", "Result"]

# Trim points may overshoot a probed duration by this much: container durations are rounded.
_TRIM_SLACK_S = 0.05
# auto copies when what a frame join keeps at a join is under this share of both parts: 1 %
# (about 45 ms of padding next to 4.5 s parts) is masked by the parts themselves.
AUTO_MAX_KEPT = 0.01


def _part_field(index: int, name: str) -> str:
    return f"message_parts[{index}].{name}"


def _copyable(infos: list[AudioInfo], parts: list[PartInput], options: Options) -> bool:
    """Every part is clean MP3 of one stream kind, used whole, and nothing asks for decoding."""
    if options.format != "mp3" or options.needs_decode:
        return False
    if not all(p.options.is_identity for p in parts):
        return False
    heads = [i.mp3_head for i in infos]
    if any(h is None for h in heads) or not mp3.compatible(heads):
        return False
    # Only Layer III decoders know to skip a Xing/Info frame; in MP1/MP2 it would play as silence.
    return heads[0].header.layer == 3


def _padding_inaudible(heads: list[mp3.Mp3Head]) -> bool:
    """The auto rule: at every join, the encoder padding and delay a frame join keeps are under
    AUTO_MAX_KEPT of both parts it separates."""
    rate = heads[0].header.sample_rate
    for a, b in itertools.pairwise(heads):
        kept = ((a.vbr_tag.encoder_padding or 0) if a.vbr_tag else 0) + (
            (b.vbr_tag.encoder_delay or 0) if b.vbr_tag else 0)
        if kept >= AUTO_MAX_KEPT * min(a.duration_estimate, b.duration_estimate) * rate:
            return False
    return True


def plan_join(infos: list[AudioInfo], parts: list[PartInput], options: Options) -> str:
    """"copy" or "exact", from the ``join`` option and what the parts allow."""
    if not _copyable(infos, parts, options):
        return "exact"
    if options.join == "copy":
        return "copy"
    return "copy" if _padding_inaudible([i.mp3_head for i in infos]) else "exact"


def plan_mode(infos: list[AudioInfo], parts: list[PartInput], options: Options) -> str:
    """The older form of ``plan_join``: "copy" or "encode"."""
    return "copy" if plan_join(infos, parts, options) == "copy" else "encode"


def _segments(infos: list[AudioInfo], parts: list[PartInput]) -> list:
    """Each part's trimmed span, checked against its real duration."""
    from .segment import Segment

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


def _check_options(segments: list, options: Options) -> None:
    """Reject options that conflict with the parts' durations."""
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
    if plan_join(infos, parts, options) == "copy":
        try:
            return _copy(infos, output, progress)
        except _NotClean:
            pass  # junk between frames: ffmpeg decodes it fine, so re-encode instead
    infos = [probe(p.path, i, p.name) if info.mp3_head is not None else info
             for i, (p, info) in enumerate(zip(parts, infos, strict=True))]
    return _exact(infos, parts, output, options, progress)


class _NotClean(Exception):
    pass


def _copy(infos: list[AudioInfo], output: Path, progress) -> Result:
    def scan_part(i: int, head: mp3.Mp3Head, fd: int, copier, at: int) -> mp3.Mp3Scan:
        try:
            return copier.copy(fd, head, at)
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
    return Result(round(joined.samples / rate, 6), "mp3", joined.size_bytes, "copy", spans,
                  added_silence_ms=round(joined.kept_samples * 1000 / rate, 3))


def _exact(infos, parts, output: Path, options: Options, progress) -> Result:
    # Imported here: a copy join never needs the decoder's or encoder's machinery.
    from . import encode, graph, loudness, native

    segments = _segments(infos, parts)
    _check_options(segments, options)
    rate, channels = encode.output_rate(options, infos), encode.output_channels(options, infos)
    layout = graph.Layout.of(options, rate, channels, len(segments))
    ceiling = loudness.CEILING_DBTP["lossless" if options.output_format.lossless else "lossy"]
    if native.applies(options, segments, layout):
        # MP3s used whole: decoded in this process; only gains and fades need an ffmpeg. Each
        # part starts once its own level is known: measuring overlaps encoding.
        source = native.native_pcm(segments, layout, options.loudness_lufs, ceiling)
    elif graph.streams_parts(options, segments, layout):
        source = graph.streamed_pcm(segments, layout, options.loudness_lufs, ceiling)
    else:
        segments = loudness.leveled(segments, options.loudness_lufs, ceiling)
        source = graph.graph_pcm(segments, layout)
    total = layout.total(segments)
    with _temp_beside(output) as tmp:
        try:
            with source as pcm:
                encode.encode(pcm.stream, tmp, options, layout, total, progress)
        except graph.DecodeFailed as exc:
            raise _blame(infos, exc) from None
        size = os.path.getsize(tmp)
    if progress:
        progress(1.0)
    spans, at = [], 0
    for i, s in enumerate(pcm.segments):
        n = s.samples(rate)
        spans.append(PartSpan(i, round(at / rate, 6), round((at + n) / rate, 6), s.gain_limited_db))
        at += n + layout.gap - layout.crossfade
    return Result(round(total / rate, 6), options.format, size, "exact", spans)


def _blame(infos: list[AudioInfo], exc: StitchError) -> StitchError:
    """Turn an ffmpeg failure into an error naming the part it could not decode, if one can't."""
    from .encode import decodes

    for info in infos:
        if not decodes(info):
            return UnsupportedAudio(f"{info.label}: cannot be decoded ({info.codec})", part=info.index)
    return exc
