"""Join MP3 files frame by frame: every part's audio frames behind one new Xing/Info + LAME frame."""
from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable
from pathlib import Path

from ...records import record
from .frames import OFFSET_STRIDE
from .tags import build_tag_frame, played_samples, tag_frame_header
from .walk import CHUNK, FrameCopier, Mp3Head, Mp3Scan


def toc(scans: list[Mp3Scan], total_bytes: int) -> bytes:
    """Xing TOC: for each percent of play time, the byte position in 1/256 of the stream.

    Positions count from the first audio frame, so entry 0 is 0 as in LAME's own tags."""
    total_frames = sum(s.frames for s in scans)
    table = bytearray(100)
    part_first_frame, part_first_byte = [], []
    frames = 0
    byte = 0
    for s in scans:
        part_first_frame.append(frames)
        part_first_byte.append(byte)
        frames += s.frames
        byte += s.end - s.start
    k = 0
    for i in range(100):
        target = i * total_frames // 100
        while k + 1 < len(scans) and part_first_frame[k + 1] <= target:
            k += 1
        s = scans[k]
        local = target - part_first_frame[k]
        sample = min(local // OFFSET_STRIDE, len(s.offsets) - 1)
        # Between two sampled offsets, interpolate with the part's average frame size.
        approx = s.offsets[sample] + (local - sample * OFFSET_STRIDE) * (s.end - s.start) // max(s.frames, 1)
        pos = part_first_byte[k] + (min(approx, s.end) - s.start)
        table[i] = min(255, pos * 256 // total_bytes)
    return bytes(table)


def compatible(heads: list[Mp3Head] | list[Mp3Scan]) -> bool:
    """Same MPEG version, layer, sample rate and channel count: the frames can share a stream."""
    return len({h.header.stream_key for h in heads}) == 1


def kept_padding(scans: list[Mp3Scan]) -> list[int]:
    """Samples of encoder padding and delay a frame join keeps at each join (parts without a
    LAME tag count 0: nothing says how much of them is padding)."""
    return [a.encoder_padding + b.encoder_delay for a, b in itertools.pairwise(scans)]


def _preallocate(fd: int, size: int) -> None:
    """Reserve the output's blocks in one call: ext4 then skips its per-page delayed-allocation
    bookkeeping on every write, about 15 % of the kernel time of writing L. (Where the file
    system has no fallocate, glibc emulates it by writing a byte per block: slower, same bytes.)
    The size is the parts' frame bytes plus the tag frame: exact unless a part ends in stray
    bytes, and the file is cut to its real size at the end anyway."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        # EOPNOTSUPP/EINVAL/ENOSYS...: nothing reserved, the writes allocate as they go


@record
class JoinInfo:
    frames: int
    samples: int  # decoded samples of the whole output
    part_samples: list[tuple[int, int]]  # each part's [start, end) in output samples
    size_bytes: int
    sample_rate: int
    kept_samples: int = 0  # encoder padding + delay kept at the joins, in samples


def join(heads: list[Mp3Head], out_path: str | Path,
         scan_part: Callable[[int, Mp3Head, int, FrameCopier, int], Mp3Scan] | None = None) -> JoinInfo:
    """Write every part's audio frames, in order, behind one new Xing/Info + LAME tag frame.

    ``scan_part(i, head, fd, copier, offset)`` walks part i (open as ``fd``), writing its frames
    from ``offset`` on as it goes (``copier.copy(fd, head, offset)``), and may raise for a bad part.
    Each part is opened once and each byte read once: the frames are written from the buffer
    the walk read them into, two threads taking turns (walk.FrameCopier). (A kernel copy
    (copy_file_range) after the walk, even overlapped in a thread, cost 1.3x the CPU: it reads
    every byte a second time; walking through an mmap costs more in page faults than it saves.)
    """
    if not heads or not compatible(heads):
        raise ValueError("join needs at least one part and compatible streams")
    scan_part = scan_part or (lambda _i, head, fd, copier, at: copier.copy(fd, head, at))
    h = heads[0].header
    spf = h.samples
    _, tag_size = tag_frame_header(h)
    scans: list[Mp3Scan] = []
    # Read buffers shared by every part, sized to the largest: a fresh 1 MB per part costs more
    # in zero-filling than walking a short part does.
    size = min(CHUNK, max(4, max(x.end_limit - x.audio_start for x in heads)))
    # No O_TRUNC: truncating a file (even an empty one) makes ext4 flush it at close
    # ("auto_da_alloc"), which costs more than the join; the size is set at the end instead.
    with open(os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644), "wb", closefd=True) as dst:
        dst_fd = dst.fileno()
        _preallocate(dst_fd, tag_size + sum(x.end_limit - x.audio_start for x in heads))
        at = tag_size  # the tag frame is written last, once the counts are known
        copier = FrameCopier(dst_fd, size)
        try:
            for i, head in enumerate(heads):
                src = os.open(head.path, os.O_RDONLY)
                try:
                    s = scan_part(i, head, src, copier, at)
                finally:
                    os.close(src)
                if s.start != head.audio_start or s.end > head.end_limit:
                    raise ValueError("scan_part must walk the part from its head")
                scans.append(s)
                at += s.end - s.start
        finally:
            copier.close()
        os.ftruncate(dst_fd, at)
        total_frames = sum(s.frames for s in scans)
        vbr = any(s.variable_bitrate for s in scans) or len({s.header.bitrate for s in scans}) > 1
        # Always a LAME tag: with a bare Info frame mpg123 still skips its decoder delay and
        # ffmpeg does not, so only a tag (delay 0 for an untagged first part) makes them agree.
        delay, padding = scans[0].encoder_delay, scans[-1].encoder_padding
        frame = build_tag_frame(h, total_frames, at, toc(scans, at), vbr=vbr, delay=delay, padding=padding)
        os.pwrite(dst_fd, frame, 0)
    total = played_samples(total_frames, spf, delay, padding)
    # Frame k starts at sample R_k of the stream; a decoder outputs it DECODER_DELAY later and
    # skips delay + DECODER_DELAY, so in played samples it starts at R_k - delay.
    skip = delay
    part_samples, pos = [], -skip
    for s in scans:
        part_samples.append((max(0, pos), max(0, min(pos + s.frames * spf, total))))
        pos += s.frames * spf
    return JoinInfo(total_frames, total, part_samples, at, h.sample_rate, sum(kept_padding(scans)))
