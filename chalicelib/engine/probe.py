"""Probe an input file cheaply: MP3 by walking its frames, others with mutagen, then ffmpeg.

No ffprobe (no wheel we can ship has it). Every failure becomes a typed error naming the part.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import PartNotFound, UnsupportedAudio, part_label
from ..records import field, record
from . import mp3


@record(frozen=True)
class AudioInfo:
    """What the engine (and the API's work estimate) needs to know about one input."""

    path: Path
    duration_s: float
    codec: str
    sample_rate: int
    channels: int
    bitrate_kbps: int | None = None
    index: int = 0
    name: str | None = None
    mp3: mp3.Mp3Scan | None = field(default=None, repr=False, compare=False)  # set for clean MPEG audio
    mp3_head: mp3.Mp3Head | None = field(default=None, repr=False, compare=False)  # MPEG, maybe not walked
    lead_in: int = 0  # samples ffmpeg decodes before the audio and does not skip by itself (priming)

    @property
    def label(self) -> str:
        return part_label(self.index, self.name or self.path.name)


def probe(path, index: int = 0, name: str | None = None, *, walk: bool = True) -> AudioInfo:
    """Duration, codec, sample rate and channels of ``path``.

    Raises PartNotFound (missing file) or UnsupportedAudio (empty, truncated, not audio), with
    ``part=index`` and a message such as ``part 3 (b.txt): no audio stream``. With
    ``walk=False`` an MPEG file is judged by its first frames only (its duration is the header's
    estimate and truncation is not checked): the copy join walks the frames while copying.
    """
    path = path if isinstance(path, Path) else Path(path)
    label = part_label(index, name or path.name)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise PartNotFound(f"{label}: file not found", part=index) from None
    except OSError as exc:
        raise PartNotFound(f"{label}: cannot read file ({exc.strerror})", part=index) from None
    if not stat.S_ISREG(st.st_mode):
        raise PartNotFound(f"{label}: not a regular file", part=index)
    size = st.st_size
    if size == 0:
        raise UnsupportedAudio(f"{label}: empty file", part=index)

    try:
        head = mp3.peek(path)
    except mp3.Mp3Error:
        head = None
    if head is not None and not walk:
        h = head.header
        return AudioInfo(path, head.duration_estimate, "mp3" if h.layer == 3 else f"mp{h.layer}", h.sample_rate,
                         h.channels, h.bitrate, index, name, None, head)
    if head is not None:
        try:
            scan = mp3.scan(path, head)
        except mp3.Mp3Truncated as exc:
            raise UnsupportedAudio(f"{label}: {exc}", part=index) from None
        except mp3.Mp3Error:
            scan = None  # junk between frames: ffmpeg can still decode it, it just can't be copied
        if scan is not None:
            h = scan.header
            seconds = scan.frames * h.samples / h.sample_rate
            kbps = round((scan.end - scan.start) * 8 / seconds / 1000)  # the average: right for VBR too
            return AudioInfo(
                path, scan.duration_s, "mp3" if h.layer == 3 else f"mp{h.layer}", h.sample_rate, h.channels,
                kbps, index, name, scan, head,
            )

    info = _probe_mutagen(path, index, name)
    if info is not None:
        return info
    return _probe_ffmpeg(path, index, name, label)


_MUTAGEN_CODECS = {"WAVE": "pcm", "FLAC": "flac", "OggVorbis": "vorbis", "OggOpus": "opus", "MP4": "aac",
                   "OggFLAC": "flac", "AIFF": "pcm"}


def _probe_mutagen(path: Path, index: int, name: str | None) -> AudioInfo | None:
    try:
        import mutagen

        f = mutagen.File(str(path))
    except Exception:  # mutagen raises many private error types on odd files; ffmpeg decides then
        return None
    if f is None or f.info is None:
        return None
    kind = type(f).__name__
    if kind not in _MUTAGEN_CODECS:
        return None
    info = f.info
    length = float(getattr(info, "length", 0) or 0)
    # Opus always decodes at 48 kHz (mutagen does not say).
    rate = 48000 if kind == "OggOpus" else int(getattr(info, "sample_rate", 0) or 0)
    channels = int(getattr(info, "channels", 0) or 0)
    if length <= 0 or rate <= 0 or channels <= 0:
        return None
    codec = _MUTAGEN_CODECS[kind]
    lead_in = 0
    if kind == "MP4":
        codec = str(getattr(info, "codec", "mp4a") or "mp4a")
        if not codec.startswith("mp4a"):
            return None  # ALAC and friends: let ffmpeg say whether it decodes them
        codec = "aac"
        # The container's length counts the encoder's priming and padding; the edit list or
        # iTunSMPB says what a decoder plays.
        from . import mp4

        found = mp4.gapless(path, rate, _itunsmpb(f))
        if found is not None:
            length, lead_in = found.samples / rate, found.lead_in
    elif kind == "FLAC" and getattr(info, "total_samples", 0):
        length = info.total_samples / rate
    bitrate = getattr(info, "bitrate", None)
    return AudioInfo(path, length, codec, rate, channels, int(bitrate) // 1000 if bitrate else None, index, name,
                     lead_in=lead_in)


def _itunsmpb(f) -> str | None:
    value = (f.tags or {}).get("----:com.apple.iTunes:iTunSMPB")
    if not value:
        return None
    return bytes(value[0]).decode("latin-1", "replace")


# Patterns, not compiled regexes: only the ffmpeg fallback uses them (re caches them then), and
# compiling at import costs a copy join's CLI 0.3 ms.
_STREAM = r"Stream #\d+:\d+.*?: Audio: (\w+).*?, (\d+) Hz, ([^,]+)"
_DURATION = r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)"
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2}
PROBE_TIMEOUT_S = 60
DECODE_TIMEOUT_S = 600


def _ffmpeg(args: list[str], label: str, index: int, timeout: float):
    """Run ffmpeg on one part; a part that keeps it busy past ``timeout`` is unusable, not a retry."""
    import subprocess  # here, not at the top: an MP3 copy join never starts a process

    from ..ffmpeg import dies_with_parent, ffmpeg_command

    try:
        return subprocess.run(ffmpeg_command(*args, loglevel="info"),
                              capture_output=True, text=True, errors="replace", timeout=timeout,
                              **dies_with_parent())
    except subprocess.TimeoutExpired:
        raise UnsupportedAudio(f"{label}: ffmpeg could not read it within {timeout:g} s", part=index) from None


def _probe_ffmpeg(path: Path, index: int, name: str | None, label: str) -> AudioInfo:
    """Ask ffmpeg itself (``ffmpeg -i`` prints the stream list, then complains there is no output)."""
    proc = _ffmpeg(["-i", str(path)], label, index, PROBE_TIMEOUT_S)
    text = proc.stderr
    m = re.search(_STREAM, text)
    if not m:
        raise UnsupportedAudio(f"{label}: no audio stream", part=index)
    codec, rate, layout = m.group(1), int(m.group(2)), m.group(3).strip()
    channels = _LAYOUT_CHANNELS.get(layout.split("(")[0].strip())
    if channels is None:
        n = re.match(r"(\d+) channels", layout)
        channels = int(n.group(1)) if n else 2
    d = re.search(_DURATION, text)
    if d:
        duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
    else:
        duration = _decoded_duration(path, label, index)
    if duration <= 0:
        raise UnsupportedAudio(f"{label}: no audio in the file", part=index)
    return AudioInfo(path, duration, codec, rate, channels, None, index, name)


_OUT_TIME = r"out_time_us=(\d+)"


def _decoded_duration(path: Path, label: str, index: int) -> float:
    """Decode once (no output) when the container states no duration, e.g. raw ADTS."""
    proc = _ffmpeg(["-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "null", "-progress", "pipe:1", "-"],
                   label, index, DECODE_TIMEOUT_S)
    times = re.findall(_OUT_TIME, proc.stdout)
    if proc.returncode != 0 or not times:
        raise UnsupportedAudio(f"{label}: cannot be decoded", part=index)
    return int(times[-1]) / 1e6
