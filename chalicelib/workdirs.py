"""Scratch directories for one render, and the removal of those a dead process left behind.

Lambda keeps /tmp between invocations, and a worker killed mid-job never reaches its cleanup:
its parts and half-written output would fill the next job's disk. Each directory holds a lock
file that its owner keeps flock'ed; the kernel drops the lock when the owner dies, however it
dies, so "not locked" means "nobody is using it" without asking the job table.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "stitch-"
LOCK = ".owner"
# A directory younger than this may be between mkdtemp and its lock: leave it alone.
GRACE_SECONDS = 30


@contextlib.contextmanager
def work_dir(root: str | Path, label: str) -> Iterator[Path]:
    """A fresh ``stitch-<label>-*`` directory under ``root``, locked while in use, removed after."""
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{label[:12]}-", dir=root))
    lock = os.open(path / LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def remove_abandoned(root: str | Path, *, now: float | None = None) -> list[str]:
    """Remove the ``stitch-*`` directories under ``root`` that no living process holds; their names."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, LOCK), os.O_WRONLY)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime < GRACE_SECONDS:
                    continue  # just created; its lock is about to appear
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live render owns it
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        finally:
            if fd is not None:
                os.close(fd)
    if removed:
        log.warning("removed %d abandoned work dir(s) under %s: %s", len(removed), root, " ".join(removed))
    return removed
