"""`python -m bench.parallel_probe`: chunked parallel MP3 encode against one ffmpeg, in interleaved pairs.

Times ``engine.parallel.encode_pcm`` on N minutes of generated PCM against the hand-written
single command (``ffmpeg -f f32le -i pipe: -c:a libmp3lame -b:a 128k``, same binary, same PCM on
stdin), A B A B ..., and prints the ratio per pair (median, min, max) and the peak RSS of each
tool's whole process tree, sampled from /proc every 20 ms.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

RATE = 44100
PARALLEL = """\
import sys
from chalicelib.engine.parallel import encode_pcm
r = encode_pcm(sys.stdin.buffer, sys.argv[1], fmt="mp3", rate=44100, channels=2, bitrate="128k",
               total_samples=int(sys.argv[2]))
print(r, file=sys.stderr)
"""


def write_pcm(path: Path, minutes: float) -> int:
    """Music-like stereo PCM: a few enveloped tones, gated bursts and a little noise. 20 s are
    generated (pure Python is slow) and repeated; the encoders do not know."""
    rng = random.Random(7)
    tones = [(rng.uniform(80, 4000), rng.uniform(0.5, 3.0)) for _ in range(6)]
    buf = array("f")
    for i in range(20 * RATE):
        t = i / RATE
        v = sum(0.1 * math.sin(2 * math.pi * fr * t) * (0.6 + 0.4 * math.sin(2 * math.pi * am * t))
                for fr, am in tones)
        v += (rng.random() - 0.5) * (0.1 if (i // 4410) % 7 == 0 else 0.01)
        buf.append(v)
        buf.append(v * 0.8)
    block = buf.tobytes()
    n = int(minutes * 60 * RATE)
    with open(path, "wb") as f:
        left = n * 8
        while left > 0:
            f.write(block[:left])
            left -= len(block)
    return n


def tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) of ``root`` and all its descendants, now."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def timed(cmd: list[str], stdin_path: Path) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system, the process and every child it waited for) and peak
    process-tree RSS of one run."""
    with open(stdin_path, "rb") as stdin, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        if proc.returncode:
            err.seek(0)
            sys.exit(f"{cmd[0]} failed: {err.read().decode(errors='replace')[-500:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="parallel-probe-") as d:
        d = Path(d)
        pcm = d / "in.f32"
        samples = write_pcm(pcm, args.minutes)
        ours = [sys.executable, "-c", PARALLEL, str(d / "a.mp3"), str(samples)]
        single = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(RATE),
                  "-ch_layout", "stereo", "-i", "pipe:", "-c:a", "libmp3lame", "-b:a", "128k", str(d / "b.mp3")]
        ratios, cpu_ratios, rss_a, rss_b = [], [], [], []
        cores = len(os.sched_getaffinity(0))
        for i in range(args.pairs):
            ta, ca, ra = timed(ours, pcm)
            tb, cb, rb = timed(single, pcm)
            ratios.append(ta / tb)
            cpu_ratios.append(ca / cb)
            rss_a.append(ra)
            rss_b.append(rb)
            print(f"pair {i + 1}: encode_pcm {ta:.2f} s ({ca:.2f} CPU s), ffmpeg {tb:.2f} s ({cb:.2f} CPU s), "
                  f"ratio {ta / tb:.2f}, load {os.getloadavg()[0]:.2f}", flush=True)
        print(f"{args.minutes:g} min stereo 44.1 kHz to MP3 128k, {cores} usable cores, load {os.getloadavg()[0]:.2f}")
        print(f"ratio median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
        # On idle cores the wall time cannot beat CPU / cores: this bound does not depend on load.
        cpu = statistics.median(cpu_ratios)
        print(f"CPU-time ratio median {cpu:.2f}: on {cores} idle cores the wall ratio would be >= {cpu / cores:.2f}")
        print(f"peak RSS of the process tree: encode_pcm {max(rss_a) / 2**20:.0f} MB "
              f"({max(rss_a) / 2**20 / cores:.0f} MB per core), ffmpeg {max(rss_b) / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
