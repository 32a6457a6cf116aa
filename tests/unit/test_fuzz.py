"""Property-based fuzzing of the API in-process: whatever the body, no 5xx, and every error in the
documented shape. Bounded examples and no shrinking budget to speak of: it runs in seconds."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.options import FORMATS
from tests.unit.badinput import api_client, assert_error_shape, send

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Every code point, lone surrogates included: JSON can carry them as \ud800 escapes.
TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False), TEXT)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
NUMBERISH = st.one_of(st.integers(-100_000, 700_000), st.floats(-1e6, 1e6, allow_nan=False), TEXT, st.none(),
                      st.booleans())
# Keys that do not exist: an existing one would render, and the fuzzer is about answers, not audio.
MISSING_KEYS = st.sampled_from(["nope/a.mp3", "x.wav", "uploads/z/y.flac"])
PART = st.one_of(
    MISSING_KEYS, TEXT, ANY_JSON,
    st.fixed_dictionaries({"key": st.one_of(MISSING_KEYS, TEXT)},
                          optional={"start_s": NUMBERISH, "end_s": NUMBERISH, "gain_db": NUMBERISH,
                                    "extra": ANY_JSON}),
    st.fixed_dictionaries({"url": st.one_of(st.sampled_from(
        ["http://127.0.0.1/a.mp3", "https://10.1.2.3/x", "ftp://example.com/a", "http://[::1]:80/",
         "http://169.254.169.254/latest/meta-data", "https://localhost/x", "http://0x7f000001/"]), TEXT)}),
)
STITCH = st.fixed_dictionaries(
    {"message_parts": st.one_of(st.lists(PART, max_size=5), ANY_JSON)},
    optional={"format": st.one_of(st.sampled_from([*FORMATS, "MP3", "aiff", ""]), ANY_JSON),
              "bitrate": st.one_of(st.sampled_from(["8k", "16k", "45k", "128k", "320k", "321k", "k", "64"]),
                                   NUMBERISH),
              "sample_rate": NUMBERISH, "channels": NUMBERISH, "gap_ms": NUMBERISH, "crossfade_ms": NUMBERISH,
              "fade_in_ms": NUMBERISH, "fade_out_ms": NUMBERISH, "loudness_lufs": NUMBERISH,
              "notify_email": st.one_of(st.just("a@example.com"), TEXT, ANY_JSON),
              "webhook_url": st.one_of(st.just("http://10.0.0.1/h"), TEXT, ANY_JSON),
              "async": ANY_JSON, "join": ANY_JSON, "unknown": ANY_JSON},
)
SEEN: dict[int, int] = {}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with api_client(tmp_path_factory.mktemp("fuzz")) as (client, env):
        yield client
    print(f"fuzz outcomes by status: {dict(sorted(SEEN.items()))}")


def _check(response) -> None:
    SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1
    assert response.status_code < 500, response.body
    if response.status_code >= 400:
        assert_error_shape(response, names_what=response.status_code in (400, 404, 415))


@FUZZ
@given(body=STITCH)
def test_stitch_answers_every_structured_body_without_a_5xx(api, body):
    _check(send(api, "POST", "/stitch", raw=json.dumps(body)))


@FUZZ
@given(body=ANY_JSON)
def test_stitch_and_uploads_answer_any_json_without_a_5xx(api, body):
    raw = json.dumps(body)
    _check(send(api, "POST", "/stitch", raw=raw))
    _check(send(api, "POST", "/uploads", raw=raw))


@FUZZ
@given(raw=st.binary(max_size=64), depth=st.integers(0, 2000), content_type=st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "multipart/form-data"]))
def test_raw_bytes_deep_nesting_and_content_types_never_5xx(api, raw, depth, content_type):
    _check(send(api, "POST", "/stitch", raw=raw, content_type=content_type or None))
    _check(send(api, "POST", "/uploads", raw="[" * depth + "]" * depth))


@FUZZ
@given(filename=st.one_of(TEXT, ANY_JSON), path=st.text(st.characters(codec=None, categories=None), min_size=1, max_size=70))
def test_uploads_and_job_ids_never_5xx(api, filename, path):
    _check(send(api, "POST", "/uploads", raw=json.dumps({"filename": filename})))
    from urllib.parse import quote

    _check(send(api, "GET", "/jobs/" + quote(path.encode("utf-8", "surrogatepass"), safe=""), content_type=None))
