"""The re-encode path: one ffmpeg process, one filter graph, streaming straight to the output.

Per part: input-side seek/duration for the trim (ffmpeg seeks instead of decoding the skipped
audio), then volume (gain + loudness match), resample and channel layout, then silence padding for
gaps. Parts are joined with ``concat`` or a chain of ``acrossfade``; fades go on the joined stream.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

from ..errors import StitchError, UnsupportedAudio
from ..ffmpeg import dies_with_parent, ffmpeg_binary
from ..options import SAMPLE_RATES, Options
from .probe import AudioInfo

DEFAULT_BITRATE = {"mp3": "128k", "m4a": "128k"}  # ogg: libvorbis' own quality default
_SILENCE_LUFS = -70.0  # at or below: a silent part, leave its level alone
MEASURE_NICENESS = 10
# Decoders whose output already is what the graph works in (fltp): such parts need no filters
# when their rate and channels match the output, so a plain join is the hand-written command.
_PLANAR_FLOAT_DECODERS = frozenset({"mp3", "aac", "vorbis", "opus"})


@dataclass(frozen=True)
class Segment:
    """One part as it enters the graph: the trimmed span of its source and its total gain."""

    info: AudioInfo
    start_s: float
    duration_s: float
    gain_db: float
    cut_end: bool = True  # end_s was given: stop reading there

    @property
    def passthrough_to(self) -> tuple[int, int] | None:
        """(rate, channels) this part already decodes to as planar float with no gain, if so."""
        if self.gain_db or self.info.codec not in _PLANAR_FLOAT_DECODERS:
            return None
        return self.info.sample_rate, self.info.channels


def output_rate(options: Options, infos: list[AudioInfo]) -> int:
    """The requested rate, else the highest input rate an encoder for every format accepts."""
    if options.sample_rate:
        return options.sample_rate
    highest = max(i.sample_rate for i in infos)
    return next((r for r in SAMPLE_RATES if r >= highest), SAMPLE_RATES[-1])


def output_channels(options: Options, infos: list[AudioInfo]) -> int:
    return options.channels or min(2, max(i.channels for i in infos))


_INTEGRATED = re.compile(r"Integrated loudness:\s*\n\s*I:\s*(-?[\d.]+|-inf) LUFS")


def measure_loudness(info: AudioInfo, start_s: float, duration_s: float,
                     children: _Children | None = None) -> float:
    """Integrated loudness (LUFS) of a part's span: a decode-only ebur128 pass, nothing written."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-vn", "-sn", "-dn"]
    if start_s:
        cmd += ["-ss", f"{start_s:.6f}"]
    cmd += ["-t", f"{duration_s:.6f}", "-i", str(info.path), "-map", "0:a:0",
            "-af", "ebur128=framelog=verbose:metadata=0", "-f", "null", "-"]
    # framelog=verbose prints the summary at info level; the per-frame log goes to verbose only.
    proc = (children or _Children()).popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           stdin=subprocess.DEVNULL, text=True, errors="replace")
    with contextlib.suppress(OSError):
        # Measuring only has to stay ahead of the encoder, which is the critical path: on a
        # busy machine the encoder gets the CPU first.
        os.setpriority(os.PRIO_PROCESS, proc.pid, MEASURE_NICENESS)
    _, stderr = proc.communicate()
    m = _INTEGRATED.search(stderr)
    if proc.returncode != 0 or not m:
        raise UnsupportedAudio(f"{info.label}: cannot be decoded to measure loudness", part=info.index)
    value = m.group(1)
    return float("-inf") if value == "-inf" else float(value)


class _Children:
    """Processes started from several threads; ``kill()`` ends those running and refuses new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._killed = False

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._killed:
                raise StitchError("stopped: the job failed")
            proc = subprocess.Popen(cmd, **kwargs, **dies_with_parent())
            self._procs.append(proc)
            return proc

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            for proc in self._procs:
                with contextlib.suppress(OSError):
                    proc.kill()  # a no-op once the process has been waited for


@contextlib.contextmanager
def _measuring(segments: list[Segment]) -> Iterator[list[Future]]:
    """Every segment's loudness, measured in parallel: yields the futures in segment order.

    Leaving by an exception kills the measurements in flight and skips those not started,
    so a failed job does not wait for (possibly long) measurements nobody will read.
    """
    children = _Children()
    workers = max(1, min(len(segments), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        levels = [pool.submit(measure_loudness, s.info, s.start_s, s.duration_s, children) for s in segments]
        try:
            yield levels
        except BaseException:
            for f in levels:
                f.cancel()
            children.kill()
            raise


def _matching_gain(level: float, target_lufs: float) -> float:
    return 0.0 if level <= _SILENCE_LUFS else target_lufs - level


def loudness_gains(segments: list[Segment], target_lufs: float) -> list[float]:
    """Gain (dB) that brings each segment to ``target_lufs``; measured in parallel."""
    with _measuring(segments) as levels:
        return [_matching_gain(f.result(), target_lufs) for f in levels]


def _fades(options: Options, total_s: float) -> list[str]:
    post = []
    if options.fade_in_ms:
        post.append(f"afade=t=in:st=0:d={options.fade_in_ms / 1000:.6f}")
    if options.fade_out_ms:
        d = options.fade_out_ms / 1000
        post.append(f"afade=t=out:st={max(0.0, total_s - d):.6f}:d={d:.6f}")
    return post


def _encoder_args(options: Options, rate: int, channels: int, out_path: str) -> list[str]:
    fmt = options.output_format
    args = ["-c:a", fmt.codec]
    bitrate = None if fmt.lossless else options.encoder_bitrate(rate, channels, DEFAULT_BITRATE.get(fmt.name))
    if bitrate:
        args += ["-b:a", bitrate]
    return args + ["-ar", str(rate), "-ac", str(channels), "-map_metadata", "-1", "-f", fmt.muxer, out_path]


def build_command(segments: list[Segment], options: Options, rate: int, channels: int, total_s: float,
                  out_path: str) -> list[str]:
    """The full ffmpeg argv for one encode pass writing ``out_path``."""
    layout = "mono" if channels == 1 else "stereo"
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
           "-progress", "pipe:1", "-y"]
    for s in segments:
        if s.start_s:
            cmd += ["-ss", f"{s.start_s:.6f}"]
        if s.cut_end:
            cmd += ["-t", f"{s.duration_s:.6f}"]
        cmd += ["-i", str(s.info.path)]
    chains = []
    labels = []
    last = len(segments) - 1
    gap_samples = round(options.gap_ms * rate / 1000)
    for i, s in enumerate(segments):
        filters = []
        if s.passthrough_to != (rate, channels):
            if s.gain_db:
                filters.append(f"volume={s.gain_db:.4f}dB")
            filters.append(f"aresample={rate}")
            filters.append(f"aformat=sample_fmts=fltp:channel_layouts={layout}")
        if gap_samples and i < last:
            filters.append(f"apad=pad_len={gap_samples}")
        if options.crossfade_ms and last:
            # ffmpeg 7.0's acrossfade drops most of its second input when that input arrives in
            # frames larger than usual (flac's 4608 samples); even frames avoid it.
            filters.append("asetnsamples=n=1024:p=0")
        if filters:
            chains.append(f"[{i}:a:0]{','.join(filters)}[p{i}]")
            labels.append(f"p{i}")
        else:
            labels.append(f"{i}:a:0")
    post = _fades(options, total_s)
    if len(segments) == 1 and not chains and not post:
        return cmd + ["-map", "0:a:0", *_encoder_args(options, rate, channels, out_path)]
    if len(segments) == 1:
        joined = labels[0]
    elif options.crossfade_ms:
        n = round(options.crossfade_ms * rate / 1000)
        prev = labels[0]
        for i in range(1, len(segments)):
            label = f"x{i}"
            chains.append(f"[{prev}][{labels[i]}]acrossfade=ns={n}:c1=tri:c2=tri[{label}]")
            prev = label
        joined = prev
    else:
        inputs = "".join(f"[{label}]" for label in labels)
        chains.append(f"{inputs}concat=n={len(segments)}:v=0:a=1[j]")
        joined = "j"
    if post:
        chains.append(f"[{joined}]{','.join(post)}[out]")
        joined = "out"
    return cmd + ["-filter_complex", ";".join(chains), "-map", f"[{joined}]",
                  *_encoder_args(options, rate, channels, out_path)]


def run_ffmpeg(cmd: list[str], total_s: float, progress: Callable[[float], None] | None,
               feed: Callable[[IO[bytes]], None] | None = None) -> None:
    """Run one ffmpeg, feeding ``-progress`` lines to ``progress``; raise StitchError on failure.

    With ``feed``, a thread calls ``feed(stdin)`` to stream the input; its errors win over
    ffmpeg's (a part that cannot be decoded explains a broken pipe).
    """
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: ffmpeg can never block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.PIPE if feed else subprocess.DEVNULL, **dies_with_parent())
        feeder, failures = None, []
        if feed is not None:
            def pump() -> None:
                try:
                    feed(proc.stdin)
                except BrokenPipeError:
                    pass  # the encoder stopped reading: its exit status tells why
                except BaseException as exc:  # re-raised in the calling thread below
                    failures.append(exc)
                    proc.kill()
                finally:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()

            feeder = threading.Thread(target=pump, name="stitch-feed", daemon=True)
            feeder.start()
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
            if feeder is not None:
                feeder.join()
        if failures:
            raise failures[0]
        if code != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace").strip()
            raise StitchError(f"ffmpeg failed (exit {code}): {tail}")


def stream_command(options: Options, rate: int, channels: int, total_s: float, out_path: str) -> list[str]:
    """The encoder of the streamed path: raw float PCM on stdin, fades, one encode."""
    layout = "mono" if channels == 1 else "stereo"
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
           "-progress", "pipe:1", "-y", "-f", "f32le", "-ar", str(rate), "-ch_layout", layout, "-i", "pipe:0"]
    post = _fades(options, total_s)
    if post:
        cmd += ["-af", ",".join(post)]
    return cmd + _encoder_args(options, rate, channels, out_path)


def loudness_feed(segments: list[Segment], target_lufs: float, options: Options, rate: int,
                  channels: int) -> Callable[[IO[bytes]], None]:
    """A feeder for ``stream_command``: each part decoded with its gain once its loudness is known.

    Every part's loudness is measured up front in parallel, but part i is streamed as soon as
    its own measurement is done, so the encoder starts after the first part's measurement
    instead of after all of them. Gaps are written as exact runs of zero samples.
    """
    layout = "mono" if channels == 1 else "stereo"
    frame_bytes = 4 * channels
    gap_bytes = round(options.gap_ms * rate / 1000) * frame_bytes
    last = len(segments) - 1

    def feed(sink: IO[bytes]) -> None:
        with _measuring(segments) as levels:
            for i, s in enumerate(segments):
                gain = s.gain_db + _matching_gain(levels[i].result(), target_lufs)
                _decode_into(sink, s, gain, rate, layout)
                if gap_bytes and i < last:
                    _write_zeros(sink, gap_bytes)

    return feed


def _decode_into(sink: IO[bytes], s: Segment, gain_db: float, rate: int, layout: str) -> None:
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    if s.start_s:
        cmd += ["-ss", f"{s.start_s:.6f}"]
    cmd += ["-t", f"{s.duration_s:.6f}", "-i", str(s.info.path), "-map", "0:a:0",
            "-af", f"volume={gain_db:.4f}dB,aresample={rate},aformat=sample_fmts=flt:channel_layouts={layout}",
            "-f", "f32le", "pipe:1"]
    with tempfile.TemporaryFile() as err:
        dec = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                               **dies_with_parent())
        try:
            shutil.copyfileobj(dec.stdout, sink, 1 << 20)
            code = dec.wait()
        finally:
            if dec.poll() is None:
                dec.kill()
                dec.wait()
            dec.stdout.close()
    if code != 0:
        raise UnsupportedAudio(f"{s.info.label}: cannot be decoded ({s.info.codec})", part=s.info.index)


def _write_zeros(sink: IO[bytes], n: int) -> None:
    block = bytes(min(n, 1 << 20))
    while n > 0:
        sink.write(block[:n])
        n -= len(block)


def decodes(info: AudioInfo) -> bool:
    """True if ffmpeg decodes the part's audio without error (used to blame a failed encode)."""
    proc = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(info.path),
         "-map", "0:a:0", "-f", "null", "-"],
        capture_output=True, **dies_with_parent(),
    )
    return proc.returncode == 0
