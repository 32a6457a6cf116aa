"""A corpus of bad requests, each with the answer it must get: a 4xx in the documented error
shape naming the field (or part), never a 5xx, a hang, or a tool's raw output."""
from __future__ import annotations

import json

import pytest

from tests.unit.badinput import REAL_KEY, api_client, assert_error_shape, send

DEEP_LIST = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
OK_PART = {"message_parts": [REAL_KEY]}


def stitch(**fields):
    return {"message_parts": [REAL_KEY], **fields}


def part(**fields):
    return {"message_parts": [{"key": REAL_KEY, **fields}]}


# (id, method, path, body | None, raw | None, content type, status, code, field)
CASES = [
    # -- the body as a whole
    ("empty body", "POST", "/stitch", None, "", "application/json", 400, "bad_request", "body"),
    ("whitespace body", "POST", "/stitch", None, "  \n", "application/json", 400, "bad_request", "body"),
    ("not json", "POST", "/stitch", None, "{nope", "application/json", 400, "bad_request", "body"),
    ("json list", "POST", "/stitch", [1, 2], None, "application/json", 400, "bad_request", "body"),
    ("json string", "POST", "/stitch", "x", None, "application/json", 400, "bad_request", "body"),
    ("json null", "POST", "/stitch", None, "null", "application/json", 400, "bad_request", "body"),
    ("json number", "POST", "/stitch", None, "12", "application/json", 400, "bad_request", "body"),
    ("invalid utf-8", "POST", "/stitch", None, b'{"message_parts": ["\xff\xfe"]}', "application/json",
     400, "bad_request", "body"),
    ("nested 1000 lists", "POST", "/stitch", None, DEEP_LIST, "application/json", 400, "bad_request", "body"),
    ("nested 1000 objects", "POST", "/stitch", None, DEEP_OBJECT, "application/json", 400, "bad_request", "body"),
    ("nested 1000 on uploads", "POST", "/uploads", None, DEEP_OBJECT, "application/json", 400, "bad_request",
     "body"),
    ("nested 1000 lists on uploads", "POST", "/uploads", None, DEEP_LIST, "application/json", 400,
     "bad_request", "body"),
    ("nested 40 in a part", "POST", "/stitch", None,
     '{"message_parts": [' + "[" * 40 + "]" * 40 + "]}", "application/json", 400, "bad_request", None),
    ("NaN literal", "POST", "/stitch", None, '{"message_parts": ["a.mp3"], "gap_ms": NaN}', "application/json",
     400, "bad_request", "gap_ms"),
    ("Infinity literal", "POST", "/stitch", None, '{"message_parts": ["a.mp3"], "loudness_lufs": -Infinity}',
     "application/json", 400, "bad_request", "loudness_lufs"),
    # -- lone surrogates, wherever they are
    ("surrogate in key", "POST", "/stitch", None, '{"message_parts": ["\\ud800"]}', "application/json",
     400, "bad_request", "message_parts[0]"),
    ("surrogate in object key", "POST", "/stitch", None, '{"message_parts": [{"key": "a\\udfff.mp3"}]}',
     "application/json", 400, "bad_request", "message_parts[0].key"),
    ("surrogate in field name", "POST", "/stitch", None, '{"message_parts": ["a.mp3"], "\\ud800": 1}',
     "application/json", 400, "bad_request", "body"),
    ("surrogate in url", "POST", "/stitch", None, '{"message_parts": [{"url": "https://example.com/\\ud800"}]}',
     "application/json", 400, "bad_request", "message_parts[0].url"),
    ("surrogate in notify_email", "POST", "/stitch", None,
     '{"message_parts": ["a.mp3"], "notify_email": "a\\ud800@example.com"}', "application/json",
     400, "bad_request", "notify_email"),
    ("surrogate in webhook path", "POST", "/stitch", None,
     '{"message_parts": ["a.mp3"], "webhook_url": "https://example.com/hook/\\udc00"}', "application/json",
     400, "bad_request", "webhook_url"),
    ("surrogate in filename", "POST", "/uploads", None, '{"filename": "\\ud800.mp3"}', "application/json",
     400, "bad_request", "filename"),
    ("surrogate pair half in format", "POST", "/stitch", None, '{"message_parts": ["a.mp3"], "format": "\\ud83d"}',
     "application/json", 400, "bad_request", "format"),
    # -- message_parts
    ("no parts", "POST", "/stitch", {}, None, "application/json", 400, "bad_request", "message_parts"),
    ("parts null", "POST", "/stitch", {"message_parts": None}, None, "application/json", 400, "bad_request",
     "message_parts"),
    ("parts string", "POST", "/stitch", {"message_parts": "a.mp3"}, None, "application/json", 400, "bad_request",
     "message_parts"),
    ("parts object", "POST", "/stitch", {"message_parts": {"key": "a"}}, None, "application/json", 400,
     "bad_request", "message_parts"),
    ("parts empty", "POST", "/stitch", {"message_parts": []}, None, "application/json", 400, "bad_request",
     "message_parts"),
    ("101 parts", "POST", "/stitch", {"message_parts": ["a.mp3"] * 101}, None, "application/json", 400,
     "bad_request", "message_parts"),
    ("part number", "POST", "/stitch", {"message_parts": [3]}, None, "application/json", 400, "bad_request",
     "message_parts[0]"),
    ("part null", "POST", "/stitch", {"message_parts": [REAL_KEY, None]}, None, "application/json", 400,
     "bad_request", "message_parts[1]"),
    ("part bool", "POST", "/stitch", {"message_parts": [True]}, None, "application/json", 400, "bad_request",
     "message_parts[0]"),
    ("part list", "POST", "/stitch", {"message_parts": [["a.mp3"]]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("empty key", "POST", "/stitch", {"message_parts": [""]}, None, "application/json", 400, "bad_request",
     "message_parts[0]"),
    ("blank key", "POST", "/stitch", {"message_parts": ["   "]}, None, "application/json", 400, "bad_request",
     "message_parts[0]"),
    ("dotdot key", "POST", "/stitch", {"message_parts": ["../etc/passwd"]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("control char key", "POST", "/stitch", {"message_parts": ["a\x00b.mp3"]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("newline key", "POST", "/stitch", {"message_parts": ["a\nb.mp3"]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("key too long", "POST", "/stitch", {"message_parts": ["k" * 1025]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("key too long in utf-8", "POST", "/stitch", {"message_parts": ["é" * 600]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("part with key and url", "POST", "/stitch", {"message_parts": [{"key": "a", "url": "https://x.org/a"}]},
     None, "application/json", 400, "bad_request", "message_parts[0]"),
    ("part with neither", "POST", "/stitch", {"message_parts": [{"start_s": 1}]}, None, "application/json", 400,
     "bad_request", "message_parts[0]"),
    ("part unknown field", "POST", "/stitch", {"message_parts": [{"key": "a", "volume": 2}]}, None,
     "application/json", 400, "bad_request", "message_parts[0].volume"),
    ("part key number", "POST", "/stitch", {"message_parts": [{"key": 5}]}, None, "application/json", 400,
     "bad_request", "message_parts[0].key"),
    ("missing key", "POST", "/stitch", {"message_parts": [REAL_KEY, "nope/missing.mp3"]}, None,
     "application/json", 400, "part_not_found", None),
    # -- trims and gains
    ("end_s zero", "POST", "/stitch", part(end_s=0), None, "application/json", 400, "bad_request",
     "message_parts[0].end_s"),
    ("end_s negative", "POST", "/stitch", part(end_s=-1), None, "application/json", 400, "bad_request",
     "message_parts[0].end_s"),
    ("end before start", "POST", "/stitch", part(start_s=0.4, end_s=0.2), None, "application/json", 400,
     "bad_request", "message_parts[0].end_s"),
    ("end equals start", "POST", "/stitch", part(start_s=0.3, end_s=0.3), None, "application/json", 400,
     "bad_request", "message_parts[0].end_s"),
    ("start negative", "POST", "/stitch", part(start_s=-0.1), None, "application/json", 400, "bad_request",
     "message_parts[0].start_s"),
    ("start string", "POST", "/stitch", part(start_s="1"), None, "application/json", 400, "bad_request",
     "message_parts[0].start_s"),
    ("start bool", "POST", "/stitch", part(start_s=True), None, "application/json", 400, "bad_request",
     "message_parts[0].start_s"),
    ("start past the end", "POST", "/stitch", part(start_s=30), None, "application/json", 400, "bad_request",
     "message_parts[0].start_s"),
    ("end past the end", "POST", "/stitch", part(end_s=30), None, "application/json", 400, "bad_request",
     "message_parts[0].end_s"),
    ("start huge", "POST", "/stitch", part(start_s=1e300), None, "application/json", 400, "bad_request",
     "message_parts[0].start_s"),
    ("gain too loud", "POST", "/stitch", part(gain_db=61), None, "application/json", 400, "bad_request",
     "message_parts[0].gain_db"),
    ("gain null string", "POST", "/stitch", part(gain_db="loud"), None, "application/json", 400, "bad_request",
     "message_parts[0].gain_db"),
    # -- output options
    ("format unknown", "POST", "/stitch", stitch(format="aiff"), None, "application/json", 400, "bad_request",
     "format"),
    ("format number", "POST", "/stitch", stitch(format=3), None, "application/json", 400, "bad_request", "format"),
    ("ogg at 8k", "POST", "/stitch", stitch(format="ogg", bitrate="8k"), None, "application/json", 400,
     "bad_request", "bitrate"),
    ("ogg 320k mono 8 kHz", "POST", "/stitch", stitch(format="ogg", bitrate="320k", sample_rate=8000, channels=1),
     None, "application/json", 400, "bad_request", "bitrate"),
    ("ogg 40k stereo from 44.1 kHz input", "POST", "/stitch", stitch(format="ogg", bitrate="40k"), None,
     "application/json", 400, "bad_request", "bitrate"),
    ("bitrate 7k", "POST", "/stitch", stitch(bitrate="7k"), None, "application/json", 400, "bad_request", "bitrate"),
    ("bitrate 321k", "POST", "/stitch", stitch(bitrate="321k"), None, "application/json", 400, "bad_request",
     "bitrate"),
    ("bitrate words", "POST", "/stitch", stitch(bitrate="fast"), None, "application/json", 400, "bad_request",
     "bitrate"),
    ("bitrate on wav", "POST", "/stitch", stitch(format="wav", bitrate="128k"), None, "application/json", 400,
     "bad_request", "bitrate"),
    ("bitrate list", "POST", "/stitch", stitch(bitrate=["128k"]), None, "application/json", 400, "bad_request",
     "bitrate"),
    ("sample rate odd", "POST", "/stitch", stitch(sample_rate=44000), None, "application/json", 400,
     "bad_request", "sample_rate"),
    ("sample rate float", "POST", "/stitch", stitch(sample_rate=44100.5), None, "application/json", 400,
     "bad_request", "sample_rate"),
    ("channels 3", "POST", "/stitch", stitch(channels=3), None, "application/json", 400, "bad_request", "channels"),
    ("channels 0", "POST", "/stitch", stitch(channels=0), None, "application/json", 400, "bad_request", "channels"),
    ("gap negative", "POST", "/stitch", stitch(gap_ms=-5), None, "application/json", 400, "bad_request", "gap_ms"),
    ("gap too long", "POST", "/stitch", stitch(gap_ms=60001), None, "application/json", 400, "bad_request",
     "gap_ms"),
    ("gap and crossfade", "POST", "/stitch", stitch(gap_ms=10, crossfade_ms=10), None, "application/json", 400,
     "bad_request", "crossfade_ms"),
    ("fade in longer than output", "POST", "/stitch", stitch(fade_in_ms=5000), None, "application/json", 400,
     "bad_request", "fade_in_ms"),
    ("fade out huge", "POST", "/stitch", stitch(fade_out_ms=10**9), None, "application/json", 400, "bad_request",
     "fade_out_ms"),
    ("loudness too loud", "POST", "/stitch", stitch(loudness_lufs=0), None, "application/json", 400,
     "bad_request", "loudness_lufs"),
    ("async string", "POST", "/stitch", stitch(**{"async": "yes"}), None, "application/json", 400, "bad_request",
     "async"),
    ("unknown top-level field", "POST", "/stitch", stitch(callback="x"), None, "application/json", 400,
     "bad_request", "callback"),
    # -- notification targets
    ("email number", "POST", "/stitch", stitch(notify_email=5), None, "application/json", 400, "bad_request",
     "notify_email"),
    ("email no at", "POST", "/stitch", stitch(notify_email="nobody"), None, "application/json", 400, "bad_request",
     "notify_email"),
    ("email with header injection", "POST", "/stitch", stitch(notify_email="a@b.com\r\nBcc: c@d.com"), None,
     "application/json", 400, "bad_request", "notify_email"),
    ("email too long", "POST", "/stitch", stitch(notify_email="a" * 250 + "@b.com"), None, "application/json", 400,
     "bad_request", "notify_email"),
    ("webhook ftp", "POST", "/stitch", stitch(webhook_url="ftp://example.com/x"), None, "application/json", 400,
     "bad_request", "webhook_url"),
    ("webhook no host", "POST", "/stitch", stitch(webhook_url="https:///x"), None, "application/json", 400,
     "bad_request", "webhook_url"),
    ("webhook bad port", "POST", "/stitch", stitch(webhook_url="https://example.com:99999/x"), None,
     "application/json", 400, "bad_request", "webhook_url"),
    ("webhook metadata address", "POST", "/stitch", stitch(webhook_url="http://169.254.169.254/latest"), None,
     "application/json", 400, "source_refused", "webhook_url"),
    ("webhook loopback", "POST", "/stitch", stitch(webhook_url="http://127.0.0.1:9/hook"), None,
     "application/json", 400, "source_refused", "webhook_url"),
    ("url part private", "POST", "/stitch", {"message_parts": [{"url": "http://10.0.0.1/a.mp3"}]}, None,
     "application/json", 400, "source_refused", "message_parts[0].url"),
    ("url part file scheme", "POST", "/stitch", {"message_parts": [{"url": "file:///etc/passwd"}]}, None,
     "application/json", 400, "bad_request", "message_parts[0].url"),
    ("url part with space", "POST", "/stitch", {"message_parts": [{"url": "https://a b.com/x"}]}, None,
     "application/json", 400, "bad_request", "message_parts[0].url"),
    ("url too long", "POST", "/stitch", {"message_parts": [{"url": "https://example.com/" + "a" * 2100}]}, None,
     "application/json", 400, "bad_request", "message_parts[0].url"),
    # -- uploads
    ("upload no filename", "POST", "/uploads", {}, None, "application/json", 400, "bad_request", "filename"),
    ("upload filename number", "POST", "/uploads", {"filename": 1}, None, "application/json", 400, "bad_request",
     "filename"),
    ("upload filename path", "POST", "/uploads", {"filename": "a/b.mp3"}, None, "application/json", 400,
     "bad_request", "filename"),
    ("upload filename backslash", "POST", "/uploads", {"filename": "a\\b.mp3"}, None, "application/json", 400,
     "bad_request", "filename"),
    ("upload filename dotdot", "POST", "/uploads", {"filename": ".."}, None, "application/json", 400,
     "bad_request", "filename"),
    ("upload filename blank", "POST", "/uploads", {"filename": " "}, None, "application/json", 400, "bad_request",
     "filename"),
    ("upload filename too long", "POST", "/uploads", {"filename": "a" * 201}, None, "application/json", 400,
     "bad_request", "filename"),
    ("upload filename control", "POST", "/uploads", {"filename": "a\x07.mp3"}, None, "application/json", 400,
     "bad_request", "filename"),
    ("upload extra field", "POST", "/uploads", {"filename": "a.mp3", "size": 3}, None, "application/json", 400,
     "bad_request", "size"),
    ("upload body list", "POST", "/uploads", ["a.mp3"], None, "application/json", 400, "bad_request", "body"),
    # -- routes, methods, content types
    ("no content type", "POST", "/stitch", None, "{}", None, 400, "bad_request", "message_parts"),
    ("text/plain", "POST", "/stitch", OK_PART, None, "text/plain", 415, "unsupported_media_type", "Content-Type"),
    ("form encoded", "POST", "/uploads", None, "filename=a.mp3", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type", "Content-Type"),
    ("xml", "POST", "/stitch", None, "<stitch/>", "application/xml", 415, "unsupported_media_type", "Content-Type"),
    ("PUT /stitch", "PUT", "/stitch", OK_PART, None, "application/json", 405, "method_not_allowed", "method"),
    ("DELETE /jobs/x", "DELETE", "/jobs/" + "a" * 64, None, None, "application/json", 405, "method_not_allowed",
     "method"),
    ("POST /health", "POST", "/health", {}, None, "application/json", 405, "method_not_allowed", "method"),
    ("GET /uploads", "GET", "/uploads", None, None, None, 405, "method_not_allowed", "method"),
    ("job id not hex", "GET", "/jobs/not-a-job", None, None, None, 404, "not_found", "job_id"),
    ("job id unknown", "GET", "/jobs/" + "0" * 64, None, None, None, 404, "not_found", "job_id"),
    ("job id uppercase", "GET", "/jobs/" + "A" * 64, None, None, None, 404, "not_found", "job_id"),
    ("job id percent-encoded surrogate", "GET", "/jobs/%ED%A0%80", None, None, None, 404, "not_found", "job_id"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with api_client(tmp_path_factory.mktemp("badinput")) as (client, env):
        yield client, env


@pytest.mark.parametrize(("method", "path", "body", "raw", "content_type", "status", "code", "field"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx_naming_the_field(api, method, path, body, raw, content_type, status, code,
                                                     field):
    client, env = api
    r = send(client, method, path, body, raw=raw, content_type=content_type)
    assert r.status_code == status, r.body
    error = assert_error_shape(r, names_what=status != 405 or field is not None)
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    else:
        assert "field" in error or "part" in error, error
    # Whatever the input was, the answer is ours: no tool output, no trace, no internal path.
    for leak in ("Traceback", "ffmpeg", "botocore", env.settings.work_dir, "Errno"):
        assert leak not in error["message"], error


def test_missing_part_names_the_part_index(api):
    client, _ = api
    r = send(client, "POST", "/stitch", {"message_parts": [REAL_KEY, "nope/missing.mp3"]})
    assert r.status_code == 400 and assert_error_shape(r)["part"] == 1


def test_ssrf_refusal_names_the_rule_not_the_address(api):
    client, _ = api
    r = send(client, "POST", "/stitch", stitch(webhook_url="http://localhost:9/hook"))
    error = assert_error_shape(r)
    assert r.status_code == 400 and error["code"] == "source_refused"
    assert "127.0.0.1" not in error["message"] and "::1" not in error["message"], error


def test_the_corpus_is_large_and_every_case_is_distinct():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({json.dumps(c[1:6], default=repr) for c in CASES}) == len(CASES)
