"""audio_stitch.client at its HTTP edges, against a real local HTTP server: downloads are atomic,
non-API errors (API Gateway, S3 XML, no server) still become typed exceptions."""
from __future__ import annotations

import socket

import pytest

from audio_stitch.client import ApiError, Client, ClientError, ConnectionFailed, UploadSlot
from tests.httpserver import LocalServer


@pytest.fixture
def srv():
    with LocalServer() as server:
        yield server


def test_download_is_written_whole_or_not_at_all(srv, tmp_path):
    data = bytes(range(256)) * 400
    srv.add_file("/ok.mp3", data)
    srv.add_cut_off("/cut.mp3", data, send=5000)
    client = Client(srv.url("/"))
    seen = []
    out = client.download(srv.url("/ok.mp3"), tmp_path / "ok.mp3", progress=lambda done, total: seen.append(total))
    assert out.read_bytes() == data and seen[-1] == len(data)
    (tmp_path / "cut.mp3").write_bytes(b"previous")
    with pytest.raises(ConnectionFailed, match="cut off"):
        client.download(srv.url("/cut.mp3"), tmp_path / "cut.mp3")
    assert (tmp_path / "cut.mp3").read_bytes() == b"previous"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp3", "ok.mp3"]  # no temp file left


def test_errors_without_the_api_shape_are_still_typed(srv):
    srv.add_status("/stitch", 403)
    client = Client(srv.url("/"))
    with pytest.raises(ApiError) as forbidden:
        client.submit(["a.mp3"])
    assert forbidden.value.status == 403 and "--api-key" in forbidden.value.message
    with pytest.raises(ApiError) as missing:
        client.health()  # unknown path: the server's plain 404
    assert (missing.value.status, missing.value.code) == (404, "http_error")


def test_unreachable_api_is_connection_failed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(ConnectionFailed, match="cannot reach"):
            Client(f"http://127.0.0.1:{port}", timeout=5).health()


def test_api_url_must_be_http():
    with pytest.raises(ClientError, match="must start with http"):
        Client("127.0.0.1:8000")


def test_upload_slot_reads_both_forms():
    put = UploadSlot.from_dict({"key": "uploads/x/a.mp3", "upload_url": "http://s3/put", "method": "PUT",
                                "expires_at": "2026-01-01T00:00:00Z"})
    assert (put.method, put.url, put.fields) == ("PUT", "http://s3/put", {})
    post = UploadSlot.from_dict({"key": "uploads/x/a.mp3", "url": "http://s3/", "fields": {"key": "uploads/x/a.mp3"},
                                 "expires_at": None})
    assert (post.method, post.url, post.fields) == ("POST", "http://s3/", {"key": "uploads/x/a.mp3"})
