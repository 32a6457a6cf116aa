"""Find the ffmpeg binary. No ffprobe is ever needed (no wheel we can ship provides it)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

from .config import PROJECT_ROOT

# vendor/bin/ffmpeg beside app.py in the repo; Chalice packages vendor/ at the zip root, so on
# Lambda the same file is /var/task/bin/ffmpeg.
CANDIDATES = (PROJECT_ROOT / "vendor" / "bin" / "ffmpeg", PROJECT_ROOT / "bin" / "ffmpeg")


class FfmpegNotFound(RuntimeError):
    pass


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """Resolve in order: $FFMPEG_BINARY, vendor/bin/ffmpeg (/var/task/bin/ffmpeg on Lambda),
    imageio-ffmpeg's bundled static build, then PATH."""
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        if not _executable(Path(env)):
            raise FfmpegNotFound(f"FFMPEG_BINARY={env} is not an executable file")
        return env
    for candidate in CANDIDATES:
        if _executable(candidate):
            return str(candidate)
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("ffmpeg")
    if found:
        return found
    raise FfmpegNotFound(
        "ffmpeg not found: set FFMPEG_BINARY, run `make vendor`, or pip install imageio-ffmpeg"
    )


def ffmpeg_command(*args: str, loglevel: str = "error") -> list[str]:
    """The argv of one quiet, non-interactive ffmpeg run: ``ffmpeg -hide_banner -nostdin ... args``."""
    return [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel, *args]


_PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=1)
def _prctl():
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved now: nothing is looked up after fork
    except (OSError, AttributeError):
        return None


def dies_with_parent() -> dict:
    """Popen keyword arguments that make the child (ffmpeg) get SIGKILL when the thread that
    started it dies, even by SIGKILL or out of memory: a dead worker's encoder must not keep
    writing into a work dir the next job clears. Linux only; elsewhere no arguments."""
    prctl = _prctl() if sys.platform.startswith("linux") else None
    if prctl is None:
        return {}

    def preexec() -> None:  # runs in the child between fork and exec: no locks, no imports
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return {"preexec_fn": preexec}


def nice_thread(by: int) -> None:
    """Lower the calling thread's priority by ``by`` (Linux: a thread has its own nice value,
    and the processes it starts inherit it); best effort. A pool's ``initializer``."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))


class Children:
    """Processes one job starts from several threads; ``kill()`` ends those running (and reaps
    them) and refuses new ones, so a failed job leaves no ffmpeg behind."""

    def __init__(self, stopped: str = "stopped: the job failed") -> None:
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._killed = False
        self._stopped = stopped

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        from .errors import StitchError

        with self._lock:
            if self._killed:
                raise StitchError(self._stopped)
            proc = subprocess.Popen(cmd, **kwargs, **dies_with_parent())
            self._procs.append(proc)
            return proc

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            for proc in self._procs:
                with contextlib.suppress(OSError):
                    proc.kill()  # a no-op once the process has been waited for
            for proc in self._procs:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
