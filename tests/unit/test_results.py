"""StoredResult's three stored forms read back to the same result, without AWS."""
from __future__ import annotations

import pytest

from chalicelib import results
from chalicelib.engine.types import PartSpan, Result
from chalicelib.results import Span, StoredResult, decode_spans, encode_spans


def _engine_result(n: int = 2) -> Result:
    return Result(duration_s=2.50049, format="mp3", size_bytes=1, join="copy",
                  parts=[PartSpan(i, i * 1.0004, (i + 1) * 1.2345678) for i in range(n)], added_silence_ms=26.1)


def test_engine_numbers_are_rounded_to_the_millisecond_once():
    stored = StoredResult.from_engine("k", "cache/k.mp3", _engine_result(), 1234)
    assert stored.duration_s == 2.5 and stored.size_bytes == 1234 and stored.mode == "copy"
    assert stored.parts == (Span(0, 0.0, 1.235), Span(1, 1.0, 2.469))


def test_metadata_record_and_public_forms_agree():
    stored = StoredResult.from_engine("k", "cache/k.mp3", _engine_result(), 1234)
    meta = stored.metadata("7")
    assert meta == {"duration-s": "2.500", "mode": "copy", "engine": "7", "join": "copy", "added-silence-ms": "26.1",
                    "parts": "0.000-1.235,1.000-2.469"}
    assert stored.sidecar() is None
    assert StoredResult.from_metadata("k", "cache/k.mp3", "mp3", 1234, meta) == stored
    record = stored.to_record(cached=True)
    assert record["cached"] is True and StoredResult.from_record(record) == stored
    body = stored.public(url="https://x", expires_at="2026-01-01T00:00:00Z", cached=False)
    assert list(body) == ["public_url", "cached", "cache_key", "duration_s", "format", "size_bytes", "mode",
                          "join", "added_silence_ms", "parts", "expires_at"]
    assert body["parts"] == [{"index": 0, "start_s": 0.0, "end_s": 1.235}, {"index": 1, "start_s": 1.0, "end_s": 2.469}]


def test_long_part_lists_go_to_a_sidecar(monkeypatch):
    monkeypatch.setattr(results, "MAX_PARTS_METADATA", 10)
    stored = StoredResult.from_engine("k", "cache/k.mp3", _engine_result(3), 9)
    meta = stored.metadata("1")
    assert meta["parts"] == "sidecar" and StoredResult.needs_sidecar(meta)
    assert StoredResult.from_metadata("k", "cache/k.mp3", "mp3", 9, meta, stored.sidecar()) == stored


def test_foreign_or_incomplete_metadata_is_refused():

    for meta in ({}, {"duration-s": "x"}, {"duration-s": "1", "parts": "sidecar"}, {"duration-s": "1", "parts": "a"}):
        with pytest.raises((KeyError, ValueError)):
            StoredResult.from_metadata("k", "o", "mp3", 1, meta)


def test_join_and_limited_gain_survive_every_form():
    # What the engine reports about how it joined, and where it limited a boost, reaches every form.
    reported = Result(duration_s=2.0, format="mp3", size_bytes=5, join="exact",
                      parts=[PartSpan(0, 0.0, 1.0, gain_limited_db=1.5), PartSpan(1, 1.0, 2.0)])
    stored = StoredResult.from_engine("k", "o", reported, 5)
    assert stored.parts[0].gain_limited_db == 1.5
    assert decode_spans(encode_spans(stored.parts)) == stored.parts
    assert StoredResult.from_metadata("k", "o", "mp3", 5, stored.metadata("2")) == stored
    assert StoredResult.from_record(stored.to_record(cached=False)) == stored
    body = stored.public(url=None, expires_at=None, cached=True)
    assert body["join"] == "exact" and body["added_silence_ms"] == 0.0 and body["mode"] == "encode"
    assert body["parts"][0]["gain_limited_db"] == 1.5 and "gain_limited_db" not in body["parts"][1]
