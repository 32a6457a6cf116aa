"""The true-peak pass runs only when a boost might reach the ceiling (loudness.measure)."""
from __future__ import annotations

import subprocess

import pytest

from chalicelib.engine import loudness
from chalicelib.engine.probe import AudioInfo
from chalicelib.engine.segment import Segment
from chalicelib.ffmpeg import ffmpeg_binary


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """2 s of a 1 kHz tone at -20 dBFS sample peak (about -23 LUFS)."""
    path = tmp_path_factory.mktemp("loud") / "tone.wav"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=1000:duration=2",
                    "-af", "volume=-11dB", "-ac", "2", str(path)], check=True)
    return path


def _passes(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = loudness._ebur128

    def counting(segment, children, peak):
        seen.append(peak)
        return real(segment, children, peak)

    monkeypatch.setattr(loudness, "_ebur128", counting)
    return seen


@pytest.mark.parametrize("target,passes", [(-30, ["sample"]), (-16, ["sample"]), (-2, ["sample", "true"])])
def test_true_peak_pass_only_when_the_boost_may_reach_the_ceiling(tone, monkeypatch, target, passes):
    seen = _passes(monkeypatch)
    segment = Segment(AudioInfo(tone, 2.0, "pcm", 44100, 2, index=0), 0.0, 2.0, 0.0)
    level = loudness.measure(segment, None, target, -1.5)
    assert seen == passes
    exact = loudness.measure(segment)  # no ceiling: the one true-peak pass, as before
    assert abs(level.lufs - exact.lufs) < 0.05
    # Without the second pass the answer is an upper bound on the true peak; with it, the peak.
    assert level.true_peak_db >= exact.true_peak_db
    if "true" in passes:
        assert level.true_peak_db == exact.true_peak_db
    final = loudness.apply_level(segment, level, target, -1.5)
    assert final.gain_db == loudness.apply_level(segment, exact, target, -1.5).gain_db


def test_a_span_used_twice_is_measured_once(tone, monkeypatch):
    """The same span of the same source (a repeated prompt) costs one measurement; another span
    of it, or another gain, is a measurement of its own."""
    seen = _passes(monkeypatch)
    info = AudioInfo(tone, 2.0, "pcm", 44100, 2, index=0)
    same = [Segment(info, 0.0, 2.0, 0.0), Segment(info, 0.0, 2.0, 0.0)]
    other = [Segment(info, 0.5, 1.0, 0.0), Segment(info, 0.0, 2.0, 3.0)]
    with loudness.measuring(same + other, -16, -1.5) as futures:
        levels = [f.result() for f in futures]
    assert len(seen) == 3
    assert futures[0] is futures[1] and levels[0] == levels[1]
    assert len({id(f) for f in futures}) == 3
