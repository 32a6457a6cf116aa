"""The installed `audio-stitch` command (pyproject entry point): it runs from any directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio import decoded_duration, make_tone

ROOT = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).parent / "audio-stitch"

pytestmark = pytest.mark.skipif(not COMMAND.exists(), reason=f"{COMMAND} is missing: run `make install`")


def _clean_env() -> dict:
    # No PYTHONPATH pointing at the checkout: the command must find its packages by itself.
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_command_stitches_from_outside_the_checkout(tmp_path):
    a = make_tone(tmp_path / "a.mp3", 1.0)
    b = make_tone(tmp_path / "b.wav", 0.5, fmt="wav")
    proc = subprocess.run([str(COMMAND), "stitch", "a.mp3", "b.wav", "-o", "out.wav"], cwd=tmp_path,
                          env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "wav"
    assert decoded_duration(tmp_path / "out.wav") == pytest.approx(
        decoded_duration(a) + decoded_duration(b), abs=0.03)


def test_command_lists_every_subcommand(tmp_path):
    proc = subprocess.run([str(COMMAND), "--help"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0
    for sub in ("stitch", "remote", "run", "provision"):
        assert f"\n  {sub} " in proc.stdout
