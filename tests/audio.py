"""Generate real audio with ffmpeg's lavfi sources, and measure it by decoding (pydub = reference)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

CODEC_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "m4a": ["-c:a", "aac", "-b:a", "96k", "-f", "ipod"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"],
}


def make_tone(path, seconds: float = 1.0, *, rate: int = 44100, channels: int = 2,
              freq: int = 440, fmt: str | None = None, volume: float = 0.5, extra: list | None = None) -> Path:
    """Write a sine tone of ``seconds`` to ``path``; the format comes from ``fmt`` or the suffix."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    src = f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"
    layout = "mono" if channels == 1 else "stereo"
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
           "-af", f"volume={volume},aformat=channel_layouts={layout}", "-ar", str(rate),
           *CODEC_ARGS[fmt], *(extra or []), str(path)]
    subprocess.run(cmd, check=True)
    return path


# pydub only skips ffprobe when it is given the decoder too (``codec=``), not just ``format=``.
DECODERS = {"mp3": "mp3", "wav": "pcm_s16le", "flac": "flac", "mp4": "aac", "ogg": "vorbis", "opus": "opus"}


def decode_audio(path, fmt: str | None = None):
    """Decode ``path`` with pydub (the reference decoder), naming the decoder so it never calls ffprobe."""
    from pydub import AudioSegment

    AudioSegment.converter = ffmpeg_binary()
    path = Path(path)
    suffix = path.suffix.lstrip(".")
    fmt = fmt or {"m4a": "mp4"}.get(suffix, suffix)
    if fmt == "wav":
        return AudioSegment.from_file(str(path), format="wav")
    codec = DECODERS[fmt]
    return AudioSegment.from_file(str(path), format="ogg" if fmt == "opus" else fmt, codec=codec)


def decoded_frames(path, fmt: str | None = None) -> int:
    """Sample frames (per channel) a full decode of ``path`` produces."""
    return int(decode_audio(path, fmt).frame_count())


def decoded_duration(path, fmt: str | None = None) -> float:
    seg = decode_audio(path, fmt)
    return seg.frame_count() / seg.frame_rate
