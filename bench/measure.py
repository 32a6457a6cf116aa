"""Timing in interleaved rounds, and the peak memory of a whole process tree.

Every run is a fresh subprocess. Its wall time is measured around Popen..wait, and its CPU time
(user + system of it and every descendant) from getrusage(RUSAGE_CHILDREN) around it. Memory is
sampled from /proc while a run goes on: the process and every descendant (found through
/proc/PID/task/TID/children, or psutil where /proc has no such file), two sums per sample:

- **PSS** (/proc/PID/smaps_rollup): each shared page divided among the processes that map it,
  so the sum is what the tree holds. This is the memory target's measure.
- **RSS** (/proc/PID/statm): every process's resident set in full, an upper bound. It counts the
  pages a fork shares with its parent twice (a Python that starts ffmpeg with a preexec_fn forks
  a copy of itself, resident until exec) and the static ffmpeg's text once per process.

The sampler costs CPU, which a run that fills every core feels (a 10 ms sampler slowed the
engine's exact re-encode of M by up to 20 %): a group with a warm-up round samples every 10 ms in
the untimed warm-up only; a group without one (long jobs, whose peaks last seconds) samples every
100 ms in its timed runs. ``ru_maxrss`` from wait4() would give the largest single process only,
which under-counts a tree of parallel encoders: it is not used.
"""
from __future__ import annotations

import functools
import os
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL_S = 0.01  # warm-up runs
LONG_INTERVAL_S = 0.1  # timed runs of groups without a warm-up


@functools.cache  # asked at every sample
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


def _pss_proc(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return _rss_proc(pid)  # no smaps_rollup (kernel < 4.14), or it exited: its RSS, or 0


def _tree(pid: int) -> list[int]:
    """``pid`` and every descendant, through /proc."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children_proc(p)
    return pids


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes of ``pid`` and all its descendants, now."""
    if not _proc_children_supported():
        return (tree_rss(pid),) * 2
    pids = _tree(pid)
    return sum(map(_pss_proc, pids)), sum(map(_rss_proc, pids))


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants, now (the RSS sum)."""
    if _proc_children_supported():
        return sum(map(_rss_proc, _tree(pid)))
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
    peak_mb: float  # peak of the summed PSS of the process tree (0: not sampled)
    stdout: str
    cpu_s: float = 0.0  # user + system time of the process and every descendant it waited for
    peak_rss_mb: float = 0.0  # peak of the summed RSS (an upper bound)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(cmd: list[str], env: dict, cwd: Path, stdout_path: Path | None = None,
             interval: float | None = INTERVAL_S) -> Run:
    """Run ``cmd`` once, sampling its tree's memory every ``interval`` s (None: not at all);
    raise with its stderr if it fails."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    peak = peak_rss = 0
    cpu_before = _children_cpu()  # runs are one at a time: the difference is this run's tree
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_rss
            while not done.is_set():
                pss, rss = tree_memory(proc.pid)
                peak, peak_rss = max(peak, pss), max(peak_rss, rss)
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        if interval is not None:
            sampler.start()
        stdout, stderr = proc.communicate()
        elapsed = time.perf_counter() - start
        done.set()
        if interval is not None:
            sampler.join()
    finally:
        if stdout_path:
            out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))}... failed ({proc.returncode}): "
                           f"{stderr.decode(errors='replace')[-800:]}")
    return Run(elapsed, peak / 2**20, (stdout or b"").decode(errors="replace"), _children_cpu() - cpu_before,
               peak_rss / 2**20)


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

    warmups: list[Run] = field(default_factory=list)

    @property
    def peak_mb(self) -> float:
        """The peak tree PSS over every sampled run (warm-up included)."""
        return max((r.peak_mb for r in self.runs + self.warmups), default=0.0)

    @property
    def peak_rss_mb(self) -> float:
        return max((r.peak_rss_mb for r in self.runs + self.warmups), default=0.0)


def rounds(tasks: list[Task], count: int, cwd: Path, warmup: bool = True, log=print) -> list[Task]:
    """Run the tasks in turn, A B C A B C ..., ``count`` times (plus one untimed warm-up round), so
    that a change in machine load hits every task of a round alike."""
    for i in range(count + (1 if warmup else 0)):
        timed = i >= (1 if warmup else 0)
        # Memory is sampled in the warm-up round, or (no warm-up) slowly in the timed ones.
        interval = None if timed and warmup else INTERVAL_S if not timed else LONG_INTERVAL_S
        for t in tasks:
            t.out.unlink(missing_ok=True)
            run = run_once(t.cmd, t.env, cwd, t.out if t.stdout_to else None, interval)
            (t.runs if timed else t.warmups).append(run)
            memory = f"tree peak PSS {run.peak_mb:6.1f} MB, RSS {run.peak_rss_mb:6.1f} MB" if interval else ""
            log(f"    {'' if timed else '(warm-up) '}{t.name:<34} {run.seconds:8.3f} s  CPU {run.cpu_s:7.2f} s  {memory}")
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
