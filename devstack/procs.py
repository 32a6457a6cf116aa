"""Process helpers shared by the local stack's supervisor, API and worker."""
from __future__ import annotations

import ctypes
import os
import signal
import sys


def die_with_parent(parent: int | str | None = None) -> None:
    """Ask Linux to SIGTERM this process when its parent dies, even by SIGKILL.

    ``parent`` defaults to $LOCAL_RUN_PARENT_PID, which the `run` supervisor sets for its
    children: without this a killed supervisor would leave them serving on the stack's ports.
    """
    parent = parent or os.environ.get("LOCAL_RUN_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    # The parent may have died before prctl took effect; then nobody would signal us.
    if os.getppid() != int(parent):
        sys.exit(f"parent process {parent} is gone")
