"""fetch_url / identify_url with the real yt-dlp (generic extractor) against tests/httpserver.py.

Loopback is allowed by the test setting; every socket connect is recorded and must go to
127.0.0.1 only. S3 is moto's in-process mock.
"""
from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from chalicelib.config import Settings
from chalicelib.errors import SourceRefused, SourceUnavailable, TransientError, UnsupportedAudio
from chalicelib.sources import url as sources
from chalicelib.sources import ytdlp
from chalicelib.sources.cache import SourceCache
from chalicelib.sources.rules import generic_id
from chalicelib.store import Store
from tests.audio import decoded_duration, make_tone
from tests.httpserver import LocalServer

BUCKET = "audio-stitch-input-test"


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    d = tmp_path_factory.mktemp("tones")
    return {
        "short": make_tone(d / "short.mp3", 1.0).read_bytes(),
        "long": make_tone(d / "long.mp3", 4.0, freq=330).read_bytes(),
    }


@pytest.fixture(scope="module")
def server(tones):
    with LocalServer() as srv:
        srv.add_file("/a.mp3", tones["short"])
        srv.add_file("/stream", tones["short"], "application/octet-stream")
        srv.add_file("/long.mp3", tones["long"])
        srv.add_file("/noise.mp3", b"\x00not audio at all\xff" * 200)
        srv.add_html("/page.html")
        srv.add_cut_off("/cut.mp3", tones["short"], send=2000)
        srv.add_stall("/slow.mp3", tones["short"])
        srv.add_drip("/drip.mp3", tones["short"], interval=0.05)
        srv.add_chunked("/chunked.mp3", tones["short"])
        srv.add_status("/busy.mp3", 503)
        srv.add_redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
        srv.add_redirect("/to-private", "http://10.0.0.1/a.mp3")
        srv.add_redirect("/to-ftp", "ftp://127.0.0.1/a.mp3")
        srv.add_redirect("/to-a", "/a.mp3")
        yield srv


@pytest.fixture
def connects(monkeypatch):
    """Record every outgoing TCP connect; the test fails if one leaves 127.0.0.1."""
    seen: list = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        seen.append(address)
        assert address[0] == "127.0.0.1", f"connection attempted to {address}"
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def settings(tmp_path):
    return Settings(allow_loopback_urls=True, bucket_input=BUCKET, work_dir=str(tmp_path / "work"),
                    max_source_seconds=2)


@pytest.fixture(autouse=True)
def quick_network(monkeypatch):
    # One attempt, short read timeout: the stalled server would otherwise hold a test for 20 s.
    monkeypatch.setattr(ytdlp, "SOCKET_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(ytdlp, "RETRIES", 0)
    monkeypatch.setattr(sources, "_INFO_MEMO", {})  # each test starts without remembered metadata


def cache_keys(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def fetch(url, tmp_path, settings, s3, index=0, name="job"):
    return sources.fetch_url(url, index=index, workdir=tmp_path / name, settings=settings,
                             cache=SourceCache(Store(s3), settings))


def failed(kind, url, tmp_path, settings, s3, index=2):
    """Fetch expecting ``kind``; check the part index and that nothing was left behind."""
    with pytest.raises(kind) as info:
        fetch(url, tmp_path, settings, s3, index=index)
    err = info.value
    assert err.part == index
    assert err.message.startswith(f"part {index} ({url}): ")
    assert cache_keys(s3) == []
    assert list((tmp_path / "job").iterdir()) == []
    return err


def test_fetch_then_cache_hit_without_touching_the_server(server, tmp_path, settings, s3, connects, tones):
    url = server.url("/a.mp3")
    before = server.hits("/a.mp3")
    first = fetch(url, tmp_path, settings, s3, index=1)
    assert first.cached is False
    assert first.source_id == f"generic:{generic_id(url)}"
    assert first.path == tmp_path / "job" / "url-1.mp3"
    assert first.path.read_bytes() == tones["short"]  # no re-encode at download
    assert abs(first.duration_s - 1.0) < 0.1  # measured: the generic extractor gives no duration
    assert abs(decoded_duration(first.path) - 1.0) < 0.1
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["url-1.mp3"]
    key = f"sources/generic/{generic_id(url)}.mp3"
    assert cache_keys(s3) == [key]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == tones["short"]
    hits_after_first = server.hits("/a.mp3")
    assert hits_after_first > before

    second = fetch(url, tmp_path, settings, s3, index=0, name="job2")
    assert second.cached is True
    assert server.hits("/a.mp3") == hits_after_first  # served from S3 alone
    assert second.path.read_bytes() == tones["short"]
    assert second.source_id == first.source_id
    assert second.duration_s == pytest.approx(first.duration_s, abs=0.001)
    assert second.title == first.title == "a"


def test_identify_url_reads_metadata_only(server, tmp_path, settings, connects):
    info = sources.identify_url(server.url("/a.mp3"), index=0, settings=settings)
    assert (info.extractor, info.ext, info.is_live, info.duration_s) == ("generic", "mp3", False, None)
    assert info.source_id == f"generic:{generic_id(server.url('/a.mp3'))}" and info.id == generic_id(server.url("/a.mp3"))
    assert not any(Path(settings.work_dir).rglob("*.mp3"))


def test_octet_stream_link_is_fetched_and_measured(server, tmp_path, settings, s3, connects):
    got = fetch(server.url("/stream"), tmp_path, settings, s3)
    assert got.path.suffix == ".bin" and abs(got.duration_s - 1.0) < 0.1


def test_redirect_to_an_allowed_address_is_followed(server, tmp_path, settings, s3, connects, tones):
    got = fetch(server.url("/to-a"), tmp_path, settings, s3)
    assert got.path.read_bytes() == tones["short"]
    assert got.source_id == f"generic:{generic_id(server.url('/to-a'))}"


def test_chunked_response_without_length(server, tmp_path, settings, s3, connects, tones):
    assert fetch(server.url("/chunked.mp3"), tmp_path, settings, s3).path.read_bytes() == tones["short"]


def test_404(server, tmp_path, settings, s3, connects):
    err = failed(SourceUnavailable, server.url("/nope.mp3"), tmp_path, settings, s3)
    assert err.message.endswith("HTTP 404 not found")


def test_html_page(server, tmp_path, settings, s3, connects):
    err = failed(SourceUnavailable, server.url("/page.html"), tmp_path, settings, s3)
    assert "unsupported URL" in err.message


def test_too_long_file_is_refused_after_measuring(server, tmp_path, settings, s3, connects):
    err = failed(SourceRefused, server.url("/long.mp3"), tmp_path, settings, s3)
    assert err.message.endswith("is 0:04 long, over the 0:02 limit")


def test_not_audio(server, tmp_path, settings, s3, connects):
    err = failed(UnsupportedAudio, server.url("/noise.mp3"), tmp_path, settings, s3)
    assert "not decodable audio" in err.message


def test_cut_off_midway(server, tmp_path, settings, s3, connects, tones):
    err = failed(SourceUnavailable, server.url("/cut.mp3"), tmp_path, settings, s3)
    assert f"cut off midway (got 2000 of {len(tones['short'])} bytes)" in err.message


def test_stalled_response_times_out_as_transient(server, tmp_path, settings, s3, connects):
    err = failed(TransientError, server.url("/slow.mp3"), tmp_path, settings, s3)
    assert "timed out" in err.message and err.permanent is False


def test_dripping_server_hits_the_wall_clock_deadline(server, tmp_path, settings, s3, connects, monkeypatch):
    """Each byte arrives within the socket timeout; only the overall deadline stops it."""
    monkeypatch.setattr(sources, "DOWNLOAD_DEADLINE_SECONDS", 0.6)
    err = failed(SourceUnavailable, server.url("/drip.mp3"), tmp_path, settings, s3)
    assert err.message.endswith("the download did not finish within 0.6 s (the server is too slow)")


def test_server_error_is_transient(server, tmp_path, settings, s3, connects):
    err = failed(TransientError, server.url("/busy.mp3"), tmp_path, settings, s3)
    assert "HTTP 503" in err.message


@pytest.mark.parametrize("path", ["/a.mp3", "/chunked.mp3"])
def test_over_the_size_cap(server, tmp_path, settings, s3, connects, path):
    small = dataclasses.replace(settings, max_source_bytes=5000)
    err = failed(SourceRefused, server.url(path), tmp_path, small, s3)
    assert err.message.endswith("file is larger than the 5000 byte limit")


def test_unreachable_host(tmp_path, settings, s3, connects):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    err = failed(SourceUnavailable, f"http://127.0.0.1:{port}/a.mp3", tmp_path, settings, s3)
    assert "host unreachable" in err.message


@pytest.mark.parametrize("path, words", [
    ("/to-metadata", "redirected to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is the "
                     "link-local instance metadata address"),
    ("/to-private", "redirected to http://10.0.0.1/a.mp3: 10.0.0.1 is a private address"),
    ("/to-ftp", "redirected to ftp://127.0.0.1/a.mp3: scheme 'ftp' is not allowed (only http and https)"),
])
def test_redirect_to_a_refused_address(server, tmp_path, settings, s3, connects, path, words):
    """Refused before connecting: the only connections made are to the local server."""
    err = failed(SourceRefused, server.url(path), tmp_path, settings, s3)
    assert err.message.endswith(words)
    assert connects and all(addr == ("127.0.0.1", server.port) for addr in connects)


def test_refused_up_front_without_any_request(server, tmp_path, s3, connects):
    strict = Settings(bucket_input=BUCKET, work_dir=str(tmp_path / "work"))  # loopback not allowed
    before = len(server.requests)
    with pytest.raises(SourceRefused) as info:
        fetch(server.url("/a.mp3"), tmp_path, strict, s3, index=5)
    assert info.value.part == 5 and "127.0.0.1 is a loopback address" in info.value.message
    with pytest.raises(SourceRefused) as info:
        sources.identify_url("http://169.254.169.254/latest/", index=1, settings=strict)
    assert info.value.part == 1 and "instance metadata" in info.value.message
    assert len(server.requests) == before and connects == []


def test_refusal_of_a_long_url_names_it_once(tmp_path, s3, connects):
    strict = Settings(bucket_input=BUCKET, work_dir=str(tmp_path / "work"))
    url = "http://127.0.0.1/" + "a" * 300 + ".mp3"
    with pytest.raises(SourceRefused) as info:
        fetch(url, tmp_path, strict, s3, index=2)
    assert info.value.part == 2 and info.value.message.count("http://") == 1
    assert info.value.message.endswith("...): 127.0.0.1 is a loopback address")
    assert connects == []


def test_dns_rebinding_is_caught_at_connect(server, tmp_path, settings, s3, connects, monkeypatch):
    """The name passes the up-front check, then resolves to a private address: never dialled."""
    answers = iter([["127.0.0.1"]])
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host != "media.test":
            return real(host, port, *args, **kwargs)
        addr = next(answers, ["10.0.0.1"])[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://media.test:{server.port}/a.mp3"
    err = failed(SourceRefused, url, tmp_path, settings, s3)
    assert "media.test resolves to a private address" in err.message and "10.0.0.1" not in err.message
    assert connects == []


def test_cached_source_over_todays_limits_is_refused(server, tmp_path, settings, s3, connects):
    url = server.url("/a.mp3")
    key = f"sources/generic/{generic_id(url)}.mp3"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 6000, Metadata={"duration": "1.0"})
    small = dataclasses.replace(settings, max_source_bytes=5000)
    with pytest.raises(SourceRefused, match="larger than the 5000 byte limit"):
        fetch(url, tmp_path, small, s3)
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 100, Metadata={"duration": "3600.0"})
    with pytest.raises(SourceRefused, match="over the 0:02 limit"):
        fetch(url, tmp_path, settings, s3)
    assert list((tmp_path / "job").iterdir()) == []


def test_an_unusable_cache_does_not_fail_the_fetch(server, tmp_path, settings, s3, connects, tones):
    no_bucket = dataclasses.replace(settings, bucket_input="no-such-bucket")
    got = fetch(server.url("/a.mp3"), tmp_path, no_bucket, s3)
    assert got.cached is False and got.path.read_bytes() == tones["short"]
    assert cache_keys(s3) == []


def test_only_the_guarded_handler_is_installed(settings):
    ydl, connector = ytdlp.new_ydl(settings, ytdlp.Collector())
    with ydl:
        handlers = list(ydl._request_director.handlers.values())
        assert [type(h).__name__ for h in handlers] == ["GuardedUrllibRH"]  # not requests/curl_cffi
        assert handlers[0].connector is connector


def test_proxy_settings_in_the_environment_are_ignored(server, tmp_path, settings, s3, connects,
                                                       monkeypatch, tones):
    # A proxy would open the connection on our behalf, where the guard cannot see it.
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://10.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    got = fetch(server.url("/a.mp3"), tmp_path, settings, s3)
    assert got.path.read_bytes() == tones["short"]
    assert connects and all(addr[0] == "127.0.0.1" for addr in connects)


def test_sources_module_imports_no_ytdlp():
    import subprocess
    import sys

    code = ("import sys, chalicelib.sources.url, chalicelib.sources.bucket, chalicelib.urlguard; "
            "print(sorted(m for m in ('yt_dlp', 'pydub', 'mutagen', 'urllib.request') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "[]"


def test_fetch_after_identify_reuses_the_metadata(server, tmp_path, settings, s3, connects, tones):
    url = server.add_file("/identified.mp3", tones["short"])
    info = sources.identify_url(url, index=0, settings=settings)
    assert server.hits("/identified.mp3") == 1  # metadata: headers of one GET
    got = fetch(url, tmp_path, settings, s3)
    assert server.hits("/identified.mp3") == 2  # the download only, no second extraction
    assert got.source_id == info.source_id and got.path.read_bytes() == tones["short"]
    fetch(url, tmp_path, settings, s3, name="again")  # memo used once; now the S3 cache answers
    assert server.hits("/identified.mp3") == 2


def test_identify_url_has_a_deadline_too(server, settings, connects, monkeypatch):
    monkeypatch.setattr(sources, "METADATA_DEADLINE_SECONDS", 0.3)
    server.add_drip("/drip-page", b"<html>" + b" " * 2000, interval=0.05, content_type="text/html")
    with pytest.raises(SourceUnavailable) as info:
        sources.identify_url(server.url("/drip-page"), index=6, settings=settings)
    assert info.value.part == 6
    assert info.value.message.endswith("reading the metadata did not finish within 0.3 s (the server is too slow)")


def test_youtube_video_in_the_source_cache_needs_no_request(tmp_path, settings, s3, connects, monkeypatch, tones):
    """The cache key comes from the video id in the URL: no extraction, no connection at all."""
    lookups = []

    def public_dns(host, port, *args, **kwargs):  # no real DNS query leaves the machine
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("142.250.74.110", port))]

    monkeypatch.setattr(socket, "getaddrinfo", public_dns)
    s3.put_object(Bucket=BUCKET, Key="sources/youtube/dQw4w9WgXcQ.mp3", Body=tones["short"],
                  Metadata={"duration": "1.045", "title": "Never%20Gonna"})
    got = fetch("https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL0&t=3", tmp_path, settings, s3, index=1)
    assert (got.cached, got.source_id, got.title) == (True, "youtube:dQw4w9WgXcQ", "Never Gonna")
    assert got.path == tmp_path / "job" / "url-1.mp3" and got.path.read_bytes() == tones["short"]
    assert got.duration_s == pytest.approx(1.045)
    assert connects == [] and lookups == ["www.youtube.com"]  # the up-front SSRF check only
