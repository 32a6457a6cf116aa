"""`make vendor`: put a static Linux x86_64 ffmpeg at vendor/bin/ffmpeg (mode 0755) for Lambda, and
libsndfile (the in-process MP3 decoder, from the soundfile wheel) at vendor/lib/.

Chalice copies vendor/ to the root of the deployment zip, so Lambda sees /var/task/bin/ffmpeg,
which chalicelib.ffmpeg looks for first. The binary comes from the imageio-ffmpeg manylinux2014
wheel pinned in requirements-lock.txt: taken from the installed package when that is the Linux
x86_64 build, otherwise (e.g. on macOS) downloaded as the manylinux wheel with pip.
Idempotent: an identical, executable copy is left alone.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.engine import sndfile  # noqa: E402 - where the engine looks for libsndfile, and its name

DEST = ROOT / "vendor" / "bin" / "ffmpeg"
WHEEL_CACHE = ROOT / "build" / "wheels"
ELF_X86_64 = (b"\x7fELF", 0x3E)


def is_linux_x86_64(path: Path) -> bool:
    """True for an ELF executable for x86-64 (what Lambda's x86_64 runtime runs)."""
    with open(path, "rb") as f:
        head = f.read(20)
    return len(head) == 20 and head[:4] == ELF_X86_64[0] and int.from_bytes(head[18:20], "little") == ELF_X86_64[1]


def pinned_version(dist: str = "imageio-ffmpeg") -> str:
    text = (ROOT / "requirements-lock.txt").read_text()
    m = re.search(rf"^{re.escape(dist)}==(\S+)$", text, re.M)
    if not m:
        raise SystemExit(f"vendor: {dist} is not pinned in requirements-lock.txt")
    return m.group(1)


def _installed_binary() -> Path | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    for candidate in sorted((Path(imageio_ffmpeg.__file__).parent / "binaries").glob("ffmpeg-linux-x86_64*")):
        if is_linux_x86_64(candidate):
            return candidate
    return None


def _from_wheel(dist: str, version: str, platform_tag: str, member: str, *pip_args: str) -> Path:
    """The first file of ``dist`` ``version``'s ``platform_tag`` wheel whose name matches the
    regex ``member``, extracted into build/wheels; the wheel is downloaded once."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    pattern = f"{dist.replace('-', '_')}-{version}-*manylinux*x86_64*.whl"
    if not sorted(WHEEL_CACHE.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--platform", platform_tag, *pip_args, "-d", str(WHEEL_CACHE), f"{dist}=={version}"],
                       check=True)
    wheels = sorted(WHEEL_CACHE.glob(pattern))
    if not wheels:
        raise SystemExit(f"vendor: no manylinux x86_64 wheel of {dist} {version} found")
    with zipfile.ZipFile(wheels[0]) as zf:
        names = [n for n in zf.namelist() if re.search(member, n)]
        if not names:
            raise SystemExit(f"vendor: {wheels[0].name} holds no {member}")
        # Extracted every time (a name can outlive a version bump), beside it and renamed: an
        # interrupted extraction must never pass for the file (off Linux x86_64 nothing runs it
        # before it is vendored).
        out = WHEEL_CACHE / Path(names[0]).name
        part = out.with_name(out.name + ".part")
        with zf.open(names[0]) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, out)
    return out


def _binary_from_wheel(version: str) -> Path:
    return _from_wheel("imageio-ffmpeg", version, "manylinux2014_x86_64", r"binaries/ffmpeg-linux-x86_64",
                       "--python-version", "3.11")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def can_run_here() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def verify(path: Path) -> str:
    """Run ``path -version``; returns its first line. Raises SystemExit when it does not run."""
    try:
        proc = subprocess.run([str(path), "-version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise SystemExit(f"vendor: {path} does not run: {exc}") from exc
    if proc.returncode != 0 or not proc.stdout.startswith("ffmpeg version"):
        raise SystemExit(f"vendor: {path} -version failed ({proc.returncode}): {proc.stderr[-500:]}")
    return proc.stdout.splitlines()[0]


def _place(source: Path, dest: Path, mode: int) -> None:
    """Copy ``source`` to ``dest`` (atomically, with ``mode``) unless an identical copy is there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and dest.stat().st_size == source.stat().st_size and _sha256(dest) == _sha256(source):
        print(f"vendor: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} is up to date")
    else:
        # Copy beside the destination and rename, so an interrupted copy never looks complete.
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"vendor: copied {source} -> {dest}")
    # A checkout or unzip that lost the mode bits is repaired too.
    os.chmod(dest, mode)


def vendor(dest: Path = DEST, *, from_wheel: bool = False) -> Path:
    """Place the binary at ``dest`` (atomically) unless an identical copy is there.

    ``from_wheel`` skips the installed package and uses the manylinux wheel (what a macOS host does).
    """
    source = (None if from_wheel else _installed_binary()) or _binary_from_wheel(pinned_version())
    _place(source, dest, 0o755)
    if can_run_here():
        print(f"vendor: {verify(dest)}")
    else:
        print(f"vendor: not an x86_64 Linux host, skipped running {dest.name} -version")
    return dest


# libsndfile (MPEG audio through mpg123), the exact path's in-process decoder: the soundfile
# wheel's copy, at vendor/lib/ (Lambda: /var/task/lib/, where chalicelib.engine.sndfile looks).
SNDFILE = sndfile.NAME
SNDFILE_DEST = ROOT / "vendor" / "lib" / SNDFILE


def _installed_sndfile() -> Path | None:
    return next((p for p in sndfile.wheel_paths() if p.is_file() and is_linux_x86_64(p)), None)


def _sndfile_from_wheel() -> Path:
    return _from_wheel("soundfile", pinned_version("soundfile"), "manylinux_2_28_x86_64", rf"^_soundfile_data/{re.escape(SNDFILE)}$")


def vendor_sndfile(dest: Path = SNDFILE_DEST, *, from_wheel: bool = False) -> Path:
    source = (None if from_wheel else _installed_sndfile()) or _sndfile_from_wheel()
    _place(source, dest, 0o644)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--from-wheel", action="store_true",
                        help="take ffmpeg from the pinned manylinux wheel (downloaded once into build/wheels)")
    args = parser.parse_args(argv)
    vendor(args.dest, from_wheel=args.from_wheel)
    vendor_sndfile(from_wheel=args.from_wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
