"""`python -m bench.scaling`: the exact join of the M set (10 x 3 min MP3) on 1 core and on all.

For docs/deploy.md (the worker's memory): wall and CPU time of ``stitch()`` in a fresh process
pinned to N cores (``os.sched_setaffinity``), N = 1 with one LAME thread, 1 with the one ffmpeg
pass (``--single`` rows: what MP3 costs without the in-process LAME), and every usable core.
Rounds are interleaved, as in ``make bench``. Needs ``make bench`` to have generated the data.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from . import data
from .__main__ import ROOT

DATA = data.DATA / "full"

RUN = """\
import json, os, resource, sys, time
os.sched_setaffinity(0, range(int(sys.argv[1])))
from chalicelib.engine import PartInput, lame, stitch
from chalicelib.options import Options
if sys.argv[2] == "single":
    lame._loaded, lame._lib = True, None  # MP3 as one ffmpeg pass
t = time.monotonic()
stitch([PartInput(p) for p in sys.argv[4:]], sys.argv[3], Options(join="exact", bitrate="128k"))
wall = time.monotonic() - t
s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    parts = sorted(map(str, DATA.glob("M*.mp3")))
    if not parts:
        print("no M set: run `make bench` first", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    rows = [("1 core, LAME in-process", 1, "lame"), ("1 core, one ffmpeg pass", 1, "single"),
            (f"{cores} cores, LAME in-process", cores, "lame")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
    out = data.DATA / "scaling.mp3"
    for _ in range(args.rounds):
        for name, n, mode in rows:
            proc = subprocess.run([sys.executable, "-c", RUN, str(n), mode, str(out), *parts], env=env,
                                  capture_output=True, text=True, check=True)
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out.unlink(missing_ok=True)
    print("| cores | wall s (min-max) | CPU s (min-max) |\n|---|---|---|")
    for name, runs in results.items():
        w, c = [r["wall"] for r in runs], [r["cpu"] for r in runs]
        print(f"| {name} | {min(w):.1f}-{max(w):.1f} | {min(c):.1f}-{max(c):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
