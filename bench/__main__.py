"""`python -m bench` (= `make bench`): the engine against pydub, hand-written ffmpeg and `cat`.

Every measurement is a fresh subprocess reaped with wait4(), which reports its wall time and
the peak RSS of the process and every child it waited for (ffmpeg under the engine or pydub).
Prints a table with ratios against baselines measured in the same run and writes it, dated,
to docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

from . import data

ROOT = Path(__file__).resolve().parent.parent
OUT = data.DATA / "out"
DOC = ROOT / "docs" / "performance.md"

IN_PROCESS = """\
import sys, time
from chalicelib.engine import PartInput, stitch
from chalicelib.options import Options
parts = [PartInput(p) for p in sys.argv[2:]]
start = time.perf_counter()
stitch(parts, sys.argv[1], Options())
print(time.perf_counter() - start)
"""

PYDUB_NAIVE = """\
import sys
from pydub import AudioSegment
AudioSegment.converter = sys.argv[1]
# The README's one-liner; format/codec are named only because no ffprobe is installed.
sum(AudioSegment.from_file(p, format="mp3", codec="mp3") for p in sys.argv[3:]).export(sys.argv[2], format="mp3")
"""


@dataclass
class Row:
    set: str
    task: str
    tool: str
    times: list[float]
    rss_mb: float

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Measure Python as installed, with bytecode caches (this sandbox sets the opposite).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


TIME = Path("/usr/bin/time")


def run_once(cmd: list[str], stdout_path: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, largest process of the tree) of one run of ``cmd``.

    A child forked from this Python starts with this Python's pages mapped, and Linux keeps that
    high-water mark across exec: every tool would show about 15 MB. GNU time forks from a tiny
    process, so its report is the command's own peak; wait4() here is the fallback.
    """
    report = OUT / "rusage.txt"
    use_time = TIME.exists()
    full = [str(TIME), "-f", "%M", "-o", str(report), *cmd] if use_time else cmd
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=stdout, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
        err = proc.stderr.read()
        # wait4 instead of proc.wait(): it hands back the child's rusage (its children included).
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout_path:
            stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): {err.decode()[-800:]}")
    kb = int(report.read_text().split()[-1]) if use_time else usage.ru_maxrss
    return elapsed, kb / 1024


def measure(set_name: str, task: str, tool: str, cmd: list[str], out: Path, runs: int,
            stdout_path: Path | None = None, reported: bool = False) -> Row:
    """One warm-up (page cache, bytecode) then ``runs`` timed runs; the output is removed before each.

    ``reported``: the command prints its own timing (seconds) as the last line of stdout."""
    times, peak = [], 0.0
    for i in range(runs + 1):
        out.unlink(missing_ok=True)
        elapsed, rss = run_once(cmd, stdout_path)
        if reported:
            elapsed = float(stdout_path.read_text().split()[-1])
        if i:
            times.append(elapsed)
            peak = max(peak, rss)
    row = Row(set_name, task, tool, times, peak)
    print(f"  {set_name} {task:<9} {tool:<22} median {row.median:8.3f} s  peak {peak:7.1f} MB  ({runs} runs)",
          flush=True)
    return row


def engine_cmd(parts: list[Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "audio_stitch", "stitch", *map(str, parts), "-o", str(out), *extra]


def ffmpeg_copy_cmd(parts: list[Path], out: Path) -> list[str]:
    listing = OUT / f"{out.stem}.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    return [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
            "-i", str(listing), "-c", "copy", str(out)]


def ffmpeg_encode_cmd(parts: list[Path], out: Path) -> list[str]:
    """What one would write by hand: decode all, concat filter, one LAME encode."""
    inputs = [a for p in parts for a in ("-i", str(p))]
    graph = "".join(f"[{i}:a]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1[a]"
    return [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
            "-map", "[a]", "-c:a", "libmp3lame", "-b:a", "128k", str(out)]


def pydub_cmd(parts: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-c", PYDUB_NAIVE, ffmpeg_binary(), str(out), *map(str, parts)]


def run(quick: bool) -> list[Row]:
    sets = data.ensure()
    OUT.mkdir(exist_ok=True)
    rows: list[Row] = []
    fast, slow = (2, 1) if quick else (7, 3)
    for name in ("S", "M", "L"):
        parts = sets[name]
        runs = fast if name != "L" else max(1, fast - 2)
        print(f"{name}: {len(parts)} x {data.SETS[name][1]} s", flush=True)
        o = OUT / f"{name}-join.mp3"
        rows.append(measure(name, "join", "engine (copy)", engine_cmd(parts, o), o, runs))
        # What the API worker pays: stitch() in a process that has already started and imported.
        rows.append(measure(name, "join", "engine stitch() only", [sys.executable, "-c", IN_PROCESS, str(o),
                            *map(str, parts)], o, runs, stdout_path=OUT / "timing.txt", reported=True))
        rows.append(measure(name, "join", "ffmpeg -c copy", ffmpeg_copy_cmd(parts, o), o, runs))
        rows.append(measure(name, "join", "cat", ["cat", *map(str, parts)], o, runs, stdout_path=o))
        if name != "L":  # pydub would hold 3 h of PCM (~1.9 GB) twice over for L
            rows.append(measure(name, "join", "pydub naive", pydub_cmd(parts, o), o, 1 if name == "M" else runs))
            e_runs = runs if name == "S" else slow
            o = OUT / f"{name}-encode.mp3"
            rows.append(measure(name, "encode", "engine (re-encode)", engine_cmd(parts, o, "--bitrate", "128k"), o,
                                e_runs))
            rows.append(measure(name, "encode", "ffmpeg filter", ffmpeg_encode_cmd(parts, o), o, e_runs))
            rows.append(measure(name, "loudness", "engine -16 LUFS",
                                engine_cmd(parts, o, "--bitrate", "128k", "--loudness-lufs", "-16"), o, e_runs))
    return rows


def _find(rows, set_name, tool) -> Row | None:
    return next((r for r in rows if r.set == set_name and r.tool == tool), None)


def ratios(rows: list[Row]) -> dict[tuple[str, str], str]:
    """Each row's ratio against the baseline that matters for it, as text."""
    out = {}
    for r in rows:
        eng = _find(rows, r.set, "engine (copy)")
        if r.tool in ("engine (copy)", "engine stitch() only"):
            cat = _find(rows, r.set, "cat")
            out[(r.set, r.tool)] = f"{r.median / cat.median:.2f}x cat"
        elif r.tool in ("ffmpeg -c copy", "cat", "pydub naive"):
            out[(r.set, r.tool)] = f"{r.median / eng.median:.2f}x engine"
        elif r.tool == "engine (re-encode)":
            ff = _find(rows, r.set, "ffmpeg filter")
            out[(r.set, r.tool)] = f"{r.median / ff.median:.2f}x ffmpeg filter"
        elif r.tool == "ffmpeg filter":
            out[(r.set, r.tool)] = "baseline"
        elif r.tool == "engine -16 LUFS":
            plain = _find(rows, r.set, "engine (re-encode)")
            out[(r.set, r.tool)] = f"{r.median / plain.median:.2f}x re-encode"
    return out


def targets(rows: list[Row]) -> list[tuple[str, str, bool]]:
    def m(s, tool):
        r = _find(rows, s, tool)
        return r.median if r else float("nan")

    checks = []
    ratio = m("L", "engine (copy)") / m("L", "cat")
    checks.append(("join L within 2x of cat (CLI, interpreter start-up included)", f"{ratio:.2f}x", ratio <= 2.0))
    ratio = m("L", "engine stitch() only") / m("L", "cat")
    checks.append(("join L within 2x of cat (stitch() in a running process)", f"{ratio:.2f}x", ratio <= 2.0))
    speedup = m("M", "pydub naive") / m("M", "engine (copy)")
    checks.append(("join M >= 100x faster than pydub naive", f"{speedup:.0f}x", speedup >= 100))
    peak = max(r.rss_mb for r in rows if r.tool.startswith("engine"))
    checks.append(("engine peak RSS <= 64 MB (any set, any mode)", f"{peak:.1f} MB", peak <= 64))
    enc = m("M", "engine (re-encode)") / m("M", "ffmpeg filter")
    checks.append(("re-encode M no slower than hand-written ffmpeg", f"{enc:.2f}x", enc <= 1.0))
    loud = m("M", "engine -16 LUFS") / m("M", "engine (re-encode)")
    checks.append(("loudness M <= 1.3x plain re-encode", f"{loud:.2f}x", loud <= 1.3))
    return checks


def render(rows: list[Row], checks) -> str:
    rat = ratios(rows)
    lines = ["| set | task | tool | runs | median s | min s | peak RSS MB | ratio |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.set} | {r.task} | {r.tool} | {len(r.times)} | {r.median:.3f} | {min(r.times):.3f} "
                     f"| {r.rss_mb:.1f} | {rat.get((r.set, r.tool), '')} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    return "\n".join(lines)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    version = version.split(" Copyright")[0].split(" https://")[0].replace("ffmpeg version ", "ffmpeg ")
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, {version}."


def write_doc(table: str, started: datetime, seconds: float) -> None:
    sizes = ", ".join(f"{k} = {n} x {s // 60 and f'{s // 60} min' or f'{s} s'}" for k, (n, s) in data.SETS.items())
    text = f"""# Performance

Latest `make bench` (`python -m bench`), run {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min on
{_machine()} The machine was shared with other jobs, so single numbers move by tens of percent
between runs; ratios within one run are what the targets use.

Inputs (generated once into `bench/.data`, a tone over pink noise): {sizes}; MP3 128 kbps,
44.1 kHz, stereo. Every number is a fresh subprocess: wall time, and the peak RSS of the largest process in its
tree (the engine's Python or its ffmpeg; pydub's Python) as GNU time reports it from `wait4()`. One warm-up
run precedes the timed ones, so inputs are in the page cache for every tool alike.

- **engine (copy)**: `python -m audio_stitch stitch PARTS -o OUT` (the frame-level MP3 join; interpreter
  start-up included).
- **engine stitch() only**: the same join timed inside a fresh Python process around the
  `stitch()` call alone, as the API worker (a warm Lambda) pays it; peak RSS is the process's.
- **ffmpeg -c copy**: `ffmpeg -f concat -safe 0 -i list.txt -c copy OUT`.
- **cat**: `cat PARTS > OUT`, the I/O floor.
- **pydub naive**: `sum(AudioSegment.from_file(p) for p in parts).export(OUT, format="mp3")`
  (with `format`/`codec` named: there is no ffprobe). Not run on L (see below).
- **engine (re-encode)**: the same CLI with `--bitrate 128k`, which forces the ffmpeg pass.
- **ffmpeg filter**: `ffmpeg -i ... -filter_complex concat=n=N:v=0:a=1 -c:a libmp3lame -b:a 128k OUT`,
  the same output written by hand.
- **engine -16 LUFS**: the re-encode plus `--loudness-lufs -16` (a decode-only ebur128 pass per
  part, then per-part gain inside the single encode; parts stream into the encoder as their
  levels become known).

{table}

## Reading the results

- **Copy join vs `cat`.** The join itself runs at `cat` speed: each part's frames are walked in
  Python (a regex checks 32 constant-bitrate headers per call) while a thread copies the bytes in
  the kernel with `copy_file_range`, so the walk hides behind the copy; compare the
  `stitch() only` row with `cat`. The CLI row adds a fixed ~50-60 ms of interpreter start-up and
  imports (argparse, dataclasses, re, pathlib). On this machine `cat` moves the 173 MB of L in
  well under 0.1 s from the page cache, so that fixed cost alone is most of a `cat` run; where
  the 2x target is missed, it is missed by the CLI's start-up, not by the join.
- **Memory.** The copy join's peak RSS is the interpreter's (about 16 MB) whatever the input
  length: 3 MB or 173 MB of MP3 give the same number. Re-encodes peak at ffmpeg's ~40 MB.
- **pydub** decodes every part to PCM in memory, sums the segments (copying them) and exports
  through a temporary WAV: about 0.7 GB peak for M's 30 minutes, so about 4 GB for L's 3 hours;
  it is not run there.
- **Re-encode** runs the very command one would write by hand (no per-part filters when the
  parts already match the output) plus about 0.1 s of Python start-up and probing, so the two
  differ by noise: a few percent either way from one run to the next on a shared machine.
- **Loudness** measures each part (decode + `ebur128`, niced) while earlier parts are already
  being encoded; only the first part's measurement delays the encoder. Expect about 1.0-1.1x on
  an idle machine; on a loaded one the measurements compete with the encoder for CPU.
"""
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, do not write docs/performance.md")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    rows = run(args.quick)
    checks = targets(rows)
    table = render(rows, checks)
    print()
    print(table)
    if not args.quick:
        write_doc(table, started, time.perf_counter() - t0)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
