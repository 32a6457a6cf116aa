"""MPEG audio frame headers: the bit tables, header parsing and frame sizes."""
from __future__ import annotations

import re
from functools import lru_cache

from ...records import record

# Keep one byte offset per this many frames: enough to build a 100-entry TOC for any
# duration while memory stays a few hundred KB even for a 10-hour part.
OFFSET_STRIDE = 32

V1, V2, V25 = 3, 2, 0
BITRATES = {  # kbit/s by (version is MPEG1, layer) for bitrate index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
RATES = {V1: (44100, 48000, 32000), V2: (22050, 24000, 16000), V25: (11025, 12000, 8000)}
_LAYER = {3: 1, 2: 2, 1: 3}  # header bits -> layer number
LAYER_BITS = {1: 3, 2: 2, 3: 1}
_VERSION_NAME = {V1: "MPEG-1", V2: "MPEG-2", V25: "MPEG-2.5"}
# Samples a Layer III decoder (ffmpeg, mpg123) holds back before its first output: gapless
# decoders skip this on top of the encoder delay a LAME tag states.
DECODER_DELAY = 529


class Mp3Error(ValueError):
    """The file is not a clean MPEG audio stream; the message says why (no part prefix)."""


class Mp3Truncated(Mp3Error):
    """The stream stops early: a cut-off last frame, or fewer frames than its header announces."""


@record(frozen=True)
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
        return 1152 if self.layer == 2 or self.version == V1 else 576

    @property
    def size(self) -> int:
        return frame_size(self.version, self.layer, self.bitrate, self.sample_rate, self.padding)

    @property
    def channels(self) -> int:
        return 1 if self.channel_mode == 3 else 2

    @property
    def side_info(self) -> int:
        """Bytes of Layer III side information (where a Xing tag starts after the header)."""
        if self.version == V1:
            return 17 if self.channel_mode == 3 else 32
        return 9 if self.channel_mode == 3 else 17

    @property
    def stream_key(self) -> tuple:
        """Frames with equal keys can follow each other in one stream.

        The channel count, not the mode: a decoder takes joint and plain stereo frames mixed in
        one stream (ffmpeg writes its Info frame as plain stereo before joint-stereo audio)."""
        return (self.version, self.layer, self.sample_rate, self.channels)

    @property
    def kind(self) -> str:
        return f"{_VERSION_NAME[self.version]} Layer {'I' * self.layer if self.layer < 3 else 'III'}"


def frame_size(version: int, layer: int, bitrate_kbps: int, sample_rate: int, padding: int) -> int:
    bps = bitrate_kbps * 1000
    if layer == 1:
        return (12 * bps // sample_rate + padding) * 4
    if layer == 3 and version != V1:
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
        bitrate=BITRATES[(version == V1, layer)][br_index - 1], sample_rate=RATES[version][sr_index],
        padding=(b2 >> 1) & 1, channel_mode=b3 >> 6,
    )


def size_table(first: FrameHeader) -> list[int]:
    """Frame size for every (byte1 << 8 | byte2) that keeps version, layer and sample rate of
    ``first``; 0 elsewhere. One list lookup per frame checks the header and gives its size."""
    return _size_table(first.version, first.layer, first.sample_rate)


@lru_cache(maxsize=16)
def _size_table(version: int, layer: int, sample_rate: int) -> list[int]:
    # Cached: building 65,536 entries costs more than walking a short part.
    table = [0] * 65536
    version_layer = 0xE0 | (version << 3) | (LAYER_BITS[layer] << 1)
    sr_index = RATES[version].index(sample_rate)
    for protection in (0, 1):
        b1 = version_layer | protection
        for br_index in range(1, 15):
            kbps = BITRATES[(version == V1, layer)][br_index - 1]
            for pad in (0, 1):
                for low in range(2):  # the private bit
                    b2 = (br_index << 4) | (sr_index << 2) | (pad << 1) | low
                    table[(b1 << 8) | b2] = frame_size(version, layer, kbps, sample_rate, pad)
    return table


def run_pattern(first: FrameHeader) -> tuple[re.Pattern | None, int]:
    """A regex matching OFFSET_STRIDE consecutive frames with ``first``'s header bytes 0-1 and
    bitrate / sample rate (padding and private bits free), and the unpadded frame size."""
    return _run_pattern(first.version, first.layer, first.protected, first.bitrate_index, first.bitrate,
                        first.sample_rate)


@lru_cache(maxsize=32)
def _run_pattern(version: int, layer: int, protected: bool, bitrate_index: int, bitrate: int,
                 sample_rate: int) -> tuple[re.Pattern | None, int]:
    if layer == 1:  # its padding slot is 4 bytes: lengths would no longer count frames
        return None, 0
    size = frame_size(version, layer, bitrate, sample_rate, 0)
    if size <= OFFSET_STRIDE + 3:
        return None, 0
    b1 = 0xE0 | (version << 3) | (LAYER_BITS[layer] << 1) | (0 if protected else 1)
    base = (bitrate_index << 4) | (RATES[version].index(sample_rate) << 2)
    head = re.escape(bytes((0xFF, b1)))

    def cls(*values: int) -> bytes:
        return b"[" + b"".join(re.escape(bytes((v,))) for v in values) + b"]"

    plain = cls(base, base | 1) + b".{%d}" % (size - 3)
    padded = cls(base | 2, base | 3) + b".{%d}" % (size - 2)
    # Possessive: a frame either matches or the block fails, so there is nothing to backtrack
    # into, and the engine keeps no backtracking state (about 15 % faster than a plain repeat).
    return re.compile(b"(?:" + head + b"(?:" + plain + b"|" + padded + b")){%d}+" % OFFSET_STRIDE, re.DOTALL), size
