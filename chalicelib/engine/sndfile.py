"""libsndfile in this process: the exact path's MP3 decoder when it can be (see engine.native).

libsndfile 1.2 decodes MPEG audio with mpg123, in float, with mpg123's gapless handling: for the
MP3s the probe knows exactly (every part whose whole-file decode already is its gapless length),
its samples are ffmpeg's to within 5e-7 and its length is the probe's, at a third of the CPU of
an ffmpeg decoder process (1.2 s against 3.5-4.4 s for 30 min of 128k stereo) and with no process
to start. ctypes releases the GIL for each call, so it decodes while the LAME threads encode.

The library is the one the ``soundfile`` wheel ships (manylinux_2_28: glibc 2.27 or later, so the
python3.12 runtime's Amazon Linux 2023 loads it), loaded without importing soundfile (which
needs numpy): vendor/lib/ (``make vendor`` puts it there; on Lambda /var/task/lib/), else the
installed wheel's. Without it the exact path decodes with ffmpeg, as before.
"""
from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

from ..config import PROJECT_ROOT

NAME = "libsndfile_x86_64.so"
# vendor/lib beside app.py in the repo; Chalice packages vendor/ at the zip root, so on Lambda the
# same file is /var/task/lib/.
CANDIDATES = (PROJECT_ROOT / "vendor" / "lib" / NAME, PROJECT_ROOT / "lib" / NAME)
_SFM_READ = 0x10
_FORMAT_MPEG = 0x230000  # SF_FORMAT_MPEG (major format)
_MAJOR = 0x0FFF0000


class _Info(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


_lib: ctypes.CDLL | None = None
_loaded = False
_load = threading.Lock()
# Opening (the format's set-up) takes turns; reading from one handle at a time per thread is free.
_opening = threading.Lock()


def library() -> ctypes.CDLL | None:
    """libsndfile, or None when this environment has no usable one. Loaded once."""
    global _lib, _loaded
    if _loaded:
        return _lib
    with _load:
        if not _loaded:
            _lib = _open_library()
            _loaded = True
    return _lib


def wheel_paths() -> list[Path]:
    """Where the installed soundfile wheel keeps the library (found without importing soundfile)."""
    try:
        spec = importlib.util.find_spec("_soundfile_data")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / NAME for p in spec.submodule_search_locations]


def _paths() -> list[Path]:
    return [*CANDIDATES, *wheel_paths()]


def _open_library() -> ctypes.CDLL | None:
    for path in _paths():
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
            lib.sf_open.restype = ctypes.c_void_p
            lib.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_Info)]
            lib.sf_readf_float.restype = ctypes.c_int64
            lib.sf_readf_float.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            lib.sf_close.argtypes = [ctypes.c_void_p]
            lib.sf_version_string.restype = ctypes.c_char_p
            version = lib.sf_version_string().decode()
        except (OSError, AttributeError, UnicodeDecodeError):
            continue
        # MPEG decoding arrived in libsndfile 1.1.0
        if _version(version) >= (1, 1):
            lib._name = str(path)
            return lib
    return None


def _version(text: str) -> tuple[int, ...]:
    digits = text.rsplit("-", 1)[-1].split(".")
    try:
        return tuple(int(d) for d in digits[:2])
    except ValueError:
        return (0,)


class Mp3Reader:
    """One MPEG audio file, decoded to interleaved float32 from its first gapless sample on."""

    _h = None

    def __init__(self, path: str | Path):
        lib = library()
        if lib is None:
            raise OSError("libsndfile is not available")
        info = _Info()
        with _opening:
            h = lib.sf_open(str(path).encode(), _SFM_READ, ctypes.byref(info))
        if not h:
            raise OSError(f"libsndfile cannot open {Path(path).name}")
        self._lib, self._h = lib, h
        if info.format & _MAJOR != _FORMAT_MPEG:
            self.close()
            raise OSError(f"libsndfile does not read {Path(path).name} as MPEG audio")
        self.frames, self.rate, self.channels = info.frames, info.samplerate, info.channels

    def read_into(self, address: int, frames: int) -> int:
        """Decode up to ``frames`` sample frames to ``address``; how many came (0 at the end)."""
        got = self._lib.sf_readf_float(self._h, address, frames)
        return max(0, got)

    def close(self) -> None:
        if self._h:
            self._lib.sf_close(self._h)
            self._h = None

    def __enter__(self) -> Mp3Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()
