"""Timing in interleaved rounds, and the peak RSS of a whole process tree.

Every run is a fresh subprocess. Its wall time is measured around Popen..wait. While it runs, a
thread samples its process tree (the process and every descendant, found through
/proc/PID/task/TID/children, or psutil where /proc has no such file) every 10 ms and sums their
resident sets: the peak of that sum is the tree's peak RSS. Shared pages (libc, the Python
binary) count once per process, so the sum is an upper bound on what the tree really holds; a
peak shorter than 10 ms can be missed. ``ru_maxrss`` from wait4() would instead give the largest
single process, which under-counts a tree of parallel encoders: it is not used.
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL_S = 0.01


def _proc_children_supported() -> bool:
    return Path(f"/proc/self/task/{os.getpid()}/children").exists()


def _children_proc(pid: int) -> list[int]:
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _rss_proc(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # it exited between listing and reading


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants, now."""
    if _proc_children_supported():
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            total += _rss_proc(p)
            todo += _children_proc(p)
        return total
    import psutil  # only where /proc cannot list children

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


@dataclass
class Run:
    seconds: float
    peak_mb: float  # peak of the summed RSS of the process tree
    stdout: str
    cpu_s: float = 0.0  # user + system time of the process and every descendant it waited for


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(cmd: list[str], env: dict, cwd: Path, stdout_path: Path | None = None) -> Run:
    """Run ``cmd`` once; raise with its stderr if it fails."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    peak = 0
    cpu_before = _children_cpu()  # runs are one at a time: the difference is this run's tree
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss(proc.pid))
                done.wait(INTERVAL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
    finally:
        if stdout_path:
            out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))}... failed ({proc.returncode}): "
                           f"{stderr.decode(errors='replace')[-800:]}")
    return Run(elapsed, peak / 2**20, (stdout or b"").decode(errors="replace"), _children_cpu() - cpu_before)


@dataclass
class Task:
    """One command of a round. ``out`` is removed before every run; ``stdout_to`` captures stdout in it."""
    name: str
    cmd: list[str]
    out: Path
    env: dict
    stdout_to: bool = False
    runs: list[Run] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def cpu_median(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs) if self.runs else 0.0

    @property
    def peak_mb(self) -> float:
        return max((r.peak_mb for r in self.runs), default=0.0)


def rounds(tasks: list[Task], count: int, cwd: Path, warmup: bool = True, log=print) -> list[Task]:
    """Run the tasks in turn, A B C A B C ..., ``count`` times (plus one untimed warm-up round), so
    that a change in machine load hits every task of a round alike."""
    for i in range(count + (1 if warmup else 0)):
        timed = i >= (1 if warmup else 0)
        for t in tasks:
            t.out.unlink(missing_ok=True)
            run = run_once(t.cmd, t.env, cwd, t.out if t.stdout_to else None)
            if timed:
                t.runs.append(run)
            log(f"    {'' if timed else '(warm-up) '}{t.name:<34} {run.seconds:8.3f} s  CPU {run.cpu_s:7.2f} s  "
                f"tree peak {run.peak_mb:6.1f} MB")
    return tasks


@dataclass(frozen=True)
class Ratio:
    median: float
    low: float
    high: float
    pairs: int

    def __str__(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}, {self.pairs} pairs)"


def pair_ratio(a: Task, b: Task) -> Ratio:
    """a/b for each round (the pair timed side by side), summarised as median, min and max."""
    per_pair = [x / y for x, y in zip(a.times, b.times, strict=True)]
    return Ratio(statistics.median(per_pair), min(per_pair), max(per_pair), len(per_pair))
