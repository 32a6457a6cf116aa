"""The silent first frame of an MP3 stream: Xing/Info (with a LAME tag) or VBRI, read and written."""
from __future__ import annotations

import struct
from enum import IntFlag

from ...records import record
from .frames import BITRATES, DECODER_DELAY, LAYER_BITS, RATES, V1, FrameHeader, frame_size


class XingHeaderFlags(IntFlag):
    """Which optional fields follow a Xing/Info header's flags word (mutagen's names)."""

    FRAMES = 0x1
    BYTES = 0x2
    TOC = 0x4
    VBR_SCALE = 0x8


_FRAMES, _BYTES, _TOC, _VBR_SCALE = (int(f) for f in XingHeaderFlags)
_LAME_ENCODERS = (b"LAME", b"Lavf", b"Lavc", b"L3.9")
# Xing/Info header, flags, frames, bytes, TOC, quality, then the 36-byte LAME tag.
_TAG_BYTES = 120 + 36


@record
class VbrTag:
    """A Xing/Info or VBRI frame at the start of the stream (it carries no audio)."""

    kind: str  # "Xing", "Info" or "VBRI"
    frames: int | None = None
    bytes: int | None = None
    toc: bytes | None = None
    encoder_delay: int | None = None  # None: no LAME tag, so decoders cannot know it
    encoder_padding: int | None = None

    @property
    def gapless(self) -> bool:
        """True when a LAME tag states delay and padding (gapless decoders then trim)."""
        return self.encoder_delay is not None


def tag_offset(header: FrameHeader) -> int:
    """Where a Xing/Info tag starts in its frame: after the header and the side info.

    With CRC protection too: LAME (``lame -p``) keeps the tag at that offset ("the Xing data
    still starts at the same offset", VbrTag.c), 2 bytes before the end of the shifted side info,
    and ffmpeg looks for it there."""
    return 4 + header.side_info


def parse_vbr_tag(frame: bytes, header: FrameHeader) -> VbrTag | None:
    """Read the Xing/Info (and LAME) or VBRI tag from the first frame's bytes, if it is one."""
    off = tag_offset(header)
    if header.protected and frame[off:off + 4] not in (b"Xing", b"Info"):
        off += 2  # a writer that put the tag after the CRC-shifted side info
    ident = frame[off:off + 4]
    if ident in (b"Xing", b"Info") and len(frame) >= off + 8:
        tag = VbrTag(ident.decode())
        # Plain int tests: IntFlag membership costs more than the rest of this parse.
        flags = struct.unpack_from(">I", frame, off + 4)[0]
        p = off + 8
        if flags & _FRAMES and len(frame) >= p + 4:
            tag.frames = struct.unpack_from(">I", frame, p)[0]
            p += 4
        if flags & _BYTES and len(frame) >= p + 4:
            tag.bytes = struct.unpack_from(">I", frame, p)[0]
            p += 4
        if flags & _TOC and len(frame) >= p + 100:
            tag.toc = bytes(frame[p:p + 100])
            p += 100
        if flags & _VBR_SCALE:
            p += 4
        # LAME tag: 9-byte encoder string, then delay/padding (12 bits each) 21 bytes in.
        if len(frame) >= p + 24 and frame[p:p + 4] in _LAME_ENCODERS:
            v = int.from_bytes(frame[p + 21:p + 24], "big")
            tag.encoder_delay, tag.encoder_padding = v >> 12, v & 0xFFF
        return tag
    # VBRI sits at a fixed offset, whatever the side info.
    if frame[36:40] == b"VBRI" and len(frame) >= 36 + 18:
        _ver, _delay, _q, nbytes, frames = struct.unpack_from(">HHHII", frame, 40)
        return VbrTag("VBRI", frames=frames, bytes=nbytes)
    return None


def played_samples(frames: int, samples_per_frame: int, delay: int | None, padding: int | None) -> int:
    """Samples ffmpeg and mpg123 output for a stream whose tag frame states ``delay``/``padding``.

    Without a LAME tag (None) they play every frame. With one they skip the decoder's own delay
    too, so a stated padding below that delay cannot give the skipped samples back at the end."""
    total = frames * samples_per_frame
    if delay is None:
        return total
    return max(0, total - delay - max(padding or 0, DECODER_DELAY))


def crc16(data: bytes) -> int:
    """CRC-16/ARC, the checksum of the LAME tag."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def tag_frame_header(h: FrameHeader) -> tuple[bytes, int]:
    """A CRC-less header like ``h`` with the smallest bitrate whose frame holds the tag."""
    needed = 4 + h.side_info + _TAG_BYTES
    rates = BITRATES[(h.version == V1, h.layer)]
    for index in range(1, 15):
        size = frame_size(h.version, h.layer, rates[index - 1], h.sample_rate, 0)
        if size >= needed:
            break
    version_layer = 0xE0 | (h.version << 3) | (LAYER_BITS[h.layer] << 1) | 1
    sr_index = RATES[h.version].index(h.sample_rate)
    b2 = (index << 4) | (sr_index << 2)
    b3 = h.channel_mode << 6
    return bytes((0xFF, version_layer, b2, b3)), size


def build_tag_frame(h: FrameHeader, frames: int, total_bytes: int, toc: bytes, *, vbr: bool,
                    delay: int | None, padding: int | None) -> bytes:
    """The Xing ("Info" for CBR) frame; ``total_bytes`` includes this frame.

    A LAME tag (delay, padding) follows unless ``delay`` is None: then decoders play every frame,
    as they did for parts that had no LAME tag."""
    header, size = tag_frame_header(h)
    out = bytearray(size)
    out[0:4] = header
    off = 4 + h.side_info
    out[off:off + 4] = b"Xing" if vbr else b"Info"
    flags = XingHeaderFlags.FRAMES | XingHeaderFlags.BYTES | XingHeaderFlags.TOC | XingHeaderFlags.VBR_SCALE
    struct.pack_into(">IIII", out, off + 4, flags, frames, total_bytes, 0)  # then TOC over the 0
    out[off + 16:off + 116] = toc
    struct.pack_into(">I", out, off + 116, 0)  # quality
    if delay is None:
        return bytes(out)
    p = off + 120
    out[p:p + 9] = b"LAME3.100"
    out[p + 9] = 0x00 if not vbr else 0x04  # tag revision 0; VBR method
    v = (min(delay, 0xFFF) << 12) | min(padding or 0, 0xFFF)
    out[p + 21:p + 24] = v.to_bytes(3, "big")
    struct.pack_into(">I", out, p + 28, total_bytes)  # music length
    struct.pack_into(">H", out, p + 34, crc16(bytes(out[:p + 34])))
    return bytes(out)
