"""`python -m bench.copy_pair`: only the copy-join row of `make bench` (L through the CLI against
`cat L... > out`), the same two commands in interleaved rounds, with CPU time (user+sys) per side.

A check of that one target in seconds instead of the full bench's minutes; writes nothing to docs/.
``--out`` keeps the outputs away from the data directory (e.g. when the data is another checkout's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from . import data
from .__main__ import ROOT, Engine, _env, baseline_binary, copy_join_tasks
from .measure import pair_ratio, rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_pair", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (after one warm-up round)")
    parser.add_argument("--profile", choices=sorted(data.PROFILES), default="full", help="input sizes")
    parser.add_argument("--data", type=Path, default=data.DATA, help="where the inputs are (generated if missing)")
    parser.add_argument("--out", type=Path, help="where the outputs go (default: next to the inputs)")
    args = parser.parse_args(argv)
    parts = data.ensure(args.profile, args.data)["L"]
    out_dir = args.out or args.data / args.profile / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = copy_join_tasks(Engine(), parts, out_dir, _env(baseline_binary()[0]))
    rounds(tasks, args.rounds, ROOT, warmup=True, log=lambda *_: None)
    eng, cat = tasks
    for t in tasks:
        print(f"{t.name:<22} wall median {statistics.median(t.times):.3f} s ({min(t.times):.3f}-{max(t.times):.3f}), "
              f"CPU median {t.cpu_median:.3f} s")
    cpu = [a.cpu_s / b.cpu_s for a, b in zip(eng.runs, cat.runs, strict=True) if b.cpu_s]
    print(f"wall ratio {pair_ratio(eng, cat)} (target <= 1.3x); CPU ratio median {statistics.median(cpu):.2f}x "
          f"({min(cpu):.2f}-{max(cpu):.2f})" if cpu else f"wall ratio {pair_ratio(eng, cat)} (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
