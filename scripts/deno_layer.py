"""`make vendor` (second half): build/layers/deno-layer.zip, the worker's Lambda layer with deno.

Current yt-dlp needs a JavaScript runtime to solve YouTube's challenges. The layer holds only
``bin/deno`` (mode 0755): Lambda unpacks layers under /opt and puts /opt/bin on PATH, where yt-dlp
looks for deno by default. The binary comes from the deno wheel pinned in requirements-lock.txt,
downloaded once with pip for Linux x86_64 whatever the host is. It is built for glibc >= 2.27,
so the functions run on python3.12 (Amazon Linux 2023); ``glibc_requirement`` proves it offline.
Idempotent: an up-to-date zip is left alone.
"""
from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_CACHE = ROOT / "build" / "wheels"
LAYER_ZIP = ROOT / "build" / "layers" / "deno-layer.zip"
LAYER_BINARY = "bin/deno"
WHEEL_PLATFORM = "manylinux_2_27_x86_64"


def pinned_version() -> str:
    m = re.search(r"^deno==(\S+)$", (ROOT / "requirements-lock.txt").read_text(), re.M)
    if not m:
        raise SystemExit("deno-layer: deno is not pinned in requirements-lock.txt")
    return m.group(1)


def wheel(version: str) -> Path:
    """The Linux x86_64 deno wheel, downloaded into build/wheels on first use."""
    pattern = f"deno-{version}-*manylinux*x86_64*.whl"
    found = sorted(WHEEL_CACHE.glob(pattern))
    if not found:
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", WHEEL_PLATFORM, "-d", str(WHEEL_CACHE), f"deno=={version}"],
            check=True,
        )
        found = sorted(WHEEL_CACHE.glob(pattern))
    if not found:
        raise SystemExit(f"deno-layer: no manylinux x86_64 wheel of deno {version}")
    return found[0]


def build(dest: Path = LAYER_ZIP) -> Path:
    """Write the layer zip (atomically) from the pinned wheel unless it is newer than the wheel."""
    whl = wheel(pinned_version())
    if dest.is_file() and dest.stat().st_mtime >= whl.stat().st_mtime:
        print(f"deno-layer: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} is up to date")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(whl) as src:
        name = next((n for n in src.namelist() if re.fullmatch(r"deno-[^/]+\.data/scripts/deno", n)), None)
        if name is None:
            raise SystemExit(f"deno-layer: {whl.name} holds no deno binary")
        info = zipfile.ZipInfo(LAYER_BINARY, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(part, "w") as out, src.open(name) as binary, out.open(info, "w") as dst:
            while chunk := binary.read(1 << 20):
                dst.write(chunk)
    os.replace(part, dest)
    print(f"deno-layer: wrote {dest} from {whl.name}")
    return dest


def glibc_requirement(path: Path) -> tuple[int, ...]:
    """The highest GLIBC_x.y symbol version an x86-64 ELF binary needs (from .gnu.version_r)."""
    data = Path(path).read_bytes() if not isinstance(path, bytes) else path
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    versions = []
    for _name, sh_type, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if sh_type != 0x6FFFFFFE:  # SHT_GNU_verneed
            continue
        strtab = sections[link][4]
        entry = offset
        for _ in range(info):
            _ver, cnt, _file, aux, nxt = struct.unpack_from("<HHIII", data, entry)
            a = entry + aux
            for _ in range(cnt):
                _hash, _flags2, _other, name_off, anxt = struct.unpack_from("<IHHII", data, a)
                end = data.index(b"\0", strtab + name_off)
                label = data[strtab + name_off:end].decode()
                if m := re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", label):
                    versions.append(tuple(int(x) for x in m.group(1).split(".")))
                a += anxt
            entry += nxt
    if not versions:
        raise ValueError("no GLIBC symbol versions found")
    return max(versions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=LAYER_ZIP)
    args = parser.parse_args(argv)
    build(args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
