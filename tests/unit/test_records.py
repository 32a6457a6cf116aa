"""chalicelib.records: the engine's value classes behave as the dataclasses they replaced."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest

from chalicelib import records
from chalicelib.engine.types import PartInput, PartSpan, Result
from chalicelib.options import Options, PartOptions


@records.record(frozen=True)
class Point:
    x: int
    y: int = 0


def _pair(frozen: bool):
    """The same class as a dataclass and as a record."""
    def body(decorator, field):
        @decorator
        class Sample:
            """A doc string."""

            a: int
            b: str = "x"
            c: list = field(default_factory=list)
            hidden: int = field(default=0, repr=False, compare=False)

            @property
            def twice(self) -> int:
                return 2 * self.a

        return Sample

    return (body(dataclasses.dataclass(frozen=frozen), dataclasses.field),
            body(records.record(frozen=frozen), records.field))


@pytest.mark.parametrize("frozen", [False, True])
def test_record_matches_dataclass(frozen):
    dc, rec = _pair(frozen)
    for args, kwargs in [((1,), {}), ((1, "y"), {"hidden": 5}), ((), {"a": 2, "c": [1, 2]})]:
        d, r = dc(*args, **kwargs), rec(*args, **kwargs)
        assert repr(d) == repr(r)
        assert dataclasses.asdict(d) == records.asdict(r)
        assert r.twice == d.twice
    assert rec(1) == rec(1, hidden=9) and rec(1) != rec(2) and rec(1) != dc(1)
    assert rec(1).c is not rec(1).c  # a fresh default per instance
    assert [f.name for f in records.fields(rec)] == [f.name for f in dataclasses.fields(dc)]
    assert str(inspect.signature(rec)) == str(inspect.signature(dc))
    assert rec.__doc__ == "A doc string."
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        rec()
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        rec(1, d=2)


def test_frozen_records_refuse_changes_and_hash_by_value():
    _, rec = _pair(frozen=True)
    r = rec(1, "y", (), 3)
    with pytest.raises(records.FrozenInstanceError, match="cannot assign to field 'a'"):
        r.a = 2
    with pytest.raises(AttributeError):
        del r.b
    assert hash(r) == hash(rec(1, "y", (), 4)) and {r, rec(1, "y", (), 4)} == {r}
    assert records.replace(r, b="z") == rec(1, "z", ()) and r.b == "y"
    assert copy.deepcopy(r) == r
    assert pickle.loads(pickle.dumps(Point(1, 2))) == Point(1, 2)


def test_mutable_records_are_unhashable_and_assignable():
    _, rec = _pair(frozen=False)
    r = rec(1)
    r.a = 5
    assert r.a == 5
    with pytest.raises(TypeError, match="unhashable"):
        hash(r)


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="non-default field 'b' follows a default one"):
        @records.record
        class Bad:
            a: int = 0
            b: int


def test_asdict_recurses_and_fields_needs_a_record():
    result = Result(1.5, "mp3", 10, "copy", [PartSpan(0, 0.0, 1.5)])
    assert records.asdict(result)["parts"] == [{"index": 0, "start_s": 0.0, "end_s": 1.5, "gain_limited_db": 0.0}]
    with pytest.raises(TypeError, match="needs a record"):
        records.fields(object())


def test_engine_types_keep_their_value_semantics(tmp_path):
    assert repr(Options()) == ("Options(format='mp3', bitrate=None, sample_rate=None, channels=None, gap_ms=0, "
                               "crossfade_ms=0, fade_in_ms=0, fade_out_ms=0, loudness_lufs=None, join='auto')")
    assert Options.field_names()[-1] == "join" and Options().to_dict()["join"] == "auto"
    assert PartOptions.from_dict({"gain_db": 2}).to_dict() == {"gain_db": 2.0}
    part = PartInput(tmp_path / "a.mp3")
    assert part.options == PartOptions() and part.options is not PartInput(tmp_path / "b.mp3").options
    assert {Options(), Options(join="auto")} == {Options()}
