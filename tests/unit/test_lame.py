"""engine.lame: libmp3lame in this process, with the settings ffmpeg's libmp3lame wrapper uses."""
from __future__ import annotations

import io
import math
import struct

import pytest

from chalicelib.engine import lame, parallel
from chalicelib.engine.mp3.frames import parse_header
from chalicelib.errors import StitchError


def tone(seconds: float, rate: int, channels: int, hz: float = 440.0) -> bytearray:
    n = round(seconds * rate)
    frame = []
    for i in range(n):
        v = 0.5 * math.sin(2 * math.pi * hz * i / rate)
        frame.extend([v, -0.7 * v][:channels])
    return bytearray(struct.pack(f"<{len(frame)}f", *frame))


def headers(stream: bytes) -> list:
    out, pos = [], 0
    while pos + 4 <= len(stream):
        h = parse_header(stream, pos)
        assert h is not None, f"no frame header at byte {pos}"
        out.append(h)
        pos += h.size
    assert pos == len(stream)
    return out


@pytest.mark.parametrize("rate,channels,bitrate,mode", [
    (44100, 2, "128k", 1),  # joint stereo, as ffmpeg (-joint_stereo 1 is its default)
    (48000, 2, "192k", 1),  # lameenc's own Encoder would switch to plain stereo here
    (22050, 1, "32k", 3),
    (8000, 2, "24k", 1),
])
def test_frames_are_cbr_at_the_input_rate_in_ffmpegs_stereo_mode(rate, channels, bitrate, mode):
    enc = lame.Encoder(rate, channels, bitrate)
    assert enc.delay == 576
    assert enc.frame_samples == (1152 if rate >= 32000 else 576)
    pcm = tone(1.0, rate, channels)
    stream = enc.encode(pcm) + enc.finish()
    hs = headers(stream)  # no Xing/Info frame: the first frame is audio
    assert {(h.sample_rate, h.bitrate, h.channel_mode, h.layer) for h in hs} == {
        (rate, lame.kbps(bitrate), mode, 3)}
    # every input sample is in the stream, after the delay, and LAME pads at most a frame more
    # than the decoder's delay (529)
    n = rate
    padding = len(hs) * enc.frame_samples - enc.delay - n
    assert 529 <= padding < 529 + enc.frame_samples + 576 * 2


def test_input_in_pieces_gives_the_same_stream():
    pcm = tone(2.0, 44100, 2)
    whole = lame.Encoder(44100, 2, "128k")
    one = whole.encode(pcm) + whole.finish()
    pieces = lame.Encoder(44100, 2, "128k")
    step = 8 * 1000  # 1000 samples, not a frame multiple
    parts = b"".join(pieces.encode(pcm[i:i + step]) for i in range(0, len(pcm), step))
    assert parts + pieces.finish() == one


def test_read_only_input_is_accepted_and_left_alone():
    pcm = bytes(tone(0.5, 16000, 1))
    enc = lame.Encoder(16000, 1, "32k")
    assert headers(enc.encode(pcm) + enc.finish())


def test_a_layout_lame_refuses_is_our_error():
    with pytest.raises(StitchError, match=r"refused 2 channels at 7000 Hz"):
        lame.Encoder(7000, 2, "32k")


def test_bitrates_in_both_spellings():
    assert lame.kbps("128k") == 128 and lame.kbps("96000") == 96


def test_without_the_library_mp3_is_not_chunked(monkeypatch):
    monkeypatch.setattr(lame, "_loaded", True)
    monkeypatch.setattr(lame, "_lib", None)
    assert parallel.parallel_formats() == frozenset()
    with pytest.raises(StitchError, match="not available"):
        lame.Encoder(44100, 2, "128k")


def test_chunked_encode_needs_no_ffmpeg(tmp_path, monkeypatch):
    """The chunks are LAME in this process: no encoder process is started (ffmpeg is broken here)."""
    monkeypatch.setattr(parallel, "ffmpeg_binary", lambda: "/nonexistent/ffmpeg")
    pcm = tone(12.0, 8000, 1)
    r = parallel.encode_pcm(io.BytesIO(bytes(pcm)), tmp_path / "a.mp3", fmt="mp3", rate=8000, channels=1,
                            bitrate="24k", workers=2, chunk_s=2.0, total_samples=8000 * 12)
    assert (r.samples, r.chunks, r.workers) == (96000, 6, 2)
    data = (tmp_path / "a.mp3").read_bytes()
    hs = headers(data)
    assert len(hs) * 576 == r.delay + r.samples + r.padding + 576  # + the Info frame


def test_threads_asking_at_once_all_get_the_library(monkeypatch):
    """The first load is done once, under a lock: no thread sees "not available" meanwhile."""
    import threading
    import time

    real = lame._open
    calls = []

    def slow_open():
        calls.append(1)
        time.sleep(0.05)
        return real()

    monkeypatch.setattr(lame, "_loaded", False)
    monkeypatch.setattr(lame, "_lib", None)
    monkeypatch.setattr(lame, "_open", slow_open)
    got = []
    threads = [threading.Thread(target=lambda: got.append(lame.library())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(g is not None for g in got)
