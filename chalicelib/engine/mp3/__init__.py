"""MPEG audio at frame level: scan a file's frames and join files without decoding.

Nothing here decodes audio or holds a whole file in memory: files are read in chunks, frame
headers are walked with a lookup table, and each chunk is written from the buffer it was read
into (two threads taking turns on long parts, walk.FrameCopier).
The joined file gets one Xing/Info frame (frame count, byte count, TOC) and a LAME tag
carrying the first part's encoder delay and the last part's padding, so decoders (ffmpeg,
mpg123, mutagen, players) report the same duration the decoder produces.

frames: headers and tables; tags: Xing/Info/LAME/VBRI; walk: peek and scan; join: the writer.
"""
from __future__ import annotations

from .frames import (
    DECODER_DELAY,
    OFFSET_STRIDE,
    FrameHeader,
    Mp3Error,
    Mp3Truncated,
    frame_size,
    parse_header,
)
from .join import JoinInfo, compatible, join, kept_padding
from .tags import VbrTag, XingHeaderFlags, build_tag_frame, crc16, parse_vbr_tag, played_samples, tag_offset
from .walk import CHUNK, Mp3Head, Mp3Scan, peek, scan

__all__ = [
    "CHUNK", "DECODER_DELAY", "OFFSET_STRIDE", "FrameHeader", "JoinInfo", "Mp3Error", "Mp3Head", "Mp3Scan",
    "Mp3Truncated", "VbrTag", "XingHeaderFlags", "build_tag_frame", "compatible", "crc16", "frame_size",
    "join", "kept_padding", "parse_header", "parse_vbr_tag", "peek", "played_samples", "scan", "tag_offset",
]
