"""Source rules on yt-dlp info dicts (YouTube-shaped, hand-written): no network, no yt-dlp run."""
from __future__ import annotations

import copy
import io

import pytest

from chalicelib.config import Settings
from chalicelib.errors import SourceRefused, SourceUnavailable, TransientError
from chalicelib.sources.failures import classify_failure
from chalicelib.sources.rules import (
    cache_prefix,
    check_info,
    duration_refusal,
    extractor_refusal,
    generic_id,
    live_refusal,
    normalise_url,
    safe_ext,
    select_audio_format,
    single_video_url,
    source_identity,
)
from chalicelib.sources.url import identify_url, offline_identity

VIDEO_ID = "dQw4w9WgXcQ"
WATCH = f"https://www.youtube.com/watch?v={VIDEO_ID}"


def fmt(format_id, ext, vcodec, acodec, *, abr=None, tbr=None, protocol="https", **extra):
    return {"format_id": format_id, "ext": ext, "vcodec": vcodec, "acodec": acodec, "abr": abr,
            "tbr": tbr, "protocol": protocol, "url": f"https://rr1.googlevideo.com/videoplayback?itag={format_id}",
            **extra}


# Shaped like yt-dlp's YouTube info dict (process=False: formats in the extractor's order).
YOUTUBE_INFO = {
    "id": VIDEO_ID,
    "title": "Never Gonna Give You Up",
    "extractor": "youtube",
    "extractor_key": "Youtube",
    "webpage_url": WATCH,
    "duration": 213,
    "is_live": False,
    "live_status": "not_live",
    "formats": [
        fmt("sb0", "mhtml", "none", "none", protocol="mhtml", format_note="storyboard"),
        fmt("139", "m4a", "none", "mp4a.40.5", abr=48.8, asr=22050, format_note="low"),
        fmt("249", "webm", "none", "opus", abr=53.0, asr=48000, format_note="low"),
        fmt("140", "m4a", "none", "mp4a.40.2", abr=129.5, asr=44100, format_note="medium"),
        fmt("251-drc", "webm", "none", "opus", abr=140.0, asr=48000, format_note="medium, DRC"),
        fmt("251", "webm", "none", "opus", abr=135.9, asr=48000, format_note="medium"),
        fmt("233", "mp4", "none", "unknown", tbr=160.0, protocol="m3u8_native", format_note="Default"),
        fmt("18", "mp4", "avc1.42001E", "mp4a.40.2", tbr=500.0, format_note="360p"),
        fmt("137", "mp4", "avc1.640028", "none", tbr=4500.0, format_note="1080p"),
        fmt("22", "mp4", "avc1.64001F", "mp4a.40.2", tbr=1200.0, protocol="m3u8", format_note="720p"),
    ],
}

SETTINGS = Settings()


def youtube(**changes) -> dict:
    info = copy.deepcopy(YOUTUBE_INFO)
    info.update(changes)
    return info


# -- format choice --------------------------------------------------------------------------


def test_youtube_best_audio_only_format_is_chosen():
    chosen = select_audio_format(YOUTUBE_INFO["formats"])
    # Not 233 (HLS: yt-dlp may hand it to ffmpeg, which connects past the guard), not the DRC
    # variant despite its 140 kbps, never the muxed 18/22 or the video-only 137.
    assert chosen["format_id"] == "251"
    assert select_audio_format([f for f in YOUTUBE_INFO["formats"] if f["format_id"] != "251"])[
        "format_id"] == "140"


def test_video_formats_and_foreign_protocols_are_never_chosen():
    video_only = [f for f in YOUTUBE_INFO["formats"] if f["vcodec"] != "none"]
    assert select_audio_format(video_only) is None  # muxed 18 has audio but also video
    ffmpeg_hls = [fmt("a", "m4a", "none", "mp4a.40.2", abr=128, protocol="m3u8")]
    assert select_audio_format(ffmpeg_hls) is None  # ffmpeg would connect past the guard
    rtmp = [fmt("r", "flv", "none", "mp3", abr=128, protocol="rtmp")]
    assert select_audio_format(rtmp) is None
    hls = [fmt("h", "mp4", "none", "mp4a.40.2", abr=128, protocol="m3u8_native")]
    assert select_audio_format(hls) is None
    drm = [fmt("d", "m4a", "none", "mp4a.40.2", abr=128, has_drm=True)]
    assert select_audio_format(drm) is None


def test_original_language_track_beats_a_dub():
    formats = [fmt("140-dub", "m4a", "none", "mp4a.40.2", abr=160, language_preference=-1),
               fmt("140-orig", "m4a", "none", "mp4a.40.2", abr=128, language_preference=10)]
    assert select_audio_format(formats)["format_id"] == "140-orig"


def test_generic_direct_links():
    audio = {"format_id": "mpeg", "url": "https://cdn.example/a.mp3", "ext": "mp3", "vcodec": "none"}
    assert select_audio_format([audio]) is audio
    octet = {"url": "https://cdn.example/stream", "ext": "unknown_video"}  # codecs unknown
    assert select_audio_format([octet]) is octet
    # Unknown codecs are only the fallback when something says it is audio-only.
    assert select_audio_format([octet, audio]) is audio


# -- live, duration, extractor --------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    ({"is_live": True, "live_status": "is_live"}, "a live stream"),
    ({"is_live": None, "live_status": "is_live"}, "a live stream"),
    ({"is_live": False, "live_status": "is_upcoming"}, "upcoming"),
    ({"is_live": False, "live_status": "post_live"}, "just ended"),
])
def test_live_and_upcoming_streams_are_refused(changes, words):
    reason = live_refusal(youtube(**changes))
    assert reason and words in reason
    with pytest.raises(SourceRefused) as info:
        check_info(youtube(**changes), WATCH, index=4, settings=SETTINGS)
    assert words in info.value.message
    assert info.value.message.startswith(f"part 4 ({WATCH}): ")


@pytest.mark.parametrize("status", ["not_live", "was_live", None])
def test_recorded_media_is_not_live(status):
    assert live_refusal(youtube(live_status=status, is_live=False)) is None


def test_duration_cap():
    assert duration_refusal(1800, 1800) is None
    assert duration_refusal(None, 1800) is None  # unknown: measured after download
    assert duration_refusal(1801, 1800) == "is 30:01 long, over the 30:00 limit"
    assert duration_refusal(3 * 3600 + 5, 1800) == "is 3:00:05 long, over the 30:00 limit"
    with pytest.raises(SourceRefused) as info:
        check_info(youtube(duration=5400), WATCH, index=0, settings=SETTINGS)
    assert "1:30:00 long, over the 30:00 limit" in info.value.message
    short = Settings(max_source_seconds=200)
    with pytest.raises(SourceRefused):
        check_info(youtube(), WATCH, index=0, settings=short)


def test_extractor_allow_list():
    assert extractor_refusal(youtube(), ("youtube", "generic")) is None
    reason = extractor_refusal(youtube(extractor="soundcloud", extractor_key="Soundcloud"), ("youtube",))
    assert "'soundcloud' is not allowed" in reason
    assert extractor_refusal(youtube(extractor="youtube:tab"), ("youtube",))  # playlists/channels
    with pytest.raises(SourceRefused):
        check_info(youtube(), WATCH, index=0, settings=Settings(allowed_extractors=("generic",)))


def test_check_info_names_a_youtube_source_by_video_id():
    info = check_info(youtube(), WATCH, index=1, settings=SETTINGS)
    assert info.source_id == f"youtube:{VIDEO_ID}"
    assert (info.extractor, info.id, info.duration_s, info.is_live) == ("youtube", VIDEO_ID, 213.0, False)
    assert info.title == "Never Gonna Give You Up"
    assert info.ext == "webm"  # format 251, opus
    assert cache_prefix(SETTINGS, info.extractor, info.id) == f"sources/youtube/{VIDEO_ID}."


def test_check_info_without_audio_is_unavailable():
    only_video = youtube(formats=[f for f in YOUTUBE_INFO["formats"] if f["vcodec"] != "none"])
    with pytest.raises(SourceUnavailable) as info:
        check_info(only_video, WATCH, index=2, settings=SETTINGS)
    assert "no audio-only format" in info.value.message


# -- identity -------------------------------------------------------------------------------


def test_generic_id_hashes_the_normalised_url():
    a = "https://cdn-a.example/music/track.mp3"
    assert generic_id(a) == generic_id("HTTPS://CDN-A.example:443/music/track.mp3#t=10")
    assert generic_id(a) != generic_id("https://cdn-b.example/music/track.mp3")  # same file name
    assert generic_id(a) != generic_id(a + "?v=2")
    assert len(generic_id(a)) == 32 and int(generic_id(a), 16) >= 0
    assert normalise_url("http://Host.Example:80") == "http://host.example/"
    assert normalise_url("http://host.example:8080/a?b=1#c") == "http://host.example:8080/a?b=1"
    assert source_identity("Generic", "track", a) == ("generic", generic_id(a))
    assert source_identity("youtube", VIDEO_ID, WATCH) == ("youtube", VIDEO_ID)
    assert source_identity("youtube", "../../x", WATCH) == ("youtube", "______x")


@pytest.mark.parametrize("url", [
    WATCH,
    f"https://youtu.be/{VIDEO_ID}?t=42",
    f"https://www.youtube.com/shorts/{VIDEO_ID}",
    f"https://m.youtube.com/watch?v={VIDEO_ID}&list=PL123",
])
def test_offline_identity_of_youtube_urls(url):
    assert offline_identity(url, SETTINGS) == ("youtube", VIDEO_ID)


def test_offline_identity_of_other_urls_is_generic():
    url = "https://cdn.example/a.mp3"
    assert offline_identity(url, SETTINGS) == ("generic", generic_id(url))


def test_url_no_allowed_extractor_handles_is_refused_before_any_request():
    only_youtube = Settings(allowed_extractors=("youtube",))
    with pytest.raises(SourceRefused) as info:
        identify_url("https://93.184.215.14/a.mp3", index=3, settings=only_youtube)
    assert info.value.part == 3
    assert "no allowed extractor" in info.value.message


def test_safe_ext():
    assert safe_ext("MP3") == "mp3"
    assert safe_ext("unknown_video") == "bin"
    assert safe_ext("../x") == "bin"
    assert safe_ext(None) == "bin"


# -- failure classification -------------------------------------------------------------------


def http_failure(status: int, reason: str = "") -> Exception:
    """A yt-dlp download failure wrapping an HTTP error, as YoutubeDL raises it."""
    from yt_dlp.networking.common import Response
    from yt_dlp.networking.exceptions import HTTPError
    from yt_dlp.utils import DownloadError, ExtractorError

    http_error = HTTPError(Response(io.BytesIO(b""), "https://h/x", {}, status=status, reason=reason))
    extractor_error = ExtractorError(f"Unable to download webpage: {http_error}", cause=http_error)
    return DownloadError(f"ERROR: [generic] x: {extractor_error}", (ExtractorError, extractor_error, None))


@pytest.mark.parametrize("status, kind, words", [
    (404, SourceUnavailable, "HTTP 404 not found"),
    (410, SourceUnavailable, "HTTP 410 not found"),
    (403, SourceUnavailable, "HTTP 403 Forbidden"),
    (429, TransientError, "throttled"),
    (500, TransientError, "HTTP 500"),
    (503, TransientError, "HTTP 503"),
])
def test_http_failures(status, kind, words):
    reason = {403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
    err = classify_failure(http_failure(status, reason), "part 2 (https://h/x)")
    assert type(err) is kind
    assert err.message.startswith("part 2 (https://h/x): ") and words in err.message


def test_other_failures():
    from yt_dlp.utils import DownloadError, UnsupportedError

    unsupported = UnsupportedError("https://h/page.html")
    err = classify_failure(DownloadError(str(unsupported), (UnsupportedError, unsupported, None)), "p")
    assert isinstance(err, SourceUnavailable) and "unsupported URL" in err.message
    short = DownloadError("ERROR: Got error: Downloaded 2000 bytes, expected 17179 bytes. Giving up after 2 retries")
    err = classify_failure(short, "p")
    assert isinstance(err, SourceUnavailable) and "cut off midway (got 2000 of 17179 bytes)" in err.message
    refused = SourceRefused("redirected to http://10.0.0.1/: 10.0.0.1 is a private address")
    err = classify_failure(short, "p", refusal=refused)
    assert isinstance(err, SourceRefused) and err.message == f"p: {refused.message}"
    timeout = DownloadError("ERROR: timed out", (TimeoutError, TimeoutError("timed out"), None))
    assert isinstance(classify_failure(timeout, "p"), TransientError)
    other = DownloadError("ERROR: [youtube] abc: Video unavailable. This video is private")
    err = classify_failure(other, "p")
    assert isinstance(err, SourceUnavailable) and err.message == "p: Video unavailable. This video is private"


def test_single_video_url_drops_playlist_parameters_on_youtube_only():
    assert single_video_url(f"https://www.youtube.com/watch?v={VIDEO_ID}&list=PL1&index=3&t=5") == (
        f"https://www.youtube.com/watch?v={VIDEO_ID}&t=5")
    assert single_video_url(f"https://music.youtube.com/watch?v={VIDEO_ID}&list=RD1") == (
        f"https://music.youtube.com/watch?v={VIDEO_ID}")
    assert single_video_url("https://www.youtube.com/playlist?list=PL1") == "https://www.youtube.com/playlist?list=PL1"
    other = "https://notyoutube.com/watch?v=1&list=2"
    assert single_video_url(other) == other


def test_dns_failures():
    import socket

    from yt_dlp.utils import DownloadError

    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    err = classify_failure(DownloadError("ERROR: x", (socket.gaierror, again, None)), "p")
    assert isinstance(err, TransientError) and "temporary DNS failure" in err.message
    refused = ConnectionRefusedError(111, "Connection refused")
    err = classify_failure(DownloadError("ERROR: x", (ConnectionRefusedError, refused, None)), "p")
    assert isinstance(err, SourceUnavailable) and err.message == "p: host unreachable (Connection refused)"
