"""Find an MP3 file's audio frames: skip its tags, read its tag frame, walk every frame header."""
from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

from ...records import field, record
from .frames import OFFSET_STRIDE, FrameHeader, Mp3Error, Mp3Truncated, parse_header, run_pattern, size_table
from .tags import VbrTag, parse_vbr_tag, played_samples

CHUNK = 1 << 20


@record
class Mp3Scan:
    """What a frame walk found in one file: where the audio frames are and how long they play."""

    path: Path
    header: FrameHeader  # of the first frame
    start: int  # byte offset of the first audio frame (after ID3v2 and the VBR tag frame)
    end: int  # byte offset just after the last audio frame
    frames: int
    vbr_tag: VbrTag | None
    variable_bitrate: bool
    offsets: array = field(repr=False)  # byte offset of every OFFSET_STRIDE-th frame

    @property
    def gapless(self) -> bool:
        """True when a LAME tag states this part's delay and padding."""
        return self.vbr_tag is not None and self.vbr_tag.gapless

    @property
    def encoder_delay(self) -> int:
        return (self.vbr_tag.encoder_delay or 0) if self.vbr_tag else 0

    @property
    def encoder_padding(self) -> int:
        return (self.vbr_tag.encoder_padding or 0) if self.vbr_tag else 0

    @property
    def decoded_samples(self) -> int:
        """Samples a gapless decoder (ffmpeg, mpg123) produces from this file's frames."""
        tag = self.vbr_tag
        return played_samples(self.frames, self.header.samples, tag.encoder_delay if tag else None,
                              tag.encoder_padding if tag else None)

    @property
    def duration_s(self) -> float:
        return self.decoded_samples / self.header.sample_rate


def _id3v2_size(head: bytes) -> int:
    """Length of an ID3v2 tag (header, body, optional footer) at the start of ``head``; 0 if none."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
        return 0
    size = 0
    for b in head[6:10]:
        if b & 0x80:
            return 0
        size = (size << 7) | b
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _trailing_tags(fd: int, file_size: int, floor: int, tail: bytes) -> int:
    """Offset where trailing tags (ID3v1, APEv2, Lyrics3 are not handled) begin, or file_size.

    ``tail`` holds the file's last bytes (at least 160 of them when the file has that many)."""
    end = file_size

    def at(offset: int, n: int) -> bytes:
        back = file_size - offset
        if back <= len(tail):
            return tail[len(tail) - back:len(tail) - back + n]
        return os.pread(fd, n, offset)

    while True:
        if end - 128 >= floor and at(end - 128, 3) == b"TAG":
            end -= 128
            continue
        if end - 32 >= floor:
            footer = at(end - 32, 32)
            if footer[:8] == b"APETAGEX":
                size, _items, flags = struct.unpack_from("<III", footer, 12)
                has_header = bool(flags & 0x80000000)
                tag_total = size + (32 if has_header else 0)
                if end - tag_total >= floor:
                    end -= tag_total
                    continue
        return end


def _first_frame(buf: bytes, start: int, limit: int) -> tuple[int, FrameHeader]:
    """Find the first frame in ``buf`` (read at ``start``) that is followed by a matching frame."""
    pos = 0
    while True:
        pos = buf.find(b"\xff", pos)
        if pos < 0 or pos + 4 > len(buf):
            raise Mp3Error("no MPEG audio frames found")
        h = parse_header(buf, pos)
        if h is not None:
            nxt = pos + h.size
            if start + nxt >= limit:  # a single frame that ends the file is good enough
                if start + nxt == limit:
                    return start + pos, h
            else:
                h2 = parse_header(buf, nxt)
                if h2 is not None and h2.stream_key[:3] == h.stream_key[:3]:
                    return start + pos, h
        pos += 1


@record(frozen=True)
class Mp3Head:
    """What the start of an MPEG file says, without walking its frames."""

    path: Path
    header: FrameHeader
    vbr_tag: VbrTag | None
    audio_start: int  # first audio frame (after ID3v2 and the VBR tag frame)
    end_limit: int  # where trailing tags (ID3v1, APEv2) begin
    first_frame: int = 0  # the first frame (the tag frame, if any)
    prefix_junk: bool = False  # bytes that are no ID3v2 tag come before it: ffmpeg then misses the tag

    @property
    def duration_estimate(self) -> float:
        """From the Xing/VBRI frame count when there is one, else from size and bitrate."""
        h, tag = self.header, self.vbr_tag
        if tag is not None and tag.frames:
            return played_samples(tag.frames, h.samples, tag.encoder_delay, tag.encoder_padding) / h.sample_rate
        return (self.end_limit - self.audio_start) * 8 / (h.bitrate * 1000)


def peek(path: str | Path) -> Mp3Head:
    """Find the first frame and read its Xing/VBRI tag. Raises Mp3Error if there is no MPEG audio."""
    path = path if isinstance(path, Path) else Path(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        # One read covers the ID3v2 tag, the first frames and (for a short part) the trailing tags.
        head = os.pread(fd, 64 * 1024, 0)
        start = _id3v2_size(head)
        tail = head if size <= len(head) else os.pread(fd, 160, size - 160)
        end_limit = _trailing_tags(fd, size, start, tail)
        if end_limit <= start:
            raise Mp3Error("no MPEG audio frames found")
        if start + 8 * 1024 > len(head):
            buf = os.pread(fd, min(end_limit - start, 256 * 1024), start)
        else:
            buf = head[start:start + 256 * 1024]
        pos, header = _first_frame(buf[:end_limit - start], start, end_limit)
        frame = buf[pos - start:pos - start + header.size]
        if len(frame) < header.size:
            frame = os.pread(fd, header.size, pos)
    finally:
        os.close(fd)
    tag = parse_vbr_tag(frame, header)
    first = pos
    if tag is not None:
        pos += header.size  # the tag frame is silent metadata, not audio
    return Mp3Head(path, header, tag, pos, end_limit, first, first != start)


def scan(path: str | Path, head: Mp3Head | None = None, buf: bytearray | None = None,
         fd: int | None = None, copy_to: tuple[FrameWriter, int] | None = None) -> Mp3Scan:
    """Walk every frame of an MPEG audio file. Raises Mp3Error if it is not one, or is truncated.

    ``buf`` is a reusable read buffer and ``fd`` an open descriptor of the file (a join walks
    many parts with one buffer, and opens each part once). With ``copy_to = (writer, offset)``
    the walked frames are also written from ``offset`` on: the walk reads into the writer's
    buffers and hands each walked chunk to it (``buf`` is then unused), so every byte is read
    once. If the walk raises, part of the part may have been written."""
    head = head or peek(path)
    if fd is None:
        fd = os.open(head.path, os.O_RDONLY)
        try:
            return _walk(fd, head, buf, copy_to)
        finally:
            os.close(fd)
    return _walk(fd, head, buf, copy_to)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class FrameWriter:
    """Writes walked chunks to ``fd`` in a second thread while the walk reads the next one.

    Reading a chunk (and walking it) and writing it cost about the same CPU, nearly all in the
    kernel with the GIL released, so on two cores the copy takes about half the wall time of
    reading and writing in turn. Two buffers of ``size`` bytes alternate: ``buffer()`` hands out
    the next one once the writer is done with it, ``submit()`` queues the start of it for writing
    at an offset (``write()`` queues other bytes). A write error is raised by the next call or by
    ``close()``, which waits for every queued write: call it before closing ``fd``."""

    def __init__(self, fd: int, size: int):
        import queue
        import threading

        self.fd = fd
        self._buffers = [bytearray(size), bytearray(size)]
        self._free = [threading.Lock(), threading.Lock()]  # held while its buffer is read or queued
        self._next = 0
        self._held: int | None = None  # handed out, not yet queued: handed out again
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="mp3-frame-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, offset, k = job
            if self._error is None and not self._abandoned:
                try:
                    _pwrite_all(self.fd, data, offset)
                except BaseException as exc:  # raised in the walking thread
                    self._error = exc
            if k is not None:
                self._free[k].release()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def buffer(self) -> bytearray:
        if self._held is None:
            k = self._next
            self._free[k].acquire()
            self._held, self._next = k, 1 - k
        self._check()
        return self._buffers[self._held]

    def submit(self, length: int, offset: int) -> None:
        """Queue the first ``length`` bytes of the buffer last handed out for writing at ``offset``."""
        self._check()
        k, self._held = self._held, None
        self._jobs.put((memoryview(self._buffers[k])[:length], offset, k))

    def write(self, data: bytes, offset: int) -> None:
        """Queue bytes of their own (not a buffer's) for writing at ``offset``."""
        self._check()
        self._jobs.put((data, offset, None))

    def close(self, abandon: bool = False) -> None:
        """Wait for the queued writes and stop the thread; raise a write error unless ``abandon``
        (after an error of the caller's: the writes still queued are then skipped)."""
        self._abandoned = abandon
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if not abandon:
            self._check()


def _walk(fd: int, head: Mp3Head, buf: bytearray | None,
          copy_to: tuple[FrameWriter, int] | None = None) -> Mp3Scan:
    path, header, tag, pos, end_limit = head.path, head.header, head.vbr_tag, head.audio_start, head.end_limit
    table = size_table(header)
    offsets = array("q")
    frames = 0
    bitrates_seen = {header.bitrate_index} if tag is None else set()
    run, run_size = run_pattern(header)
    audio_start = pos
    writer = None
    if copy_to is not None:
        writer, out_at = copy_to
        out_at -= pos  # where this part's byte 0 would go in the output
    elif buf is None:
        # Sized to the part: zero-filling a 1 MB buffer costs more than walking a short part.
        buf = bytearray(min(CHUNK, max(4, end_limit - pos)))
    while pos < end_limit:
        if writer is not None:
            buf = writer.buffer()
        view = memoryview(buf)
        got = os.preadv(fd, [view[:min(len(buf), end_limit - pos)]], pos)
        stop = got - 3
        i = 0
        bad = False
        # The hot loop: one table lookup per frame (about 0.2 us), no object creation; an
        # offset is kept at the start of each block of OFFSET_STRIDE frames.
        while i < stop and not bad:
            block = OFFSET_STRIDE - frames % OFFSET_STRIDE
            if block == OFFSET_STRIDE:
                offsets.append(pos + i)
                bitrates_seen.add(buf[i + 2] >> 4)
                if run is not None:
                    # Fast path for constant bitrate: the regex engine checks a whole block
                    # of headers in C. Each frame is n or n + 1 bytes and a block holds fewer
                    # than n frames, so the byte length alone gives the frame count.
                    m = run.match(buf, i, got)
                    if m is not None and m.end() - i >= OFFSET_STRIDE * run_size:
                        i = m.end()
                        frames += OFFSET_STRIDE
                        continue
            for _ in range(block):
                if i >= stop:
                    break
                n = table[(buf[i + 1] << 8) | buf[i + 2]] if buf[i] == 0xFF else 0
                if not n:
                    bad = True
                    break
                i += n
                frames += 1
        if bad:  # not a frame header where one should be
            raise Mp3Error(f"not a clean MPEG stream: garbage at byte {pos + i} after {frames} frames")
        if got < 4:  # 1-3 stray bytes after the last frame: not audio, leave them out
            break
        if writer is not None:
            # Frames [pos, pos + i) were walked; the last may run past what was read.
            writer.submit(min(i, got), out_at + pos)
            if i > got:
                if pos + i > end_limit:  # cut off: the check below raises
                    pos += i
                    break
                writer.write(os.pread(fd, i - got, pos + got), out_at + pos + got)
        pos += i
    if pos > end_limit:
        raise Mp3Truncated(f"truncated: the last frame is cut off ({pos - end_limit} bytes missing)")
    if frames == 0:
        raise Mp3Error("no MPEG audio frames found")
    if tag is not None and tag.frames is not None and tag.frames > frames + 1:
        raise Mp3Truncated(f"truncated: its header announces {tag.frames} frames, the file holds {frames}")
    variable = (tag is not None and tag.kind in ("Xing", "VBRI")) or len(bitrates_seen) > 1
    return Mp3Scan(path, header, audio_start, pos, frames, tag, variable, offsets)
