"""S3 adapter against moto: head/404, pinned downloads, single-object uploads, presigned links."""
from __future__ import annotations

import base64
import calendar
import json
import os
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from moto import mock_aws

from chalicelib.errors import TransientError
from chalicelib.store import ObjectChanged, ObjectMissing, Store, as_transient, iso, parse_expiration

BUCKET = "store-test"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1", config=Config(signature_version="s3v4"))
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_head_returns_size_etag_metadata_and_none_for_missing(s3):
    s3.put_object(Bucket=BUCKET, Key="a.mp3", Body=b"x" * 1234, Metadata={"Duration-S": "1.5"})
    store = Store(s3)
    info = store.head(BUCKET, "a.mp3")
    assert info.size == 1234 and info.etag and '"' not in info.etag
    assert info.metadata == {"duration-s": "1.5"}
    assert store.head(BUCKET, "missing.mp3") is None


def test_head_many_keeps_order_and_marks_missing(s3):
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"k{i}", Body=b"y" * (i + 1))
    infos = Store(s3).head_many(BUCKET, ["k3", "nope", "k0", "k4"])
    assert [i.size if i else None for i in infos] == [4, None, 1, 5]


def test_download_writes_file_and_is_pinned_to_the_etag(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="a.bin", Body=b"first")
    store = Store(s3)
    etag = store.head(BUCKET, "a.bin").etag
    out = store.download(BUCKET, "a.bin", tmp_path / "a.bin", etag=etag)
    assert out.read_bytes() == b"first"
    s3.put_object(Bucket=BUCKET, Key="a.bin", Body=b"second")
    with pytest.raises(ObjectChanged):
        store.download(BUCKET, "a.bin", tmp_path / "b.bin", etag=etag)
    with pytest.raises(ObjectMissing):
        store.download(BUCKET, "gone.bin", tmp_path / "c.bin")
    # Nothing half-written is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_download_by_version_id_gets_that_version(s3, tmp_path):
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=BUCKET, Key="v.bin", Body=b"one")
    store = Store(s3)
    first = store.head(BUCKET, "v.bin")
    s3.put_object(Bucket=BUCKET, Key="v.bin", Body=b"two")
    assert store.download(BUCKET, "v.bin", tmp_path / "v", version_id=first.version_id).read_bytes() == b"one"


def test_upload_sets_type_disposition_metadata_in_one_put(s3, tmp_path):
    src = tmp_path / "out.mp3"
    src.write_bytes(b"\xff\xfb" * 1000)
    Store(s3).upload(src, BUCKET, "cache/k.mp3", content_type="audio/mpeg", filename="stitched-k.mp3",
                     metadata={"duration-s": "2.000"})
    head = s3.head_object(Bucket=BUCKET, Key="cache/k.mp3")
    assert head["ContentType"] == "audio/mpeg"
    assert head["ContentDisposition"] == 'attachment; filename="stitched-k.mp3"'
    assert head["Metadata"] == {"duration-s": "2.000"}
    assert "-" not in head["ETag"]  # a single PUT, not a multipart upload


def test_large_upload_goes_multipart(s3, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    Store(s3, multipart_threshold=5 * 1024 * 1024).upload(
        src, BUCKET, "cache/big.bin", content_type="application/octet-stream", filename="big.bin")
    head = s3.head_object(Bucket=BUCKET, Key="cache/big.bin")
    assert head["ContentLength"] == 6 * 1024 * 1024 and "-" in head["ETag"]  # multipart ETag


def test_presigned_get_and_post_carry_key_expiry_and_size_cap(s3):
    store = Store(s3, clock=lambda: 1_700_000_000)
    url, expires_at = store.presign_get(BUCKET, "cache/k.mp3", 3600)
    q = parse_qs(urlsplit(url).query)
    assert "cache/k.mp3" in urlsplit(url).path and q["X-Amz-Expires"] == ["3600"]
    assert expires_at == iso(1_700_003_600) == "2023-11-14T23:13:20Z"
    url, fields, expires_at = store.presign_post(BUCKET, "uploads/x/a.mp3", 60, 1000)
    assert fields["key"] == "uploads/x/a.mp3" and expires_at == iso(1_700_000_060)
    # S3 checks the signed policy: an empty file or one over the cap is refused by S3 itself.
    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 1, 1000] in policy["conditions"]


def test_json_sidecar_round_trip(s3):
    store = Store(s3)
    store.put_json(BUCKET, "cache/k.json", {"parts": [1, 2]})
    assert store.get_json(BUCKET, "cache/k.json") == {"parts": [1, 2]}
    assert store.get_json(BUCKET, "cache/none.json") is None


def test_parse_expiration_header():
    header = 'expiry-date="Fri, 23 Dec 2012 00:00:00 GMT", rule-id="expire-cache"'
    assert parse_expiration(header) == calendar.timegm((2012, 12, 23, 0, 0, 0))
    assert parse_expiration(None) is None and parse_expiration('rule-id="x"') is None


def _client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "Op")


def test_as_transient_classifies_botocore_errors():
    assert isinstance(as_transient(_client_error("SlowDown", 503)), TransientError)
    assert isinstance(as_transient(_client_error("ProvisionedThroughputExceededException", 400)), TransientError)
    assert isinstance(as_transient(_client_error("InternalError", 500)), TransientError)
    assert isinstance(as_transient(EndpointConnectionError(endpoint_url="http://x")), TransientError)
    assert isinstance(as_transient(ReadTimeoutError(endpoint_url="http://x")), TransientError)
    assert isinstance(as_transient(ConnectionClosedError(endpoint_url="http://x")), TransientError)
    assert isinstance(as_transient(ResponseStreamingError(error="reset")), TransientError)
    assert as_transient(_client_error("AccessDenied", 403)) is None
    assert as_transient(ValueError("x")) is None


def test_throttled_upload_is_transient(s3, tmp_path):
    # boto3's managed upload wraps the ClientError in S3UploadFailedError; the throttling must still show.
    src = tmp_path / "out.mp3"
    src.write_bytes(b"\xff\xfb" * 100)

    def slow_down(*_a, **_k):
        raise _client_error("SlowDown", 503)

    s3.put_object = slow_down  # the single PUT under upload_file
    with pytest.raises(TransientError):
        Store(s3).upload(src, BUCKET, "cache/k.mp3", content_type="audio/mpeg", filename="k.mp3")
