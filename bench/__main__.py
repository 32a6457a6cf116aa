"""`python -m bench` (= `make bench`): the engine against hand-written ffmpeg commands and `cat`.

Each comparison is timed in interleaved rounds (engine, baseline, engine, baseline, ...), its ratio
taken per round and quoted as median (min-max). Prints every target with met / not met, and (full
profile only) writes the result, dated, to docs/performance.md. BENCH_QUICK=1 (or --quick): fewer
rounds and a shorter L, for smoke runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

from . import data
from .measure import Ratio, Task, pair_ratio, rounds

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
MB_PER_CORE = 64

# stitch() in a fresh process: the whole process is timed, as for the ffmpeg it is compared with.
ENGINE = """\
import json, sys
from chalicelib.engine import PartInput, stitch
from chalicelib.options import Options
r = stitch([PartInput(p) for p in sys.argv[3:]], sys.argv[2], Options(**json.loads(sys.argv[1])))
print(json.dumps({"mode": r.mode, "duration_s": r.duration_s, "join": getattr(r, "join", None)}))
"""

# (rounds for P, M, L, m4a on L, the copy join); warm-up rounds only where a run is short.
ROUNDS = {"full": (5, 3, 3, 2, 10), "quick": (2, 2, 1, 1, 3), "tiny": (1, 1, 1, 1, 2)}


@dataclass
class Target:
    job: str
    limit: str
    measured: str
    met: bool | None  # None: not measured (not implemented / single-pass)


def baseline_binary() -> tuple[str, str]:
    """The ffmpeg for the hand-written baselines: a system one if installed, else the wheel's."""
    system = shutil.which("ffmpeg")
    if system:
        return system, "system"
    return ffmpeg_binary(), "imageio-ffmpeg wheel"


def _version(binary: str) -> str:
    line = subprocess.run([binary, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return line.split(" Copyright")[0].split(" https://")[0].replace("ffmpeg version ", "ffmpeg ")


def _env(ffmpeg: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FFMPEG_BINARY": ffmpeg}
    # Measure Python as installed, with bytecode caches (this sandbox sets the opposite).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Engine:
    """What the engine on this checkout can do, found out once (features land concurrently)."""

    def __init__(self):
        from chalicelib.options import Options

        self.fields = set(Options.field_names())
        self.has_join = "join" in self.fields
        self.parallel_formats = self._parallel_formats()
        self.cli = self._cli()
        self.cli_join = self.has_join and "--join" in subprocess.run(
            [*self.cli, "--help"], capture_output=True, text=True, env=_env(ffmpeg_binary()), cwd=ROOT).stdout

    @staticmethod
    def _cli() -> list[str]:
        """The installed `audio-stitch` command if there is one, else the package that holds the CLI."""
        console = Path(sys.executable).parent / "audio-stitch"
        if console.exists():
            return [str(console), "stitch"]
        package = "audio_stitch" if (ROOT / "audio_stitch" / "__main__.py").exists() else "chalicelib"
        return [sys.executable, "-m", package, "stitch"]

    @staticmethod
    def _parallel_formats() -> set[str]:
        """Formats the engine encodes in parallel chunks, as the engine itself declares them."""
        try:
            from chalicelib.engine import parallel
        except ImportError:
            return set()
        declared = getattr(parallel, "parallel_formats", None)
        return set(declared()) if callable(declared) else set()

    def exact(self, **opts) -> dict:
        """Options for an exact join: ``join=exact`` where the engine has it; before that, a re-encode
        (``bitrate`` given), which was the only exact path."""
        return {**opts, "join": "exact"} if self.has_join else opts

    def stitch_cmd(self, parts: list[Path], out: Path, opts: dict) -> list[str]:
        return [sys.executable, "-c", ENGINE, json.dumps(opts), str(out), *map(str, parts)]

    def cli_cmd(self, parts: list[Path], out: Path, *flags: str) -> list[str]:
        return [*self.cli, *map(str, parts), "-o", str(out), *flags]


def copy_join_tasks(engine: Engine, parts: list[Path], out_dir: Path, env: dict) -> list[Task]:
    """The copy-join row's two commands: the CLI (``--join copy`` where it has the flag) and cat."""
    e_out, c_out = out_dir / "L-copy.mp3", out_dir / "L-cat.mp3"
    flags = ["--join", "copy"] if engine.cli_join else []
    return [Task("engine CLI copy join", engine.cli_cmd(parts, e_out, *flags), e_out, env),
            Task("cat", ["cat", *map(str, parts)], c_out, env, stdout_to=True)]


def ffmpeg_concat_cmd(binary: str, parts: list[Path], out: Path, codec: list[str]) -> list[str]:
    """What one writes by hand: every part an input, the concat filter, one encoder."""
    inputs = [a for p in parts for a in ("-i", str(p))]
    graph = "".join(f"[{i}:a]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1[a]"
    return [binary, "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
            "-map", "[a]", *codec, str(out)]


MP3_128 = ["-c:a", "libmp3lame", "-b:a", "128k"]
M4A_128 = ["-c:a", "aac", "-b:a", "128k", "-f", "ipod"]


def decoded_samples(path: Path) -> int:
    from tests.audio import ffmpeg_frames

    return ffmpeg_frames(path)


def _exactness(path: Path, expected: int) -> str:
    got = decoded_samples(path)
    return "exact" if got == expected else f"NOT exact: {got - expected:+d} samples"


def _mode(task: Task) -> str:
    try:
        r = json.loads(task.runs[-1].stdout)
    except (ValueError, IndexError):
        return "?"
    return r.get("join") or r.get("mode") or "?"


def run(profile: str, data_root: Path, log=print) -> tuple[list[Target], list[Task], dict]:
    sets = data.ensure(profile, data_root)
    out_dir = data_root / profile / "out"
    out_dir.mkdir(exist_ok=True)
    binary, origin = baseline_binary()
    env = _env(binary)
    engine = Engine()
    cores = len(os.sched_getaffinity(0))
    n_p, n_m, n_l, n_l4, n_copy = ROUNDS[profile]
    info = {"binary": binary, "origin": origin, "version": _version(binary), "cores": cores,
            "join": engine.has_join, "parallel": sorted(engine.parallel_formats), "cli": " ".join(["python", *engine.cli[1:]] if engine.cli[0] == sys.executable else engine.cli)}
    info["load_before"] = os.getloadavg()[0]
    log(f"ffmpeg for baselines and engine: {binary} ({origin}, {info['version']}); {cores} usable cores; "
        f"load average {info['load_before']:.1f}")
    log(f"engine: join option {'yes' if engine.has_join else 'not on this checkout'}; parallel formats: "
        f"{', '.join(info['parallel']) or 'none'}; CLI: {' '.join(engine.cli)}")
    targets: list[Target] = []
    tasks: list[Task] = []

    def group(title: str, members: list[Task], count: int, warmup: bool) -> list[Task]:
        log(f"{title}")
        rounds(members, count, ROOT, warmup=warmup, log=log)
        tasks.extend(members)
        return members

    def cmp(job: str, a: Task, b: Task, limit: float, note: str = "") -> Ratio:
        r = pair_ratio(a, b)
        targets.append(Target(job, f"<= {limit}x", f"{r}{note}", r.median <= limit))
        return r

    # 1. Exact join of 100 one-second prompts.
    p = sets["P"]
    e_out, f_out = out_dir / "P-engine.mp3", out_dir / "P-ffmpeg.mp3"
    how = "join=exact" if engine.has_join else "re-encode (no join option)"
    eng, ff = group(f"P: exact join of {len(p)} x 1 s", [
        Task(f"engine exact ({how})", engine.stitch_cmd(p, e_out, engine.exact(bitrate="128k")), e_out, env),
        Task("ffmpeg concat filter", ffmpeg_concat_cmd(binary, p, f_out, MP3_128), f_out, env)], n_p, True)
    expected = data.gapless_samples(profile, "P")
    cmp(f"exact join of {len(p)} x 1 s MP3 prompts vs ffmpeg concat filter + libmp3lame", eng, ff, 0.7,
        f"; engine output {_exactness(e_out, expected)} ({_mode(eng)}), ffmpeg's {_exactness(f_out, expected)}")

    # 2. Exact re-encode of M (with loudness matching in the same rounds) and L, to MP3 128k.
    m, lp = sets["M"], sets["L"]
    e_out, f_out, l_out = out_dir / "M-engine.mp3", out_dir / "M-ffmpeg.mp3", out_dir / "M-loud.mp3"
    eng, ff, loud = group(f"M: {len(m)} x {data.PROFILES[profile]['M'][1]} s to MP3 128k", [
        Task("engine exact", engine.stitch_cmd(m, e_out, engine.exact(bitrate="128k")), e_out, env),
        Task("ffmpeg concat filter", ffmpeg_concat_cmd(binary, m, f_out, MP3_128), f_out, env),
        Task("engine exact -16 LUFS", engine.stitch_cmd(m, l_out, engine.exact(bitrate="128k", loudness_lufs=-16)),
             l_out, env)], n_m, False)
    cmp("exact re-encode of M to MP3 128k vs the hand-written command", eng, ff, 0.6,
        f"; engine output {_exactness(e_out, data.gapless_samples(profile, 'M'))}")
    cmp("loudness matching (-16 LUFS) on M vs a plain exact re-encode", loud, eng, 1.1)
    e_out, f_out = out_dir / "L-engine.mp3", out_dir / "L-ffmpeg.mp3"
    eng, ff = group(f"L: {len(lp)} x {data.PROFILES[profile]['L'][1]} s to MP3 128k", [
        Task("engine exact", engine.stitch_cmd(lp, e_out, engine.exact(bitrate="128k")), e_out, env),
        Task("ffmpeg concat filter", ffmpeg_concat_cmd(binary, lp, f_out, MP3_128), f_out, env)], n_l, False)
    cmp("exact re-encode of L to MP3 128k vs the hand-written command", eng, ff, 0.6)

    # 3. The same to m4a, where the engine chunks AAC.
    if "m4a" in engine.parallel_formats:
        for name, parts, count in (("M", m, n_m), ("L", lp, n_l4)):
            e_out, f_out = out_dir / f"{name}-engine.m4a", out_dir / f"{name}-ffmpeg.m4a"
            eng, ff = group(f"{name} to m4a 128k", [
                Task("engine exact m4a", engine.stitch_cmd(parts, e_out, engine.exact(format="m4a", bitrate="128k")),
                     e_out, env),
                Task("ffmpeg concat filter aac", ffmpeg_concat_cmd(binary, parts, f_out, M4A_128), f_out, env)],
                count, False)
            cmp(f"exact re-encode of {name} to m4a 128k vs the hand-written command", eng, ff, 0.6)
    else:
        for name in ("M", "L"):
            targets.append(Target(f"exact re-encode of {name} to m4a 128k vs the hand-written command", "<= 0.6x",
                                  "single-pass (the engine does not chunk AAC): not run", None))

    # 4. Copy join of L against cat, whole process.
    eng, cat = group("L: copy join vs cat", copy_join_tasks(engine, lp, out_dir, env), n_copy, True)
    cmp("copy join of L vs `cat` (CLI, whole process)", eng, cat, 1.3, f"; engine mode {_mode(eng)}")

    # 5. Peak RSS of the whole process tree, over every engine run above.
    engine_tasks = [t for t in tasks if t.name.startswith("engine")]
    worst = max(engine_tasks, key=lambda t: t.peak_mb)
    limit = MB_PER_CORE * cores
    rss = max(engine_tasks, key=lambda t: t.peak_rss_mb)
    targets.append(Target("peak memory of the engine's whole process tree (PSS), any length", f"<= {limit} MB "
                          f"({MB_PER_CORE} MB x {cores} cores)", f"{worst.peak_mb:.1f} MB ({worst.name}); RSS "
                          f"summed over the processes, an upper bound: {rss.peak_rss_mb:.1f} MB ({rss.name})",
                          worst.peak_mb <= limit))
    info["load_after"] = os.getloadavg()[0]
    return targets, tasks, info


def render(targets: list[Target], tasks: list[Task]) -> str:
    lines = ["| job | target | measured: ratio median (min-max) | met |", "|---|---|---|---|"]
    for t in targets:
        met = "n/a" if t.met is None else "met" if t.met else "NOT met"
        lines.append(f"| {t.job} | {t.limit} | {t.measured} | {met} |")
    lines += ["", "| tool | runs | median s | min s | max s | median CPU s | tree peak PSS MB | tree peak RSS sum MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in tasks:
        times = sorted(t.times)
        lines.append(f"| {t.name} [{t.out.stem}] | {len(times)} | {times[len(times) // 2]:.3f} | {times[0]:.3f} "
                     f"| {times[-1]:.3f} | {t.cpu_median:.2f} | {t.peak_mb:.1f} | {t.peak_rss_mb:.1f} |")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _shown(path: str) -> str:
    """``path`` relative to the checkout when it is inside it (no machine's home in the doc)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def write_doc(table: str, info: dict, started: datetime, seconds: float) -> None:
    sizes = ", ".join(f"{k} = {n} x {s // 60 and f'{s // 60} min' or f'{s} s'}"
                      for k, (n, s) in data.PROFILES["full"].items())
    text = f"""# Performance

Latest `make bench` (`python -m bench`), run {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min on
{info['cores']} usable cores ({_cpu()}), Linux {platform.release()}, Python {platform.python_version()};
1-minute load average {info['load_before']:.1f} at the start, {info['load_after']:.1f} at the end (a
load above the core count means other work shared the cores). Baselines and engine both ran
{info['version']} ({info['origin']}: `{_shown(info['binary'])}`). Engine features on that
checkout: join option {'yes' if info['join'] else 'no'}; parallel formats:
{', '.join(info['parallel']) or 'none'}.

## Method

- **Interleaved rounds.** The commands of one comparison run in turn (engine, baseline, engine,
  baseline, ...), so a change in machine load hits both sides of a round alike. The ratio is taken
  per round and quoted as median (min-max over rounds). Short jobs get one untimed warm-up round;
  every input is in the page cache before a timed run.
- **Whole processes.** Every run is a fresh subprocess and its wall time includes interpreter
  start-up: the engine runs `stitch()` in a new Python (or, for the copy join, the CLI), the
  baselines run ffmpeg or `cat`.
- **The same ffmpeg.** The baselines use a system ffmpeg when one is installed (`shutil.which`),
  else the imageio-ffmpeg wheel's; the engine is given the same binary (`FFMPEG_BINARY`), so a ratio
  compares methods, not builds.
- **Peak memory of the process tree**: the process and all its descendants are sampled from
  /proc and their PSS summed (each shared page divided among the processes that map it: what the
  tree holds); the peak of that sum is the target's measure. The RSS sum is reported beside it as
  an upper bound: it counts shared pages once per process, including a Python forked to start an
  ffmpeg (a copy of the parent, resident until exec) and the static ffmpeg's text in every
  ffmpeg. (`ru_maxrss` would give the largest single process instead, which hides parallel
  encoders.) The sampler takes CPU from a run that fills every core (a 10 ms sampler slowed the
  exact re-encode of M by up to 20 %), so short jobs are sampled every 10 ms in their untimed
  warm-up run only, and long jobs, whose peaks last seconds, every 100 ms in the timed runs; a
  peak shorter than the interval can be missed.
- **Exactness.** The exact-join and M outputs are decoded with ffmpeg and their sample counts
  compared with the sum of the parts' gapless lengths (each part of P and M is exactly its length
  in seconds x 44100; L's parts are copy joins of M's, so they have no known gapless length).

Inputs (generated once into `bench/.data/full`, a tone over pink noise, MP3 128 kbps, 44.1 kHz,
stereo, LAME-tagged): {sizes}.

- **exact join**: `stitch(parts, out, Options(join="exact", bitrate="128k"))` (before the join option
  existed: the re-encode that `bitrate` forces) against
  `ffmpeg -i p1 ... -i p100 -filter_complex concat=n=100:v=0:a=1 -c:a libmp3lame -b:a 128k`.
- **exact re-encode**: the same for M and L, and with `-c:a aac -b:a 128k -f ipod` for m4a (only
  where the engine chunks AAC; otherwise it is single-pass, the same command, and not run).
- **loudness**: the exact re-encode of M plus `loudness_lufs=-16`, against the plain one.
- **copy join**: the CLI, `{info['cli']} L... -o out` (`--join copy` where it has that flag),
  against `cat L... > out`.

{table}

## Reading the results

- Single numbers depend on what else the machine runs; the per-round ratios are what the targets
  use, and the min-max spread shows how far one round can be trusted.
- A parallel encode can only be faster than the single-pass baseline when cores are free: on a
  machine whose cores are busy with other work (load at or above the core count), the chunk
  encoders compete with each other and with the baseline's single encoder, and the ratio tends to
  1x or above. Judge the parallel targets on a quiet machine.
- The copy-join row includes the CLI's start-up, a fixed cost that `cat` does not pay: the
  interpreter with the venv's site-packages 0.025 s (the editable install's finder imports
  pathlib and re, which the CLI needs anyway: 0.003 s net), the CLI's own imports 0.009 s (no
  argparse for `PART... -o OUT --join copy`, no dataclasses: chalicelib/records.py). Reading and
  writing the 173 MB cost about what `cat` pays (less with the preallocated output), the frame
  walk 0.02-0.03 s. The CLI takes 0.16-0.17 s of CPU for L against `cat`'s 0.09 s, but its copy
  runs on two threads: the wall-time target needs the second core free. On a loaded machine the
  wall-time ratio tends to the CPU-time ratio (about 1.8x). `python -m bench.copy_pair` runs this
  row alone.
- The median CPU column is the work a command does (user + system time of every process it ran).
  On 2 cores a run can take no less than half its CPU time, so a ratio target below 0.5 x (the
  engine's CPU / the baseline's wall) is out of reach whatever the engine overlaps. Where the
  exact path's CPU goes (measured 2026-12-02 on M, 30 min of MP3): LAME 12.8 s (in this process,
  one thread per core: `engine/lame.py`), the decoder 4.4 s (one ffmpeg; its threaded pipeline
  spends 1.9 s of that in the kernel, about 150,000 context switches), our Python about 0.9 s (the
  chunk reader and the frame assembler, about 10 us a frame): 17-18 s against the one ffmpeg
  command's 18.5-19.7 s. The exact re-encodes are therefore CPU-bound at about 0.55-0.6 x on an
  idle machine; the P row's 100 one-second parts add a serial start (Python, then the decoder
  opening 100 inputs: about 0.16 s before both cores are busy) to about 1.3 s of CPU, against
  1.2 s for ffmpeg's own command.
- Loudness matching (`loudness_lufs`) measures every part before its gain is known: one extra
  decode-only ebur128 pass per part, 0.8 s of CPU per 3 min of MP3 (0.44 s of decoding, 0.36 s of
  ebur128 with the sample peak) against 1.75 s per 3 min for the whole exact re-encode, so about
  +40 % of CPU and about 1.3 x the wall time when the encode already fills the cores. 1.1 x would
  need the measurement under 0.2 s per 3 min: less than decoding the MP3 costs.
- The tree peak counts the engine's Python (its chunk buffers: one chunk more than the encoders,
  or up to 16 MB of PCM read ahead where that is more: about 20 MB for 20 s chunks on 2 cores)
  plus every ffmpeg it runs at the same moment (the decoder, loudness measurements), so it grows
  with the number of cores used.

`BENCH_QUICK=1 make bench` runs fewer rounds on shorter sets (M = 5 x 1 min, L = 3 x 5 min) and
writes nothing here; `python -m bench --profile tiny` is the smoke test's size.
"""
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="fewer rounds and a shorter L (also BENCH_QUICK=1); writes nothing to docs/")
    parser.add_argument("--profile", choices=sorted(data.PROFILES), help="input sizes (default: full, or quick)")
    parser.add_argument("--data", type=Path, default=data.DATA, help="where inputs are generated (bench/.data)")
    args = parser.parse_args(argv)
    profile = args.profile or ("quick" if args.quick else "full")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    targets, tasks, info = run(profile, args.data)
    table = render(targets, tasks)
    print()
    print(table)
    if profile == "full":
        write_doc(table, info, started, time.perf_counter() - t0)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
