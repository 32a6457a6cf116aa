"""The copy-or-encode guess the inline budget uses, from names and options only."""
from __future__ import annotations

from chalicelib.engine.estimate import copy_likely
from chalicelib.options import Options, PartOptions

WHOLE = PartOptions()


def test_whole_mp3_parts_joined_as_mp3_are_likely_a_copy():
    assert copy_likely(Options(), [("a.mp3", WHOLE), ("B.MP3", WHOLE)])


def test_anything_that_forces_a_re_encode_is_not():
    assert not copy_likely(Options(format="wav"), [("a.mp3", WHOLE)])
    assert not copy_likely(Options(gap_ms=100), [("a.mp3", WHOLE)])
    assert not copy_likely(Options(join="exact"), [("a.mp3", WHOLE)])
    assert not copy_likely(Options(), [("a.mp3", WHOLE), ("b.wav", WHOLE)])
    assert not copy_likely(Options(), [("a.mp3", PartOptions(end_s=1.0))])
    assert not copy_likely(Options(), [("a.mp3", PartOptions(gain_db=-3.0))])
