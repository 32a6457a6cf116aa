"""Find an MP3 file's audio frames: skip its tags, read its tag frame, walk every frame header."""
from __future__ import annotations

import _thread
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


def scan(path: str | Path, head: Mp3Head | None = None) -> Mp3Scan:
    """Walk every frame of an MPEG audio file. Raises Mp3Error if it is not one, or is truncated.
    (A join walks and writes each part in one read: ``FrameCopier.copy``.)"""
    head = head or peek(path)
    fd = os.open(head.path, os.O_RDONLY)
    try:
        walk = _FrameWalk(head)
        chunks = _chunks(head.audio_start, head.end_limit, CHUNK)
        # Sized to the part: zero-filling a 1 MB buffer costs more than walking a short part.
        buf = bytearray(max((length for _, length in chunks), default=0) + LOOKAHEAD)
        _take_turns(walk, fd, chunks, 0, 1, buf, None, None)
        return walk.result()
    finally:
        os.close(fd)


# A chunk is read with the LOOKAHEAD bytes after it, so that a frame header starting in its last
# bytes is whole; the bytes are walked (and written) with the chunk they belong to.
LOOKAHEAD = 3


def _chunks(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """[start, end) in pieces of ``size`` bytes, as (offset, length); a last piece of 1-3 bytes
    joins the one before (so every piece but the last has LOOKAHEAD bytes after it)."""
    pieces = [(at, min(size, end - at)) for at in range(start, end, size)]
    if len(pieces) > 1 and pieces[-1][1] <= LOOKAHEAD:
        (at, length), (_, tail) = pieces[-2], pieces.pop()
        pieces[-1] = (at, length + tail)
    return pieces


class _FrameWalk:
    """One file's frame walk, fed its chunks in order (by one thread or, taking turns, two)."""

    def __init__(self, head: Mp3Head):
        header, tag = head.header, head.vbr_tag
        self.head = head
        self.table = size_table(header)
        self.run, self.run_size = run_pattern(header)
        self.offsets = array("q")
        self.frames = 0
        self.bitrates_seen = {header.bitrate_index} if tag is None else set()
        self.skip = 0  # bytes at the start of the next chunk that belong to the last frame walked
        self.end: int | None = None  # set by the last chunk

    def chunk(self, buf, at: int, length: int, last: bool) -> None:
        """Walk the headers that start in ``buf[:length]``, the file's bytes from ``at`` (plus
        LOOKAHEAD more unless ``last``). Raises Mp3Error for bytes that are no frame header,
        Mp3Truncated when the last chunk ends inside a frame."""
        table, run, run_size, offsets, seen = self.table, self.run, self.run_size, self.offsets, self.bitrates_seen
        frames = self.frames
        got = length if last else length + LOOKAHEAD
        stop = got - 3 if last else length
        i = self.skip
        bad = False
        # The hot loop: one table lookup per frame (about 0.2 us), no object creation; an
        # offset is kept at the start of each block of OFFSET_STRIDE frames.
        while i < stop and not bad:
            block = OFFSET_STRIDE - frames % OFFSET_STRIDE
            if block == OFFSET_STRIDE:
                offsets.append(at + i)
                seen.add(buf[i + 2] >> 4)
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
        self.frames = frames
        if bad:  # not a frame header where one should be
            raise Mp3Error(f"not a clean MPEG stream: garbage at byte {at + i} after {frames} frames")
        if not last:
            self.skip = i - length
        elif i > got:
            raise Mp3Truncated(f"truncated: the last frame is cut off ({at + i - self.head.end_limit} bytes missing)")
        else:
            self.end = at + i  # 1-3 stray bytes after the last frame are not audio: left out

    def result(self) -> Mp3Scan:
        head, frames, tag = self.head, self.frames, self.head.vbr_tag
        if frames == 0:
            raise Mp3Error("no MPEG audio frames found")
        if tag is not None and tag.frames is not None and tag.frames > frames + 1:
            raise Mp3Truncated(f"truncated: its header announces {tag.frames} frames, the file holds {frames}")
        variable = (tag is not None and tag.kind in ("Xing", "VBRI")) or len(self.bitrates_seen) > 1
        return Mp3Scan(head.path, head.header, head.audio_start, self.end, frames, tag, variable, self.offsets)


def _read(fd: int, view: memoryview, at: int, n: int) -> None:
    got = 0
    while got < n:
        k = os.preadv(fd, [view[got:n]], at + got)
        if k == 0:
            raise Mp3Truncated(f"truncated: the file ends at byte {at + got}, while it was being read")
        got += k


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _take_turns(walk: _FrameWalk, fd: int, chunks: list[tuple[int, int]], first: int, step: int, buf: bytearray,
                out: tuple[int, int] | None, turns: tuple[_Baton, _Baton] | None) -> None:
    """Read, walk and (with ``out = (out_fd, offset of the file's byte 0)``) write chunks
    ``first``, ``first + step``, ... With ``turns = (mine, other)`` another thread has the chunks
    between: each walk waits for ``mine`` (the walk before it is done) and then gives ``other``;
    a baton given with False means the other thread failed, and this one stops."""
    view = memoryview(buf)
    last_index = len(chunks) - 1
    for j in range(first, len(chunks), step):
        at, length = chunks[j]
        last = j == last_index
        _read(fd, view, at, length if last else length + LOOKAHEAD)
        if turns is not None and not turns[0].wait():
            return
        try:
            walk.chunk(buf, at, length, last)
        except BaseException:
            if turns is not None:
                turns[1].give(False)
            raise
        if turns is not None:
            turns[1].give()
        if out is not None:
            _pwrite_all(out[0], view[:walk.end - at if last else length], out[1] + at)


class _Baton:
    """The turn to walk, handed from one copying thread to the other. ``wait()`` returns once it
    is given: True to go on, False if the giver failed (then give(False) may follow give())."""

    def __init__(self, given: bool = False):
        self._lock = _thread.allocate_lock()
        if not given:
            self._lock.acquire()
        self.ok = True

    def wait(self) -> bool:
        self._lock.acquire()
        return self.ok

    def give(self, ok: bool = True) -> None:
        if not ok:
            self.ok = False
        if self._lock.locked():  # only this baton's giver releases it: no race with wait()
            self._lock.release()


class FrameCopier:
    """Walks parts and writes their frames to ``fd``, two threads taking turns chunk by chunk.

    Reading, walking and writing a chunk cost about the same on each thread, nearly all of it in
    the kernel with the GIL released: the walking thread reads and writes its own chunks (from
    its own cache), and only the walks, a fifth of the time, wait for each other, in file order.
    On two cores that takes about 60 % of the wall time of one thread doing it all, and less than
    one thread walking and another writing what it read (which moves every byte between cores).
    Parts of one chunk are copied by the calling thread alone. ``close()`` stops the helper.
    (Locks from ``_thread``, not ``threading`` and ``queue``: their imports cost the copy join's
    CLI 2 ms, and one helper with one job at a time needs no more.)"""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size  # chunk size
        self._buffer = bytearray(size + LOOKAHEAD)  # the calling thread's; the helper makes its own
        self._go = self._done = None  # the helper's, once it is started
        self._job: tuple | None = None
        self._error: BaseException | None = None
        self._alone = False  # set if the helper thread could not be started

    def copy(self, fd: int, head: Mp3Head, out_at: int) -> Mp3Scan:
        """Walk the part open as ``fd`` and write its frames from ``out_at`` on."""
        walk = _FrameWalk(head)
        chunks = _chunks(head.audio_start, head.end_limit, self.size)
        out = (self.fd, out_at - head.audio_start)
        if self._go is None and len(chunks) > 1 and not self._alone:
            self._start()
        if len(chunks) < 2 or self._alone:
            _take_turns(walk, fd, chunks, 0, 1, self._buffer, out, None)
            return walk.result()
        mine, theirs = _Baton(given=True), _Baton()  # chunk 0, this thread's, is walked first
        self._error = None
        self._job = (walk, fd, chunks, out, (theirs, mine))
        try:
            self._go.release()
            _take_turns(walk, fd, chunks, 0, 2, self._buffer, out, (mine, theirs))
        except BaseException as exc:
            self._error = self._error or exc
            theirs.give(False)
        while True:  # the helper must be done with this part (and its descriptors) either way
            try:
                self._done.acquire()
                break
            except BaseException as exc:  # a second Ctrl-C: still wait, for a chunk at most
                self._error = self._error or exc
        if self._error is not None:
            raise self._error
        return walk.result()

    def _start(self) -> None:
        go, done = _thread.allocate_lock(), _thread.allocate_lock()
        go.acquire()
        done.acquire()
        try:
            _thread.start_new_thread(self._help, (go, done))
        except RuntimeError:  # no thread to be had (a process or memory limit): copy alone
            self._alone = True
            return
        self._go, self._done = go, done

    def _help(self, go, done) -> None:
        buf = None
        while True:
            go.acquire()
            if self._job is None:
                return
            walk, fd, chunks, out, turns = self._job
            try:
                if buf is None:  # allocated here: a join of parts of one chunk never needs it
                    buf = bytearray(self.size + LOOKAHEAD)
                _take_turns(walk, fd, chunks, 1, 2, buf, out, turns)
            except BaseException as exc:  # raised by the calling thread
                self._error = self._error or exc
                turns[1].give(False)
            self._job = ()
            done.release()

    def close(self) -> None:
        if self._go is not None:
            self._job = None
            self._go.release()
            self._go = None
