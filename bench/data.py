"""Benchmark inputs, generated once into bench/.data (git-ignored): MP3 128 kbps 44.1 kHz stereo."""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

DATA = Path(__file__).resolve().parent / ".data"
SETS = {"S": (10, 3), "M": (10, 180), "L": (6, 1800)}  # name: (parts, seconds each)


def _tone(path: Path, seconds: int, n: int) -> None:
    """A tone over pink noise: LAME works about as hard on it as on speech or music."""
    src = (f"sine=frequency={220 + 55 * n}:sample_rate=44100:duration={seconds}[s];"
           f"anoisesrc=color=pink:amplitude=0.08:sample_rate=44100:duration={seconds}:seed={n}[n];"
           "[s][n]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo[out]")
    tmp = path.with_suffix(".tmp.mp3")
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-filter_complex", src,
                    "-map", "[out]", "-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100", str(tmp)], check=True)
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


def ensure() -> dict[str, list[Path]]:
    """Paths of every set, generating what is missing (about a minute the first time)."""
    DATA.mkdir(exist_ok=True)
    sets = {name: [DATA / f"{name}{i:02d}.mp3" for i in range(count)] for name, (count, _) in SETS.items()}
    jobs = [(p, SETS[name][1], i) for name in ("S", "M") for i, p in enumerate(sets[name]) if not p.exists()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: _tone(*job), jobs))
    # L: each 30-min part is the ten 3-min parts in a different rotation, joined without re-encoding.
    m = sets["M"]
    for i, p in enumerate(sets["L"]):
        if not p.exists():
            _join_copy(p, m[i:] + m[:i])
    return sets
