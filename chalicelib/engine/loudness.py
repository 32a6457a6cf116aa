"""Part levels: integrated loudness and true peak from one decode-only ebur128 pass per part,
measured in parallel; and the gain each part gets, boosts limited so the output stays at or
under the true-peak ceiling."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import StitchError, UnsupportedAudio
from ..ffmpeg import dies_with_parent, ffmpeg_command
from .segment import Segment

SILENCE_LUFS = -70.0  # at or below: a silent part, leave its level alone
# The loudest a boosted part may come out, in dBTP. Lossy encoders overshoot the PCM they are fed
# by a few tenths of a dB, so their ceiling leaves that much room under -1 dBTP.
CEILING_DBTP = {"lossless": -1.0, "lossy": -1.5}
MEASURE_NICENESS = 10

_INTEGRATED = re.compile(r"Integrated loudness:\s*\n\s*I:\s*(-?[\d.]+|-inf) LUFS")
_PEAK = re.compile(r"True peak:\s*\n\s*Peak:\s*(-?[\d.]+|-inf) dBFS")


@dataclass(frozen=True)
class Level:
    lufs: float
    true_peak_db: float


def _number(text: str) -> float:
    return float("-inf") if text == "-inf" else float(text)


class Children:
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


def measure(segment: Segment, children: Children | None = None) -> Level:
    """Integrated loudness (LUFS) and true peak (dBTP) of a part's span; nothing is written."""
    info = segment.info
    # framelog=verbose prints the summary at info level; the per-frame log goes to verbose only.
    cmd = ffmpeg_command("-vn", "-sn", "-dn", *segment.input_args(slack_s=0.0), "-map", "0:a:0",
                         "-af", "ebur128=framelog=verbose:metadata=0:peak=true", "-f", "null", "-",
                         loglevel="info")
    proc = (children or Children()).popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, errors="replace")
    with contextlib.suppress(OSError):
        # Measuring only has to stay ahead of the encoder, which is the critical path: on a
        # busy machine the encoder gets the CPU first.
        os.setpriority(os.PRIO_PROCESS, proc.pid, MEASURE_NICENESS)
    _, stderr = proc.communicate()
    lufs, peak = _INTEGRATED.search(stderr), _PEAK.search(stderr)
    if proc.returncode != 0 or not lufs or not peak:
        raise UnsupportedAudio(f"{info.label}: cannot be decoded to measure loudness", part=info.index)
    return Level(_number(lufs.group(1)), _number(peak.group(1)))


@contextlib.contextmanager
def measuring(segments: list[Segment]) -> Iterator[list[Future]]:
    """Every segment's level, measured in parallel: yields the futures in segment order.

    Leaving by an exception kills the measurements in flight and skips those not started,
    so a failed job does not wait for (possibly long) measurements nobody will read.
    """
    children = Children()
    workers = max(1, min(len(segments), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        levels = [pool.submit(measure, s, children) for s in segments]
        try:
            yield levels
        except BaseException:
            for f in levels:
                f.cancel()
            children.kill()
            raise


def needs_level(segment: Segment, target_lufs: float | None) -> bool:
    """A part is measured when its level is matched or its gain is a boost (which may clip)."""
    return target_lufs is not None or segment.gain_db > 0


def apply_level(segment: Segment, level: Level | None, target_lufs: float | None, ceiling_dbtp: float) -> Segment:
    """The segment with its final gain: gain_db, plus the loudness match, with any boost cut
    down to what keeps its true peak at ``ceiling_dbtp`` (never below 0 dB: a part is not
    turned down because it already was loud)."""
    if level is None:
        return segment
    gain = segment.gain_db
    if target_lufs is not None and level.lufs > SILENCE_LUFS:
        gain += target_lufs - level.lufs
    if gain <= 0 or level.true_peak_db == float("-inf"):
        return segment.with_gain(gain)
    allowed = max(0.0, ceiling_dbtp - level.true_peak_db)
    if gain <= allowed:
        return segment.with_gain(gain)
    return segment.with_gain(allowed, round(gain - allowed, 2))


def leveled(segments: list[Segment], target_lufs: float | None, ceiling_dbtp: float) -> list[Segment]:
    """Every segment with its final gain; the parts that need it are measured in parallel."""
    todo = [s for s in segments if needs_level(s, target_lufs)]
    if not todo:
        return segments
    with measuring(todo) as futures:
        levels = {id(s): f.result() for s, f in zip(todo, futures, strict=True)}
    return [apply_level(s, levels.get(id(s)), target_lufs, ceiling_dbtp) for s in segments]
