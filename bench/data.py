"""Benchmark inputs, generated once into bench/.data/PROFILE (git-ignored): MP3 128 kbps 44.1 kHz stereo.

Sets: P = short prompts (the exact-join row), M = medium parts, L = long parts. P's and M's files
each decode to exactly ``seconds`` x 44100 samples (libmp3lame writes that into the LAME tag).
"""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

DATA = Path(__file__).resolve().parent / ".data"
RATE = 44100
# profile -> set -> (parts, seconds each). "full" is `make bench`; "quick" is BENCH_QUICK=1;
# "tiny" is the smoke test in the test suite.
PROFILES: dict[str, dict[str, tuple[int, int]]] = {
    "full": {"P": (100, 1), "M": (10, 180), "L": (6, 1800)},
    "quick": {"P": (100, 1), "M": (5, 60), "L": (3, 300)},
    "tiny": {"P": (10, 1), "M": (2, 4), "L": (2, 8)},
}


def _tone(path: Path, seconds: int, n: int) -> None:
    """A tone over pink noise: LAME works about as hard on it as on speech or music."""
    src = (f"sine=frequency={220 + 55 * (n % 16)}:sample_rate={RATE}:duration={seconds}[s];"
           f"anoisesrc=color=pink:amplitude=0.08:sample_rate={RATE}:duration={seconds}:seed={n}[n];"
           "[s][n]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo[out]")
    tmp = path.with_suffix(".tmp.mp3")
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-filter_complex", src,
                    "-map", "[out]", "-c:a", "libmp3lame", "-b:a", "128k", "-ar", str(RATE), str(tmp)], check=True)
    tmp.replace(path)


def _join_copy(path: Path, sources: list[Path]) -> None:
    """A long file from shorter ones without re-encoding them (ffmpeg's concat demuxer)."""
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{s}'\n" for s in sources))
    tmp = path.with_suffix(".tmp.mp3")
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", str(tmp)], check=True)
    tmp.replace(path)
    listing.unlink()


def ensure(profile: str = "full", root: Path = DATA) -> dict[str, list[Path]]:
    """Paths of every set of ``profile``, generating what is missing (a minute or two for "full")."""
    sets_spec = PROFILES[profile]
    where = root / profile
    where.mkdir(parents=True, exist_ok=True)
    sets = {name: [where / f"{name}{i:03d}.mp3" for i in range(count)] for name, (count, _) in sets_spec.items()}
    jobs = [(p, sets_spec[name][1], i) for name in ("P", "M") for i, p in enumerate(sets[name]) if not p.exists()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: _tone(*job), jobs))
    # L: each part is M's parts in a different rotation, repeated to length, joined without re-encoding.
    m, m_s = sets["M"], sets_spec["M"][1]
    per_l = max(1, sets_spec["L"][1] // m_s)
    for i, p in enumerate(sets["L"]):
        if not p.exists():
            _join_copy(p, [m[(i + j) % len(m)] for j in range(per_l)])
    return sets


def gapless_samples(profile: str, name: str) -> int:
    """What an exact join of set ``name`` (P or M) decodes to, in samples. Not for L: its parts are
    copy joins of M's, so each keeps M's encoder delay and padding inside it."""
    if name == "L":
        raise ValueError("L's parts have no known gapless length")
    count, seconds = PROFILES[profile][name]
    return count * seconds * RATE
