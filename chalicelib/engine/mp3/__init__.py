"""MPEG audio at frame level: scan a file's frames and join files without decoding.

Nothing here decodes audio or holds a whole file in memory: files are read in chunks, frame
headers are walked with a lookup table, and audio bytes are copied with ``copy_file_range``.
The joined file gets one Xing/Info frame (frame count, byte count, TOC) and a LAME tag
carrying the first part's encoder delay and the last part's padding, so decoders (ffmpeg,
mutagen, players) report the same duration the decoder produces.
"""
from __future__ import annotations

import os
import queue
import re
import struct
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
# Keep one byte offset per this many frames: enough to build a 100-entry TOC for any
# duration while memory stays a few hundred KB even for a 10-hour part.
OFFSET_STRIDE = 32

_V1, _V2, _V25 = 3, 2, 0
_BITRATES = {  # kbit/s by (version is MPEG1, layer) for bitrate index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {_V1: (44100, 48000, 32000), _V2: (22050, 24000, 16000), _V25: (11025, 12000, 8000)}
_LAYER = {3: 1, 2: 2, 1: 3}  # header bits -> layer number
_VERSION_NAME = {_V1: "MPEG-1", _V2: "MPEG-2", _V25: "MPEG-2.5"}


@dataclass(frozen=True)
class FrameHeader:
    """The fields of a 4-byte MPEG audio frame header that matter for joining."""

    version: int  # header bits: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer: int  # 1, 2 or 3
    protected: bool  # a CRC follows the header
    bitrate_index: int
    bitrate: int  # kbit/s
    sample_rate: int
    padding: int
    channel_mode: int  # 0 stereo, 1 joint stereo, 2 dual channel, 3 mono

    @property
    def samples(self) -> int:
        if self.layer == 1:
            return 384
        return 1152 if self.layer == 2 or self.version == _V1 else 576

    @property
    def size(self) -> int:
        return frame_size(self.version, self.layer, self.bitrate, self.sample_rate, self.padding)

    @property
    def channels(self) -> int:
        return 1 if self.channel_mode == 3 else 2

    @property
    def side_info(self) -> int:
        """Bytes of Layer III side information (where a Xing tag starts after the header)."""
        if self.version == _V1:
            return 17 if self.channel_mode == 3 else 32
        return 9 if self.channel_mode == 3 else 17

    @property
    def stream_key(self) -> tuple:
        """Frames with equal keys can follow each other in one stream."""
        return (self.version, self.layer, self.sample_rate, self.channel_mode)

    @property
    def kind(self) -> str:
        return f"{_VERSION_NAME[self.version]} Layer {'I' * self.layer if self.layer < 3 else 'III'}"


def frame_size(version: int, layer: int, bitrate_kbps: int, sample_rate: int, padding: int) -> int:
    bps = bitrate_kbps * 1000
    if layer == 1:
        return (12 * bps // sample_rate + padding) * 4
    if layer == 3 and version != _V1:
        return 72 * bps // sample_rate + padding
    return 144 * bps // sample_rate + padding


def parse_header(b: bytes | memoryview, pos: int = 0) -> FrameHeader | None:
    """Parse a frame header at ``b[pos:pos+4]``; None unless it is a valid, non-free-format header."""
    if len(b) < pos + 4 or b[pos] != 0xFF or b[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = b[pos + 1], b[pos + 2], b[pos + 3]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    br_index, sr_index = b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or br_index in (0, 15) or sr_index == 3:
        return None  # reserved values; free-format (index 0) cannot be walked by size
    layer = _LAYER[layer_bits]
    return FrameHeader(
        version=version, layer=layer, protected=not (b1 & 1), bitrate_index=br_index,
        bitrate=_BITRATES[(version == _V1, layer)][br_index - 1], sample_rate=_RATES[version][sr_index],
        padding=(b2 >> 1) & 1, channel_mode=b3 >> 6,
    )


def _size_table(first: FrameHeader) -> list[int]:
    """Frame size for every (byte1 << 8 | byte2) that keeps version, layer and sample rate of
    ``first``; 0 elsewhere. One list lookup per frame checks the header and gives its size."""
    table = [0] * 65536
    version_layer = 0xE0 | (first.version << 3) | ({1: 3, 2: 2, 3: 1}[first.layer] << 1)
    sr_index = _RATES[first.version].index(first.sample_rate)
    for protection in (0, 1):
        b1 = version_layer | protection
        for br_index in range(1, 15):
            for pad in (0, 1):
                for low in range(2):  # the private bit
                    b2 = (br_index << 4) | (sr_index << 2) | (pad << 1) | low
                    kbps = _BITRATES[(first.version == _V1, first.layer)][br_index - 1]
                    table[(b1 << 8) | b2] = frame_size(first.version, first.layer, kbps, first.sample_rate, pad)
    return table


def _run_pattern(first: FrameHeader) -> tuple[re.Pattern | None, int]:
    """A regex matching OFFSET_STRIDE consecutive frames with ``first``'s header bytes 0-1 and
    bitrate / sample rate (padding and private bits free), and the unpadded frame size."""
    if first.layer == 1:  # its padding slot is 4 bytes: lengths would no longer count frames
        return None, 0
    size = frame_size(first.version, first.layer, first.bitrate, first.sample_rate, 0)
    if size <= OFFSET_STRIDE + 3:
        return None, 0
    b1 = 0xE0 | (first.version << 3) | ({2: 2, 3: 1}[first.layer] << 1) | (0 if first.protected else 1)
    base = (first.bitrate_index << 4) | (_RATES[first.version].index(first.sample_rate) << 2)
    head = re.escape(bytes((0xFF, b1)))

    def cls(*values: int) -> bytes:
        return b"[" + b"".join(re.escape(bytes((v,))) for v in values) + b"]"

    plain = head + cls(base, base | 1) + b".{%d}" % (size - 3)
    padded = head + cls(base | 2, base | 3) + b".{%d}" % (size - 2)
    return re.compile(b"(?:" + plain + b"|" + padded + b"){%d}" % OFFSET_STRIDE, re.DOTALL), size


@dataclass
class VbrTag:
    """A Xing/Info or VBRI frame at the start of the stream (it carries no audio)."""

    kind: str  # "Xing", "Info" or "VBRI"
    frames: int | None = None
    bytes: int | None = None
    toc: bytes | None = None
    encoder_delay: int | None = None
    encoder_padding: int | None = None


def parse_vbr_tag(frame: bytes, header: FrameHeader) -> VbrTag | None:
    """Read the Xing/Info (and LAME) or VBRI tag from the first frame's bytes, if it is one."""
    off = 4 + (2 if header.protected else 0) + header.side_info
    ident = frame[off:off + 4]
    if ident in (b"Xing", b"Info") and len(frame) >= off + 8:
        tag = VbrTag(ident.decode())
        flags = struct.unpack_from(">I", frame, off + 4)[0]
        p = off + 8
        if flags & 1 and len(frame) >= p + 4:
            tag.frames = struct.unpack_from(">I", frame, p)[0]
            p += 4
        if flags & 2 and len(frame) >= p + 4:
            tag.bytes = struct.unpack_from(">I", frame, p)[0]
            p += 4
        if flags & 4 and len(frame) >= p + 100:
            tag.toc = bytes(frame[p:p + 100])
            p += 100
        if flags & 8:
            p += 4
        # LAME tag: 9-byte encoder string, then delay/padding (12 bits each) 21 bytes in.
        if len(frame) >= p + 24 and frame[p:p + 4] in (b"LAME", b"Lavf", b"Lavc", b"L3.9"):
            v = int.from_bytes(frame[p + 21:p + 24], "big")
            tag.encoder_delay, tag.encoder_padding = v >> 12, v & 0xFFF
        return tag
    if frame[36:40] == b"VBRI" and len(frame) >= 36 + 18:
        _ver, delay, _q, nbytes, frames = struct.unpack_from(">HHHII", frame, 40)
        return VbrTag("VBRI", frames=frames, bytes=nbytes)
    return None


class Mp3Error(ValueError):
    """The file is not a clean MPEG audio stream; the message says why (no part prefix)."""


class Mp3Truncated(Mp3Error):
    """The stream stops early: a cut-off last frame, or fewer frames than its header announces."""


@dataclass
class Mp3Scan:
    """What a frame walk found in one file: where the audio frames are and how long they play."""

    path: Path
    header: FrameHeader  # of the first audio frame
    start: int  # byte offset of the first audio frame (after ID3v2 and the VBR tag frame)
    end: int  # byte offset just after the last audio frame
    frames: int
    vbr_tag: VbrTag | None
    variable_bitrate: bool
    offsets: array = field(repr=False)  # byte offset of every OFFSET_STRIDE-th frame

    @property
    def encoder_delay(self) -> int:
        return (self.vbr_tag.encoder_delay or 0) if self.vbr_tag else 0

    @property
    def encoder_padding(self) -> int:
        return (self.vbr_tag.encoder_padding or 0) if self.vbr_tag else 0

    @property
    def decoded_samples(self) -> int:
        """Samples a gapless decoder (ffmpeg, mutagen's length) produces."""
        return max(0, self.frames * self.header.samples - self.encoder_delay - self.encoder_padding)

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


def _trailing_tags(f, file_size: int, floor: int) -> int:
    """Offset where trailing tags (ID3v1, APEv2, Lyrics3 are not handled) begin, or file_size."""
    end = file_size
    while True:
        if end - 128 >= floor:
            f.seek(end - 128)
            if f.read(3) == b"TAG":
                end -= 128
                continue
        if end - 32 >= floor:
            f.seek(end - 32)
            footer = f.read(32)
            if footer[:8] == b"APETAGEX":
                size, _items, flags = struct.unpack_from("<III", footer, 12)
                has_header = bool(flags & 0x80000000)
                tag_total = size + (32 if has_header else 0)
                if end - tag_total >= floor:
                    end -= tag_total
                    continue
        return end


def _first_frame(f, start: int, limit: int) -> tuple[int, FrameHeader]:
    """Find the first frame at or after ``start`` that is followed by a matching frame."""
    f.seek(start)
    buf = f.read(min(limit - start, 256 * 1024))
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


@dataclass(frozen=True)
class Mp3Head:
    """What the start of an MPEG file says, without walking its frames."""

    path: Path
    header: FrameHeader
    vbr_tag: VbrTag | None
    audio_start: int  # first audio frame (after ID3v2 and the VBR tag frame)
    end_limit: int  # where trailing tags (ID3v1, APEv2) begin

    @property
    def duration_estimate(self) -> float:
        """From the Xing/VBRI frame count when there is one, else from size and bitrate."""
        h, tag = self.header, self.vbr_tag
        if tag is not None and tag.frames:
            samples = tag.frames * h.samples - (tag.encoder_delay or 0) - (tag.encoder_padding or 0)
            return max(0, samples) / h.sample_rate
        return (self.end_limit - self.audio_start) * 8 / (h.bitrate * 1000)


def peek(path: str | Path) -> Mp3Head:
    """Find the first frame and read its Xing/VBRI tag. Raises Mp3Error if there is no MPEG audio."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = _id3v2_size(f.read(10))
        end_limit = _trailing_tags(f, size, start)
        if end_limit <= start:
            raise Mp3Error("no MPEG audio frames found")
        pos, header = _first_frame(f, start, end_limit)
        f.seek(pos)
        tag = parse_vbr_tag(f.read(header.size), header)
    if tag is not None:
        pos += header.size  # the tag frame is silent metadata, not audio
    return Mp3Head(path, header, tag, pos, end_limit)


def scan(path: str | Path, head: Mp3Head | None = None) -> Mp3Scan:
    """Walk every frame of an MPEG audio file. Raises Mp3Error if it is not one, or is truncated."""
    head = head or peek(path)
    path, header, tag, pos, end_limit = head.path, head.header, head.vbr_tag, head.audio_start, head.end_limit
    with open(path, "rb", buffering=0) as f:
        table = _size_table(header)
        offsets = array("q")
        frames = 0
        bitrates_seen = {header.bitrate_index} if tag is None else set()
        run, run_size = _run_pattern(header)
        audio_start = pos
        # One buffer for the whole walk: a fresh 1 MB bytes per read costs more in page faults
        # than the walk itself.
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while pos < end_limit:
            f.seek(pos)
            got = f.readinto(view[:min(CHUNK, end_limit - pos)])
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
            pos += i
        if pos > end_limit:
            raise Mp3Truncated(f"truncated: the last frame is cut off ({pos - end_limit} bytes missing)")
        if frames == 0:
            raise Mp3Error("no MPEG audio frames found")
        if tag is not None and tag.frames is not None and tag.frames > frames + 1:
            raise Mp3Truncated(f"truncated: its header announces {tag.frames} frames, the file holds {frames}")
        variable = (tag is not None and tag.kind in ("Xing", "VBRI")) or len(bitrates_seen) > 1
        return Mp3Scan(path, header, audio_start, pos, frames, tag, variable, offsets)


# ---------------------------------------------------------------------------------------------
# Writing: one Xing/Info + LAME tag frame, then every part's audio frames.

def _crc16(data: bytes) -> int:
    """CRC-16/ARC, the checksum of the LAME tag."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _tag_frame_header(h: FrameHeader) -> tuple[bytes, int]:
    """A CRC-less header like ``h`` with the smallest bitrate whose frame holds the tag."""
    needed = 4 + h.side_info + 120 + 36
    rates = _BITRATES[(h.version == _V1, h.layer)]
    for index in range(1, 15):
        size = frame_size(h.version, h.layer, rates[index - 1], h.sample_rate, 0)
        if size >= needed:
            break
    version_layer = 0xE0 | (h.version << 3) | ({1: 3, 2: 2, 3: 1}[h.layer] << 1) | 1
    sr_index = _RATES[h.version].index(h.sample_rate)
    b2 = (index << 4) | (sr_index << 2)
    b3 = h.channel_mode << 6
    return bytes((0xFF, version_layer, b2, b3)), size


def build_tag_frame(h: FrameHeader, frames: int, total_bytes: int, toc: bytes, *, vbr: bool,
                    delay: int, padding: int) -> bytes:
    """The Xing ("Info" for CBR) frame with a LAME tag; ``total_bytes`` includes this frame."""
    header, size = _tag_frame_header(h)
    out = bytearray(size)
    out[0:4] = header
    off = 4 + h.side_info
    out[off:off + 4] = b"Xing" if vbr else b"Info"
    struct.pack_into(">IIII", out, off + 4, 0x0F, frames, total_bytes, 0)  # then TOC over the 0
    out[off + 16:off + 116] = toc
    struct.pack_into(">I", out, off + 116, 0)  # quality
    p = off + 120
    out[p:p + 9] = b"LAME3.100"
    out[p + 9] = 0x00 if not vbr else 0x04  # tag revision 0; VBR method
    v = (min(delay, 0xFFF) << 12) | min(padding, 0xFFF)
    out[p + 21:p + 24] = v.to_bytes(3, "big")
    struct.pack_into(">I", out, p + 28, total_bytes)  # music length
    struct.pack_into(">H", out, p + 34, _crc16(bytes(out[:p + 34])))
    return bytes(out)


def _toc(scans: list[Mp3Scan], total_bytes: int) -> bytes:
    """Xing TOC: for each percent of play time, the byte position in 1/256 of the stream.

    Positions count from the first audio frame, so entry 0 is 0 as in LAME's own tags."""
    total_frames = sum(s.frames for s in scans)
    toc = bytearray(100)
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
        toc[i] = min(255, pos * 256 // total_bytes)
    return bytes(toc)


def compatible(heads: list[Mp3Head] | list[Mp3Scan]) -> bool:
    """Same MPEG version, layer, sample rate and channel mode: the frames can share a stream."""
    return len({h.header.stream_key for h in heads}) == 1


def _copy_range(src_fd: int, dst_fd: int, src_off: int, dst_off: int, length: int) -> None:
    """Copy bytes file to file inside the kernel when it can (no user-space buffer), else in
    bounded chunks. Explicit offsets: no shared file position, so it can run in a thread."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, dst_fd, min(length - done, 1 << 30), src_off + done, dst_off + done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError):
        pass
    while done < length:
        block = os.pread(src_fd, min(CHUNK, length - done), src_off + done)
        if not block:
            raise Mp3Error("file shrank while it was being copied")
        os.pwrite(dst_fd, block, dst_off + done)
        done += len(block)


@dataclass
class JoinInfo:
    frames: int
    samples: int  # decoded samples of the whole output
    part_samples: list[tuple[int, int]]  # each part's [start, end) in output samples
    size_bytes: int
    sample_rate: int


def join(heads: list[Mp3Head], out_path: str | Path,
         scan_part: Callable[[int, Mp3Head], Mp3Scan] = lambda _i, head: scan(head.path, head)) -> JoinInfo:
    """Write every part's audio frames, in order, behind one new Xing/Info + LAME tag frame.

    ``scan_part(i, head)`` walks part i (and may raise for a bad part). Each part is walked while
    a thread copies it: the copy runs in the kernel, so the two overlap on two cores.
    """
    if not heads or not compatible(heads):
        raise ValueError("join needs at least one part and compatible streams")
    h = heads[0].header
    spf = h.samples
    _, tag_size = _tag_frame_header(h)
    scans: list[Mp3Scan] = []
    # No O_TRUNC: truncating a file (even an empty one) makes ext4 flush it at close
    # ("auto_da_alloc"), which costs more than the join; the size is set at the end instead.
    with open(os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644), "wb", closefd=True) as dst:
        dst_fd = dst.fileno()
        copier = _Copier()
        at = tag_size  # the tag frame is written last, once the counts are known
        try:
            for i, head in enumerate(heads):
                # Copy optimistically up to the trailing tags while the walk runs; if the walk
                # finds the frames end earlier (stray bytes), the next part's copy overwrites
                # the excess (copies run in order) and the final truncate cuts it off.
                copier.put(head.path, dst_fd, head.audio_start, at, head.end_limit - head.audio_start)
                s = scan_part(i, head)
                if s.start != head.audio_start or s.end > head.end_limit:
                    raise ValueError("scan_part must walk the part from its head")
                scans.append(s)
                at += s.end - s.start
        except BaseException:
            copier.finish(cancel=True)  # the output is going away: skip copies not started yet
            raise
        copier.finish()
        os.ftruncate(dst_fd, at)
        total_frames = sum(s.frames for s in scans)
        total_bytes = at
        vbr = any(s.variable_bitrate for s in scans) or len({s.header.bitrate for s in scans}) > 1
        delay, padding = scans[0].encoder_delay, scans[-1].encoder_padding
        frame = build_tag_frame(h, total_frames, total_bytes, _toc(scans, total_bytes), vbr=vbr,
                                delay=delay, padding=padding)
        os.pwrite(dst_fd, frame, 0)
    part_samples, at = [], 0
    for s in scans:
        part_samples.append((at, at + s.frames * spf))
        at += s.frames * spf
    # Output samples as a gapless decoder sees them: the first delay and last padding are cut.
    total = max(0, total_frames * spf - delay - padding)
    part_samples = [(max(0, a - delay), max(0, min(b - delay, total))) for a, b in part_samples]
    return JoinInfo(total_frames, total, part_samples, total_bytes, h.sample_rate)


class _Copier:
    """One thread running file copies in the order they were queued."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="mp3-join-copy", daemon=True)
        self._thread.start()

    def put(self, path: Path, dst_fd: int, src_off: int, dst_off: int, length: int) -> None:
        self._jobs.put((path, dst_fd, src_off, dst_off, length))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None or self._cancelled:
                continue
            path, dst_fd, src_off, dst_off, length = job
            try:
                with open(path, "rb") as src:
                    _copy_range(src.fileno(), dst_fd, src_off, dst_off, length)
            except BaseException as exc:  # handed to the joining thread by finish()
                self._error = exc

    def finish(self, cancel: bool = False) -> None:
        """Wait for the queued copies (or skip those not started); re-raise a copy's error."""
        self._cancelled = cancel
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None and not cancel:
            raise self._error
