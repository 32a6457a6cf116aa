"""MP3 bit reservoir: read each Layer III frame's main data, and lay it out again in a new stream.

A Layer III frame's audio ("main data") does not have to sit in its own frame: ``main_data_begin``
in the side information points up to 511 bytes (MPEG-1; 255 for MPEG-2/2.5) back into the space
earlier frames left free. Frames cut out of one encoder's stream and put behind frames of another
therefore point at the wrong bytes. ``FrameReader`` follows the pointers of one stream and hands
out each frame's own main data; ``Relayer`` writes frames again, placing every frame's main data
as early as the pointer range allows, rewriting ``main_data_begin``, and giving a frame a higher
bitrate (a bigger frame) where its data does not fit otherwise.

Where the side-information fields sit (ISO 11172-3 and 13818-3): after ``main_data_begin`` and the
private bits (and, MPEG-1 only, ``scfsi``) come, per granule and channel, fixed-width fields that
start with the 12-bit ``part2_3_length``; the granule/channel blocks are 59 bits (MPEG-1) or 63 bits
(MPEG-2/2.5) whatever their content, so every ``part2_3_length`` is at a fixed bit offset.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import FrameHeader, parse_header

_V1 = 3
_MAX_BITRATE_INDEX = 14
_READ = 1 << 16


class ReservoirError(ValueError):
    """The stream's main-data pointers are inconsistent, or a frame cannot be laid out."""


def max_back(h: FrameHeader) -> int:
    """The farthest ``main_data_begin`` can point back (9 bits in MPEG-1, 8 in MPEG-2/2.5)."""
    return 511 if h.version == _V1 else 255


def _layout(h: FrameHeader) -> tuple[int, int, int, int]:
    """(bits before the first granule/channel block, block bits, blocks, main_data_begin bits)."""
    mono = h.channels == 1
    if h.version == _V1:
        return (18 if mono else 20), 59, 2 * h.channels, 9
    return (9 if mono else 10), 63, h.channels, 8


def main_data_bytes(h: FrameHeader, side: bytes) -> int:
    """Bytes of main data the side information announces (the sum of part2_3_length, rounded up)."""
    first, block, count, _ = _layout(h)
    bits = len(side) * 8
    value = int.from_bytes(side, "big")
    total = 0
    for i in range(count):
        total += (value >> (bits - first - i * block - 12)) & 0xFFF
    return (total + 7) // 8


def main_data_begin(h: FrameHeader, side: bytes) -> int:
    if h.version == _V1:
        return (side[0] << 1) | (side[1] >> 7)
    return side[0]


def _with_main_data_begin(h: FrameHeader, side: bytes, value: int) -> bytes:
    out = bytearray(side)
    if h.version == _V1:
        out[0] = value >> 1
        out[1] = (out[1] & 0x7F) | ((value & 1) << 7)
    else:
        out[0] = value
    return bytes(out)


def mpeg_crc(data: bytes) -> int:
    """CRC-16 of a protected frame (polynomial 0x8005, initial 0xFFFF, MSB first)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


@dataclass(frozen=True)
class Frame:
    """One Layer III frame with its main data taken out of the reservoir."""

    header: FrameHeader
    head: bytes  # the 4 header bytes
    side: bytes  # the side information (main_data_begin as the source stream had it)
    main: bytes  # this frame's main data, wherever it sat in the source


class FrameReader:
    """Walk one MPEG Layer III stream (no ID3 tags) and yield every audio frame with its main data.

    ``skip_first`` drops a leading Xing/Info frame: it carries no main data. Only about 1 KB of
    the main-data stream is kept, so memory does not grow with the stream.
    """

    def __init__(self, f: BinaryIO):
        self._f = f
        self.info_frame: bytes | None = None

    def __iter__(self) -> Iterator[Frame]:
        buf = b""
        pos = 0
        consumed = 0  # stream offset of buf[0]
        reservoir = bytearray()  # the tail of the main-data stream
        base = 0  # stream offset of reservoir[0]
        first = True
        headers: dict[bytes, FrameHeader | None] = {}
        head = self._f.read(10)
        skip = _id3v2_size(head)
        if skip:
            self._f.seek(skip)
            consumed = skip
        else:
            buf = head
        while True:
            if len(buf) - pos < 4 + 2 + 32 or len(buf) - pos < 2048:
                more = self._f.read(_READ)
                consumed += pos
                buf = buf[pos:] + more
                pos = 0
                if not more and len(buf) < 4:
                    if buf:
                        raise ReservoirError(f"{len(buf)} stray bytes after the last frame")
                    return
            key = buf[pos:pos + 4]
            h = headers.get(key)
            if h is None:
                h = headers[key] = parse_header(key)  # a CBR stream has a handful of distinct headers
            if h is None or h.layer != 3:
                raise ReservoirError(f"not an MPEG Layer III frame at byte {consumed + pos}")
            size = h.size
            if len(buf) - pos < size:
                more = self._f.read(_READ)
                if not more:
                    raise ReservoirError("the last frame is cut off")
                consumed += pos
                buf = buf[pos:] + more
                pos = 0
                continue
            frame = buf[pos:pos + size]
            pos += size
            crc = 2 if h.protected else 0
            side_end = 4 + crc + h.side_info
            side = frame[4 + crc:side_end]
            if first:
                first = False
                ident = frame[side_end:side_end + 4]
                if ident in (b"Xing", b"Info"):
                    self.info_frame = frame
                    continue
            slot_start = base + len(reservoir)
            begin = slot_start - main_data_begin(h, side)
            reservoir += frame[side_end:]
            length = main_data_bytes(h, side)
            if begin < base or begin + length > base + len(reservoir):
                raise ReservoirError("a frame's main data lies outside the bytes the stream holds")
            at = begin - base
            yield Frame(h, frame[:4], side, bytes(reservoir[at:at + length]))
            if len(reservoir) > 8192:
                drop = len(reservoir) - 1024
                del reservoir[:drop]
                base += drop


def _id3v2_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start (the encoders write none, but a stray one is harmless)."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | b
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _header_bytes(head: bytes, bitrate_index: int) -> bytes:
    return bytes((head[0], head[1], (head[2] & 0x0F) | (bitrate_index << 4), head[3]))


class Relayer:
    """Write frames into a new stream, each frame's main data as early as the pointers allow.

    ``write(bytes)`` receives finished frames in order. A frame is finished once no later frame's
    data can reach into it. ``bumped`` counts frames written at a higher bitrate than they came
    with; ``frames`` and ``bytes_out`` count what was written.
    """

    def __init__(self, write: Callable[[bytes], object]):
        self._write = write
        self._pending: list[tuple[int, int, bytearray, int]] = []  # (slot start, cap, frame, slot offset)
        self._stream = 0  # stream offset of the next frame's slots
        self._end = 0  # end of the main data placed so far
        self.frames = 0
        self.bytes_out = 0
        self.bumped = 0

    def fits(self, frame: Frame) -> bool:
        """True if ``frame`` can be placed now, at some bitrate."""
        return self._plan(frame) is not None

    def _plan(self, frame: Frame) -> tuple[int, int, int] | None:
        h = frame.header
        length = len(frame.main)
        start = max(self._end, self._stream - max_back(h))
        overhead = 4 + (2 if h.protected else 0) + h.side_info
        for index in range(h.bitrate_index, _MAX_BITRATE_INDEX + 1):
            size = _size_at(frame.head, index)
            cap = size - overhead
            if start + length <= self._stream + cap:
                return index, size, start
        return None

    def add(self, frame: Frame) -> None:
        plan = self._plan(frame)
        if plan is None:
            raise ReservoirError("a frame's main data does not fit even at the highest bitrate")
        index, size, start = plan
        h = frame.header
        if index != h.bitrate_index:
            self.bumped += 1
        crc = 2 if h.protected else 0
        offset = 4 + crc + h.side_info
        side = _with_main_data_begin(h, frame.side, self._stream - start)
        out = bytearray(size)
        out[0:4] = _header_bytes(frame.head, index)
        if crc:
            out[4:6] = mpeg_crc(bytes(out[2:4]) + side).to_bytes(2, "big")
        out[4 + crc:offset] = side
        cap = size - offset
        self._pending.append((self._stream, cap, out, offset))
        self._place(start, frame.main)
        self._stream += cap
        self._end = start + len(frame.main)
        self.frames += 1
        # Later frames' data starts at or after this point: frames before it are final.
        horizon = max(self._end, self._stream - max_back(h))
        while self._pending and self._pending[0][0] + self._pending[0][1] <= horizon:
            self._emit()

    def _place(self, start: int, data: bytes) -> None:
        end = start + len(data)
        for slot, cap, out, offset in self._pending:
            lo, hi = max(start, slot), min(end, slot + cap)
            if lo < hi:
                out[offset + lo - slot:offset + hi - slot] = data[lo - start:hi - start]

    def _emit(self) -> None:
        _, _, out, _ = self._pending.pop(0)
        self._write(bytes(out))
        self.bytes_out += len(out)

    def finish(self) -> None:
        while self._pending:
            self._emit()


@functools.lru_cache(maxsize=1024)
def _size_at(head: bytes, bitrate_index: int) -> int:
    """Size of the frame ``head`` starts, at another bitrate index (padding bit kept)."""
    return parse_header(_header_bytes(head, bitrate_index)).size
