"""The encode side of an exact join: interleaved f32le PCM from a pipe into the output format.

The encoder writes the output's own gapless info (a LAME tag for MP3, the edit list for M4A,
Opus pre-skip), so decoders play exactly the samples it was fed. Formats that
``engine.parallel`` can chunk are encoded on every core; the rest by one ffmpeg.
"""
from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from ..errors import StitchError
from ..ffmpeg import dies_with_parent, ffmpeg_command
from ..options import SAMPLE_RATES, Options
from . import parallel
from .graph import Layout
from .parallel import DEFAULT_BITRATE
from .probe import AudioInfo

log = logging.getLogger(__name__)




def output_rate(options: Options, infos: list[AudioInfo]) -> int:
    """The requested rate, else the highest input rate an encoder for every format accepts."""
    if options.sample_rate:
        return options.sample_rate
    highest = max(i.sample_rate for i in infos)
    return next((r for r in SAMPLE_RATES if r >= highest), SAMPLE_RATES[-1])


def output_channels(options: Options, infos: list[AudioInfo]) -> int:
    return options.channels or min(2, max(i.channels for i in infos))


def bitrate(options: Options, layout: Layout | None = None) -> str | None:
    """The requested bitrate, or the default; with the output's layout, checked against what the
    encoder accepts there (BadRequest naming ``bitrate``) and the default kept inside it."""
    fmt = options.output_format
    if fmt.lossless:
        return None
    if layout is None:
        return options.bitrate or DEFAULT_BITRATE.get(fmt.name)
    return options.encoder_bitrate(layout.rate, layout.channels, DEFAULT_BITRATE.get(fmt.name))


def _encoder_args(options: Options, rate: int, channels: int, out_path: str) -> list[str]:
    """The encoder's output options (``parallel.encoder_args``, with the bitrate checked here) and the output."""
    fmt = options.output_format
    kbps = bitrate(options, Layout(rate, channels))
    return parallel.encoder_args(fmt.name, rate, channels, kbps) + ["-f", fmt.muxer, out_path]


def encoder_command(options: Options, layout: Layout, out_path: str) -> list[str]:
    """One ffmpeg reading f32le on stdin and writing ``out_path`` (progress on stdout)."""
    return ffmpeg_command("-progress", "pipe:1", "-y", *layout.pcm_args(), "-i", "pipe:0",
                          *_encoder_args(options, layout.rate, layout.channels, out_path))


def encode(pcm: BinaryIO, out_path: str, options: Options, layout: Layout, total_samples: int,
           progress: Callable[[float], None] | None) -> None:
    """Encode the PCM read from ``pcm`` until EOF into ``out_path``."""
    if options.format in parallel.parallel_formats():
        parallel.encode_pcm(pcm, out_path, fmt=options.format, rate=layout.rate, channels=layout.channels,
                            bitrate=bitrate(options, layout), progress=progress, total_samples=total_samples)
        return
    run_ffmpeg(encoder_command(options, layout, out_path), total_samples / layout.rate, progress, stdin=pcm)


def run_ffmpeg(cmd: list[str], total_s: float, progress: Callable[[float], None] | None,
               stdin: BinaryIO | None = None) -> None:
    """Run one ffmpeg, feeding ``-progress`` lines to ``progress``; raise StitchError on failure."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: ffmpeg can never block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                stdin=stdin if stdin is not None else subprocess.DEVNULL, **dies_with_parent())
        try:
            last = -1.0
            for raw in proc.stdout:
                if progress is None or not raw.startswith(b"out_time_us=") or total_s <= 0:
                    continue
                try:
                    done = int(raw[12:]) / 1e6
                except ValueError:  # "N/A" before the first frame
                    continue
                fraction = min(0.999, max(0.0, done / total_s))
                if fraction - last >= 0.001:
                    last = fraction
                    progress(fraction)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if code != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace").strip()
            # The tool's own words go to the log, not to the client.
            log.warning("encoder failed (exit %s): %s", code, tail)
            raise StitchError(f"ffmpeg failed (exit {code}) while encoding the output")


def decodes(info: AudioInfo) -> bool:
    """True if ffmpeg decodes the part's audio without error (used to blame a failed decode)."""
    cmd = ffmpeg_command("-xerror", "-i", str(info.path), "-map", "0:a:0", "-f", "null", "-")
    return subprocess.run(cmd, capture_output=True, **dies_with_parent()).returncode == 0
