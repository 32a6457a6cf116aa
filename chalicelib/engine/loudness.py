"""Part levels: integrated loudness and true peak from one ebur128 pass per part (two for a
boost that may reach the ceiling), measured in parallel at lower priority than the encoder; and
the gain each part gets, boosts limited so the output stays at or under the true-peak ceiling."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import UnsupportedAudio
from ..ffmpeg import Children, ffmpeg_command, nice_thread
from .segment import Segment

SILENCE_LUFS = -70.0  # at or below: a silent part, leave its level alone
# The loudest a boosted part may come out, in dBTP. Lossy encoders overshoot the PCM they are fed
# by a few tenths of a dB, so their ceiling leaves that much room under -1 dBTP.
CEILING_DBTP = {"lossless": -1.0, "lossy": -1.5}
MEASURE_NICENESS = 10

_INTEGRATED = re.compile(r"Integrated loudness:\s*\n\s*I:\s*(-?[\d.]+|-inf) LUFS")
_PEAK = re.compile(r"True peak:\s*\n\s*Peak:\s*(-?[\d.]+|-inf) dBFS")
_SAMPLE_PEAK = re.compile(r"Sample peak:\s*\n\s*Peak:\s*(-?[\d.]+|-inf) dBFS")
# How far a true peak can lie above the sample peak, in dB, as ebur128 measures it (resampling
# to 192 kHz): an interpolated sample is at most the sum of |taps| of its filter phase times the
# largest input sample. The worst found, with inputs built to match the signs of a windowed
# sinc's taps (16 to 256 of them, at 8-48 kHz), is +7.4 dB; random +-1 noise gives +7.2, a tone at
# a quarter of the rate, 45 degrees off the samples, +3.6. 9 dB leaves 1.6 dB of margin.
TRUE_PEAK_OVER_SAMPLE_DB = 9.0


@dataclass(frozen=True)
class Level:
    lufs: float
    true_peak_db: float


def _number(text: str) -> float:
    return float("-inf") if text == "-inf" else float(text)


def measure(segment: Segment, children: Children | None = None, target_lufs: float | None = None,
            ceiling_dbtp: float | None = None) -> Level:
    """Integrated loudness (LUFS) and true peak (dBTP) of a part's span; nothing is written.

    With ``ceiling_dbtp`` the first pass takes the sample peak only (the 4x oversampled true
    peak costs 2.6x the whole pass: 1.29 s against 0.49 s of CPU for 3 min of MP3); when the part's
    final gain is a cut, or even the sample peak plus the most a true peak can exceed it stays
    under the ceiling after the boost, that bound is the answer (``true_peak_db`` is then an
    upper bound), and the limit cannot apply. Only a boost that might reach the ceiling pays a
    second pass for the true peak (then both passes cost 1.4x the one true-peak pass of before)."""
    if ceiling_dbtp is None:
        return Level(*_ebur128(segment, children, "true"))
    lufs, sample_peak = _ebur128(segment, children, "sample")
    bound = sample_peak + TRUE_PEAK_OVER_SAMPLE_DB
    gain = final_gain(segment, lufs, target_lufs)
    if gain <= 0 or bound + gain <= ceiling_dbtp:
        return Level(lufs, bound)
    return Level(lufs, _ebur128(segment, children, "true")[1])


def final_gain(segment: Segment, lufs: float, target_lufs: float | None) -> float:
    """``gain_db`` plus the loudness match (none for a silent part), before any limit."""
    gain = segment.gain_db
    if target_lufs is not None and lufs > SILENCE_LUFS:
        gain += target_lufs - lufs
    return gain


def _ebur128(segment: Segment, children: Children | None, peak: str) -> tuple[float, float]:
    """One ebur128 pass: (LUFS, the ``peak`` = "true" or "sample" peak in dB). An MP3 used whole
    is decoded in this process (a third of ffmpeg's decoding CPU) and fed to ffmpeg's stdin."""
    from . import native  # native imports this module

    info = segment.info
    source = native.reader(segment, info.sample_rate, info.channels) if native.measurable(segment) else None
    if source is not None:
        inputs = native.pcm_input(info.sample_rate, info.channels)
    else:
        inputs = ["-vn", "-sn", "-dn", *segment.input_args(slack_s=0.0), "-map", "0:a:0"]
    # framelog=verbose prints the summary at info level; the per-frame log goes to verbose only.
    cmd = ffmpeg_command(*inputs, "-af", f"ebur128=framelog=verbose:metadata=0:peak={peak}", "-f", "null", "-",
                         loglevel="info")
    # stderr to a file: ffmpeg never blocks on it while this thread feeds its stdin.
    with tempfile.TemporaryFile() as err, contextlib.ExitStack() as stack:
        if source is not None:
            stack.callback(source.close)
        proc = (children or Children()).popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                              stdin=subprocess.PIPE if source else subprocess.DEVNULL)
        with contextlib.suppress(OSError):
            # Measuring only has to stay ahead of the encoder, which is the critical path: on a
            # busy machine the encoder gets the CPU first.
            os.setpriority(os.PRIO_PROCESS, proc.pid, MEASURE_NICENESS)
        if source is not None:
            try:
                native.feed(source, proc.stdin)
            except OSError:
                proc.kill()  # the decoder here failed: the checks below name the part
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    lufs, peak = _INTEGRATED.search(stderr), (_PEAK if peak == "true" else _SAMPLE_PEAK).search(stderr)
    if proc.returncode != 0 or not lufs or not peak:
        raise UnsupportedAudio(f"{info.label}: cannot be decoded to measure loudness", part=info.index)
    return _number(lufs.group(1)), _number(peak.group(1))


@contextlib.contextmanager
def measuring(segments: list[Segment], target_lufs: float | None = None,
              ceiling_dbtp: float | None = None) -> Iterator[list[Future]]:
    """Every segment's level, measured in parallel: yields the futures in segment order.

    The same span of the same source is measured once, however often it is used (a prompt
    repeated in an IVR menu, a jingle between every segment of a podcast).
    Leaving by an exception kills the measurements in flight and skips those not started,
    so a failed job does not wait for (possibly long) measurements nobody will read.
    """
    children = Children()
    spans = {_span(s) for s in segments}
    workers = max(1, min(len(spans), os.cpu_count() or 1))
    # The pool's threads are niced too: they decode MP3s for the measuring ffmpegs (engine.native).
    with ThreadPoolExecutor(max_workers=workers, initializer=nice_thread, initargs=(MEASURE_NICENESS,)) as pool:
        started: dict[tuple, Future] = {}
        levels = []
        for s in segments:
            if _span(s) not in started:
                started[_span(s)] = pool.submit(measure, s, children, target_lufs, ceiling_dbtp)
            levels.append(started[_span(s)])
        try:
            yield levels
        except BaseException:
            for f in levels:
                f.cancel()
            children.kill()
            raise


def _span(s: Segment) -> tuple:
    """What a measurement depends on: the source, the span read from it and the gain asked for."""
    return str(s.info.path), s.start_s, s.duration_s, s.cut_end, s.gain_db


def needs_level(segment: Segment, target_lufs: float | None) -> bool:
    """A part is measured when its level is matched or its gain is a boost (which may clip)."""
    return target_lufs is not None or segment.gain_db > 0


def apply_level(segment: Segment, level: Level | None, target_lufs: float | None, ceiling_dbtp: float) -> Segment:
    """The segment with its final gain: gain_db, plus the loudness match, with any boost cut
    down to what keeps its true peak at ``ceiling_dbtp`` (never below 0 dB: a part is not
    turned down because it already was loud)."""
    if level is None:
        return segment
    gain = final_gain(segment, level.lufs, target_lufs)
    if gain <= 0 or level.true_peak_db == float("-inf"):
        return segment.with_gain(gain)
    allowed = max(0.0, ceiling_dbtp - level.true_peak_db)
    if gain <= allowed:
        return segment.with_gain(gain)
    return segment.with_gain(allowed, round(gain - allowed, 2))


@contextlib.contextmanager
def leveling(segments: list[Segment], target_lufs: float | None,
             ceiling_dbtp: float) -> Iterator[Callable[[Segment], Segment]]:
    """Measures the segments that need it in parallel; yields ``level(s)``: ``s`` (one of
    ``segments``) with its final gain, once its own level is known."""
    measured = [s for s in segments if needs_level(s, target_lufs)]
    with measuring(measured, target_lufs, ceiling_dbtp) as futures:
        level_of = dict(zip(map(id, measured), futures, strict=True))

        def level(s: Segment) -> Segment:
            f = level_of.get(id(s))
            return apply_level(s, f.result() if f else None, target_lufs, ceiling_dbtp)

        yield level


def leveled(segments: list[Segment], target_lufs: float | None, ceiling_dbtp: float) -> list[Segment]:
    """Every segment with its final gain; the parts that need it are measured in parallel."""
    if not any(needs_level(s, target_lufs) for s in segments):
        return segments
    with leveling(segments, target_lufs, ceiling_dbtp) as level:
        return [level(s) for s in segments]
