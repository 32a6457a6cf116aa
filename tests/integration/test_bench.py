"""The benchmark's measuring tools, and a smoke run of `python -m bench` on tiny inputs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import Run, Task, pair_ratio, rounds, run_once

ROOT = Path(__file__).resolve().parents[2]

# A parent holding ~40 MB that starts a child holding ~60 MB; both stay alive for a moment.
TREE = """\
import subprocess, sys, time
held = bytearray(40 * 2**20)
for i in range(0, len(held), 4096): held[i] = 1
child = subprocess.Popen([sys.executable, "-c",
    "import time\\nb = bytearray(60 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\ntime.sleep(0.6)"])
child.wait()
"""


def test_tree_peak_sums_the_processes_of_the_tree():
    run = run_once([sys.executable, "-c", TREE], env=None, cwd=ROOT)
    # One process alone peaks at ~70 MB (60 MB + an interpreter): only the sum passes 100.
    assert run.peak_mb >= 100 and run.peak_rss_mb >= run.peak_mb  # PSS splits what RSS counts twice


# A parent holding ~80 MB that forks (as subprocess does with a preexec_fn) a child that holds
# nothing of its own for a moment before it exits: RSS counts the parent's pages twice, PSS once.
FORK = """import os, time
held = bytearray(80 * 2**20)
for i in range(0, len(held), 4096): held[i] = 1
pid = os.fork()
if pid == 0:
    time.sleep(0.5)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_fork_is_counted_once_in_pss_twice_in_rss():
    run = run_once([sys.executable, "-c", FORK], env=None, cwd=ROOT)
    assert run.peak_rss_mb >= 160
    assert 80 <= run.peak_mb < 120


def test_no_sampling_when_asked_not_to():
    run = run_once([sys.executable, "-c", "pass"], env=None, cwd=ROOT, interval=None)
    assert run.peak_mb == run.peak_rss_mb == 0.0 and run.cpu_s > 0


def _task(name: str, times: list[float]) -> Task:
    t = Task(name, [], Path("/nonexistent"), {})
    t.runs = [Run(s, 0.0, "") for s in times]
    return t


def test_ratio_is_taken_per_pair_then_summarised():
    r = pair_ratio(_task("a", [2.0, 4.0, 9.0]), _task("b", [1.0, 4.0, 3.0]))
    assert (r.median, r.low, r.high, r.pairs) == (2.0, 1.0, 3.0, 3)  # not 4/3, the ratio of medians


def test_rounds_interleave_and_warm_up(tmp_path):
    log = tmp_path / "order"
    tasks = [Task(n, ["sh", "-c", f"echo {n} >> {log}"], tmp_path / f"{n}.out", None) for n in "AB"]
    rounds(tasks, 2, tmp_path, warmup=True, log=lambda *_: None)
    assert log.read_text().split() == ["A", "B"] * 3
    assert [len(t.runs) for t in tasks] == [2, 2]


@pytest.mark.timeout(180)
def test_bench_smoke_on_tiny_inputs(tmp_path):
    doc = ROOT / "docs" / "performance.md"
    before = doc.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "bench", "--profile", "tiny", "--data", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ffmpeg for baselines and engine:" in proc.stdout
    table = proc.stdout.split("| job |", 1)[1]
    for job in ("exact join of 10 x 1 s", "exact re-encode of M to MP3", "loudness matching",
                "exact re-encode of L to MP3", "exact re-encode of M to m4a", "copy join of L", "peak memory of the engine"):
        row = next((r for r in table.splitlines() if job in r), None)
        assert row is not None, f"no row for {job!r}"
        assert row.rstrip().endswith(("| met |", "| NOT met |", "| n/a |")), row
    # The exact rows check what they claim: the outputs decode to the parts' summed lengths.
    assert "engine output exact" in table
    assert doc.stat().st_mtime_ns == before  # only the full profile writes docs/performance.md


@pytest.mark.timeout(120)
def test_copy_pair_runs_the_copy_join_row_alone(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "bench.copy_pair", "--profile", "tiny", "--rounds", "2",
                           "--data", str(tmp_path / "data"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wall ratio " in proc.stdout and "(target <= 1.3x)" in proc.stdout and ", 2 pairs)" in proc.stdout
    # Both sides wrote the parts' audio: the CLI without the parts' tags and tag frames, plus its own.
    copied, catted = (out / "L-copy.mp3").stat().st_size, (out / "L-cat.mp3").stat().st_size
    assert 0 < catted - copied < 4096
