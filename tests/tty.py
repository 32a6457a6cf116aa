"""Running a command with stderr on a pseudo-terminal, so it draws what it draws for a person."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path


def run_on_tty(cmd: list[str], *, cwd: Path, env: dict, columns: int = 100,
               timeout: float = 120) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, what reached the terminal on stderr)."""
    master, slave = pty.openpty()
    # A fresh pty has a 0x0 window; a real terminal has a size, and tqdm draws to fit it.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        err += chunk
    out = proc.stdout.read()
    proc.stdout.close()
    status = proc.wait(timeout=timeout)
    os.close(master)
    return status, out, err
