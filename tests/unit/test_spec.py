"""Request validation (every 400 names its field) and the cache key's identity rules."""
from __future__ import annotations

import pytest

from chalicelib import spec as spec_mod
from chalicelib.config import Settings
from chalicelib.errors import BadRequest, SourceRefused
from chalicelib.options import Options
from chalicelib.spec import (
    PartIdentity,
    StitchSpec,
    cache_key,
    output_key,
    parse_body,
    parse_request,
)

SETTINGS = Settings(max_parts=5)


def parse(body, **kw):
    return parse_request(body, SETTINGS, **kw)


def test_string_and_object_parts_with_trim_and_options():
    s = parse({"message_parts": ["a.mp3", {"key": "b.wav", "start_s": 1, "end_s": 2.5, "gain_db": -3}],
               "format": "wav", "gap_ms": 250, "async": True, "notify_email": "me@example.com"})
    assert [p.key for p in s.parts] == ["a.mp3", "b.wav"]
    assert s.parts[1].options.start_s == 1.0 and s.parts[1].options.end_s == 2.5
    assert s.parts[1].options.gain_db == -3.0
    assert s.options.format == "wav" and s.options.gap_ms == 250
    assert s.force_async and s.notify_email == "me@example.com" and not s.has_urls


def test_url_part_is_accepted_and_flags_the_spec():
    s = parse({"message_parts": [{"url": "https://example.com/a.mp3"}, "b.mp3"]}, check_urls=False)
    assert s.has_urls and s.parts[0].url == "https://example.com/a.mp3" and s.parts[0].key is None


def test_spec_round_trips_through_its_canonical_dict():
    body = {"message_parts": ["a.mp3", {"key": "b.mp3", "start_s": 0.5}, {"url": "https://example.com/x"}],
            "bitrate": "192k", "webhook_url": "https://example.com/hook", "async": True}
    s = parse(body, check_urls=False)
    again = StitchSpec.from_dict(s.to_dict(), SETTINGS)
    assert again == s


@pytest.mark.parametrize("body, field", [
    ({}, "message_parts"),
    ({"message_parts": "a.mp3"}, "message_parts"),
    ({"message_parts": []}, "message_parts"),
    ({"message_parts": ["a"] * 6}, "message_parts"),
    ({"message_parts": ["a"], "colour": "red"}, "colour"),
    ({"message_parts": ["a", 7]}, "message_parts[1]"),
    ({"message_parts": ["a", None]}, "message_parts[1]"),
    ({"message_parts": [{"start_s": 1}]}, "message_parts[0]"),
    ({"message_parts": [{"key": "a", "url": "https://example.com/a"}]}, "message_parts[0]"),
    ({"message_parts": [{"key": "a", "volume": 2}]}, "message_parts[0].volume"),
    ({"message_parts": [""]}, "message_parts[0]"),
    ({"message_parts": ["a", {"key": ""}]}, "message_parts[1].key"),
    ({"message_parts": [{"key": 5}]}, "message_parts[0].key"),
    ({"message_parts": ["../etc/passwd"]}, "message_parts[0]"),
    ({"message_parts": [{"key": "a/../b"}]}, "message_parts[0].key"),
    ({"message_parts": ["a\nb"]}, "message_parts[0]"),
    ({"message_parts": ["k" * 1025]}, "message_parts[0]"),
    ({"message_parts": ["a", "b", "c", {"key": "d", "start_s": "1"}]}, "message_parts[3].start_s"),
    ({"message_parts": [{"key": "a", "start_s": -1}]}, "message_parts[0].start_s"),
    ({"message_parts": [{"key": "a", "start_s": 2, "end_s": 1}]}, "message_parts[0].end_s"),
    ({"message_parts": [{"key": "a", "gain_db": 99}]}, "message_parts[0].gain_db"),
    ({"message_parts": [{"key": "a", "gain_db": True}]}, "message_parts[0].gain_db"),
    ({"message_parts": [{"url": "ftp://example.com/a.mp3"}]}, "message_parts[0].url"),
    ({"message_parts": [{"url": "file:///etc/passwd"}]}, "message_parts[0].url"),
    ({"message_parts": [{"url": "https:///nohost"}]}, "message_parts[0].url"),
    ({"message_parts": [{"url": "http://example.com:99999/"}]}, "message_parts[0].url"),
    ({"message_parts": [{"url": 12}]}, "message_parts[0].url"),
    ({"message_parts": ["a"], "format": "aiff"}, "format"),
    ({"message_parts": ["a"], "bitrate": "fast"}, "bitrate"),
    ({"message_parts": ["a"], "format": "flac", "bitrate": "128k"}, "bitrate"),
    ({"message_parts": ["a"], "sample_rate": 12345}, "sample_rate"),
    ({"message_parts": ["a"], "channels": 3}, "channels"),
    ({"message_parts": ["a"], "gap_ms": 100, "crossfade_ms": 100}, "crossfade_ms"),
    ({"message_parts": ["a"], "loudness_lufs": 0}, "loudness_lufs"),
    ({"message_parts": ["a"], "notify_email": "not-an-address"}, "notify_email"),
    ({"message_parts": ["a"], "notify_email": ["a@b.co"]}, "notify_email"),
    ({"message_parts": ["a"], "webhook_url": "gopher://example.com/"}, "webhook_url"),
    ({"message_parts": ["a"], "async": "yes"}, "async"),
])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(BadRequest) as info:
        parse(body, check_urls=False)
    assert info.value.field == field
    assert info.value.status == 400
    assert field.split("[")[0] in info.value.message


def test_url_parts_and_webhook_go_through_the_ssrf_guard():
    with pytest.raises(SourceRefused) as info:
        parse({"message_parts": ["a", {"url": "http://127.0.0.1/a.mp3"}]})
    assert info.value.field == "message_parts[1].url" and info.value.status == 400
    with pytest.raises(SourceRefused) as info:
        parse({"message_parts": ["a"], "webhook_url": "http://169.254.169.254/latest/meta-data"})
    assert info.value.field == "webhook_url"
    allowed = Settings(allow_loopback_urls=True)
    s = parse_request({"message_parts": [{"url": "http://127.0.0.1/a.mp3"}]}, allowed)
    assert s.parts[0].url == "http://127.0.0.1/a.mp3"


def test_webhook_url_refused_where_webhooks_could_not_be_signed():
    deployed = Settings(require_webhook_secret=True, allow_loopback_urls=True)
    body = {"message_parts": ["a"], "webhook_url": "http://127.0.0.1:9/hook"}
    with pytest.raises(BadRequest) as info:
        parse_request(body, deployed)
    assert info.value.field == "webhook_url" and info.value.status == 400
    assert "WEBHOOK_SECRET" in info.value.message
    # With a secret, or where unsigned webhooks are allowed (tests, the bare local default), it passes.
    from dataclasses import replace

    assert parse_request(body, replace(deployed, webhook_secret="k")).webhook_url == body["webhook_url"]
    assert parse_request(body, replace(deployed, require_webhook_secret=False)).webhook_url == body["webhook_url"]
    # The worker re-reads stored specs without the REST checks.
    assert parse_request(body, deployed, check_urls=False).webhook_url == body["webhook_url"]


def test_every_stage_requires_a_webhook_secret():
    import json
    from pathlib import Path

    config = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "config.json").read_text())
    for stage in config["stages"].values():
        assert stage["environment_variables"]["REQUIRE_WEBHOOK_SECRET"] == "true"


@pytest.mark.parametrize("raw", [b"", b"   ", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", None])
def test_parse_body_rejects_what_is_not_a_json_object(raw):
    with pytest.raises(BadRequest) as info:
        parse_body(raw)
    assert info.value.field == "body"


def test_parse_body_accepts_an_object():
    assert parse_body(b'{"message_parts": ["a"]}') == {"message_parts": ["a"]}


def _key(body, etags, bucket="in"):
    s = parse(body, check_urls=False)
    return cache_key([PartIdentity.of_object(p, bucket, etags[p.key]) for p in s.parts], s.options)


ETAGS = {"a": "e1", "b": "e2"}


def test_cache_key_is_deterministic_hex_sha256():
    k = _key({"message_parts": ["a", "b"]}, ETAGS)
    assert k == _key({"message_parts": [{"key": "a"}, {"key": "b"}]}, ETAGS)
    assert len(k) == 64 and int(k, 16) >= 0


def test_cache_key_depends_on_order_etag_bucket_trim_gain_and_options():
    base = _key({"message_parts": ["a", "b"]}, ETAGS)
    variants = [
        _key({"message_parts": ["b", "a"]}, ETAGS),
        _key({"message_parts": ["a", "b"]}, {"a": "e1-new", "b": "e2"}),
        _key({"message_parts": ["a", "b"]}, ETAGS, bucket="other"),
        _key({"message_parts": [{"key": "a", "end_s": 1}, "b"]}, ETAGS),
        _key({"message_parts": [{"key": "a", "gain_db": 1}, "b"]}, ETAGS),
        _key({"message_parts": ["a", "b"], "format": "wav"}, ETAGS),
        _key({"message_parts": ["a", "b"], "gap_ms": 10}, ETAGS),
        _key({"message_parts": ["a", "a", "b"]}, ETAGS),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_cache_key_ignores_notification_and_async_fields_and_a_zero_start():
    base = _key({"message_parts": ["a", "b"]}, ETAGS)
    assert base == _key({"message_parts": ["a", "b"], "async": True, "notify_email": "x@y.io"}, ETAGS)
    assert base == _key({"message_parts": [{"key": "a", "start_s": 0}, "b"]}, ETAGS)
    assert base == _key({"message_parts": ["a", "b"], "format": "mp3"}, ETAGS)


def test_cache_key_changes_with_engine_version(monkeypatch):
    base = _key({"message_parts": ["a"]}, ETAGS)
    monkeypatch.setattr(spec_mod, "ENGINE_VERSION", "999")
    assert _key({"message_parts": ["a"]}, ETAGS) != base


def test_version_id_pins_identity_when_present():
    p = parse({"message_parts": ["a"]}).parts[0]
    pinned = PartIdentity.of_object(p, "in", '"e1"', "v1")
    assert pinned.to_dict() == {"bucket": "in", "key": "a", "version_id": "v1", "gain_db": 0.0}
    assert PartIdentity.of_object(p, "in", '"e1"', "null").to_dict()["etag"] == "e1"


def test_url_and_source_identities_differ_and_keep_trim():
    p = parse({"message_parts": [{"url": "https://youtu.be/x", "end_s": 5}]}, check_urls=False).parts[0]
    requested, fetched = PartIdentity.of_url(p), PartIdentity.of_source(p, "youtube:x")
    assert requested.to_dict() == {"url": "https://youtu.be/x", "end_s": 5.0, "gain_db": 0.0}
    assert fetched.to_dict() == {"source": "youtube:x", "end_s": 5.0, "gain_db": 0.0}
    assert not requested.settled and fetched.settled


def test_identities_read_back_from_the_job_record_and_hash_as_their_dict():
    import hashlib
    import json

    s = parse({"message_parts": [{"key": "a", "start_s": 1, "gain_db": -2}, "b"]})
    idents = [PartIdentity.of_object(p, "in", ETAGS[p.key], size_bytes=10) for p in s.parts]
    assert [PartIdentity.from_dict(i.to_dict()) for i in idents] == idents
    assert idents[0].object_ref == ("in", "a", "e1", None)
    doc = {"engine": spec_mod.ENGINE_VERSION, "options": s.options.to_dict(), "parts": [
        {"bucket": "in", "key": "a", "etag": "e1", "start_s": 1.0, "gain_db": -2.0},
        {"bucket": "in", "key": "b", "etag": "e2", "gain_db": 0.0}]}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert cache_key(idents, s.options) == hashlib.sha256(canonical.encode("ascii")).hexdigest()


def test_output_key_uses_prefix_and_extension():
    assert output_key(Settings(cache_prefix="c/"), "abc", Options(format="flac")) == "c/abc.flac"
