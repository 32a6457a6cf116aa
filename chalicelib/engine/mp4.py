"""The gapless length of an MP4/M4A audio track, from its own headers: the edit list (what
ffmpeg and Apple write) or the iTunSMPB tag (iTunes' encoder). The container's duration counts
the encoder's priming and padding too."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_MAX_MOOV = 64 << 20  # a moov larger than this is not an audio file we can judge cheaply


@dataclass(frozen=True)
class Mp4Gapless:
    samples: int  # at the track's sample rate
    lead_in: int = 0  # priming samples a decoder outputs that ffmpeg does not skip by itself


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _find_moov(path: Path) -> bytes | None:
    with open(path, "rb") as f:
        pos = 0
        while True:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return None
            size, kind = struct.unpack_from(">I4s", head)
            header = 8
            if size == 1:
                size, header = struct.unpack_from(">Q", head, 8)[0], 16
            if size < header:
                return None
            if kind == b"moov":
                if size > _MAX_MOOV:
                    return None
                f.seek(pos)
                return f.read(size)
            pos += size


def _full_box_times(data: bytes, start: int) -> tuple[int, int]:
    """(timescale, duration) of an mvhd/mdhd box body."""
    if data[start] == 1:
        return struct.unpack_from(">IQ", data, start + 20)
    return struct.unpack_from(">II", data, start + 12)


def gapless(path: Path, rate: int, smpb: str | None = None) -> Mp4Gapless | None:
    """The audio track's played length in samples at ``rate``, or None if the headers don't say."""
    if smpb:
        fields = smpb.split()
        try:
            delay, samples = int(fields[1], 16), int(fields[3], 16)
        except (IndexError, ValueError):
            delay = samples = 0
        if samples > 0:
            return Mp4Gapless(samples, delay)
    moov = _find_moov(path)
    if moov is None:
        return None
    movie_scale = None
    for kind, start, end in _boxes(moov, 8, len(moov)):
        if kind == b"mvhd":
            movie_scale = _full_box_times(moov, start)[0]
        elif kind == b"trak" and movie_scale:
            found = _track_edit(moov, start, end)
            if found is not None:
                return Mp4Gapless(round(found * rate / movie_scale))
    return None


def _track_edit(data: bytes, start: int, end: int) -> int | None:
    """The summed non-empty edit durations of a sound track (movie timescale units)."""
    is_sound, edit = False, None
    for kind, s, e in _boxes(data, start, end):
        if kind == b"mdia":
            is_sound = any(k == b"hdlr" and data[b + 8:b + 12] == b"soun" for k, b, _ in _boxes(data, s, e))
        elif kind == b"edts":
            for k, b, _ in _boxes(data, s, e):
                if k == b"elst":
                    version = data[b]
                    count = struct.unpack_from(">I", data, b + 4)[0]
                    total, p = 0, b + 8
                    for _ in range(min(count, 1000)):
                        if version == 1:
                            duration, media_time = struct.unpack_from(">Qq", data, p)
                            p += 20
                        else:
                            duration, media_time = struct.unpack_from(">Ii", data, p)
                            p += 12
                        if media_time != -1:
                            total += duration
                    edit = total or None
    return edit if is_sound else None
