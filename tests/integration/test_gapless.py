"""Files the way other encoders write them, joined and decoded by two independent decoders.

Inputs are built with LAME itself (``lameenc``: no LAME tag, as ``lame -t`` and sox write),
ffmpeg's libmp3lame (an Info frame saying "stereo" before joint-stereo frames), CRC-protected
frames (as ``lame -p`` writes: the tag sits 2 bytes later), MPEG-2/2.5 rates, Opus, M4A, and a
garbage prefix. Outputs are decoded by ffmpeg and by libsndfile (mpg123 for MP3), and their
sample counts must equal what the result says, exactly.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile

from chalicelib.engine import PartInput, mp3, probe, stitch
from chalicelib.ffmpeg import ffmpeg_binary
from chalicelib.options import Options, PartOptions
from tests.audio import (
    ffmpeg_frames,
    ffmpeg_mp3,
    garbage_prefixed_mp3,
    lameenc_mp3,
    m4a_file,
    make_tone,
    opus_file,
    sf_frames,
    wav_file,
)

COPY, EXACT = Options(join="copy"), Options(join="exact")


def both(path) -> tuple[int, int]:
    return ffmpeg_frames(path), sf_frames(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Inputs from tests/audio.py's builders; each plays its nominal length in both decoders
    (tests/integration/test_decoders.py), except the untagged and garbage-prefixed ones."""
    d = tmp_path_factory.mktemp("foreign")
    f = {}
    ffmpeg_mp3(f.setdefault("ff1", d / "ff1.mp3"), 44100)  # ffmpeg/libmp3lame: Info frame + LAME tag
    ffmpeg_mp3(f.setdefault("ff07", d / "ff07.mp3"), 30870, seed=1)
    ffmpeg_mp3(f.setdefault("ff6", d / "ff6.mp3"), 6 * 44100, seed=2)
    lameenc_mp3(f.setdefault("lame2", d / "lame2.mp3"), 2 * 44100, tag=False)  # lame -t, sox
    lameenc_mp3(f.setdefault("lame22", d / "lame22.mp3"), 22050, rate=22050, bitrate=64, tag=False)
    lameenc_mp3(f.setdefault("lame8", d / "lame8.mp3"), 8000, rate=8000, channels=1, bitrate=16, tag=False)
    lameenc_mp3(f.setdefault("crc", d / "crc.mp3"), 44100, crc=True)  # lame -p
    ffmpeg_mp3(f.setdefault("ff22", d / "ff22.mp3"), 22050, rate=22050, bitrate="64k")
    ffmpeg_mp3(f.setdefault("ff8", d / "ff8.mp3"), 8000, rate=8000, channels=1, bitrate="16k")
    opus_file(f.setdefault("opus", d / "two.opus"), 96000)
    m4a_file(f.setdefault("m4a", d / "two.m4a"), 88200)
    wav_file(f.setdefault("wav", d / "one.wav"), 44100)
    garbage_prefixed_mp3(f.setdefault("junk6", d / "junk6.mp3"), 6 * 44100, garbage=2985)
    return f


def test_decoders_agree_on_the_inputs(files):
    """The ground truth the tests rely on: what each input plays in both decoders."""
    assert both(files["ff1"]) == (44100, 44100)
    assert both(files["crc"]) == (44100, 44100)
    assert both(files["opus"]) == (96000, 96000)
    assert both(files["lame2"]) == (mp3.scan(files["lame2"]).frames * 1152,) * 2  # no tag: every frame
    assert ffmpeg_frames(files["junk6"]) != 6 * 44100  # ffmpeg misses the tag behind the junk


@pytest.mark.parametrize("name, seconds", [("ff1", 1.0), ("crc", 1.0), ("opus", 2.0), ("m4a", 2.0),
                                           ("junk6", 6.0), ("wav", 1.0)])
def test_probe_gives_the_gapless_length(files, name, seconds):
    assert probe(files[name]).duration_s == seconds


def test_crc_protected_tag_frame_is_recognised(files):
    s = mp3.scan(files["crc"])
    assert s.header.protected and s.vbr_tag is not None and s.vbr_tag.kind == "Info"
    assert s.encoder_delay == 576 and s.decoded_samples == 44100
    out = files["crc"].parent / "crc-join.mp3"
    result = stitch([PartInput(files["crc"]), PartInput(files["crc"])], out, COPY)
    assert result.join == "copy" and mp3.scan(out).frames == 2 * s.frames  # no tag frame copied as audio
    assert result.parts[0].start_s == 0
    n = round(result.duration_s * 44100)
    assert both(out) == (n, n)
    exact = stitch([PartInput(files["crc"]), PartInput(files["ff07"])], out, EXACT)
    assert exact.join == "exact" and both(out) == (44100 + 30870,) * 2


def test_ffmpeg_info_frame_and_lame_frames_copy_join(files, tmp_path):
    """ffmpeg's Info frame says plain stereo, LAME's frames are joint stereo: still one stream."""
    info = mp3.peek(files["ff1"])
    lame = mp3.peek(files["lame2"])
    assert info.header.channel_mode == 0 and lame.header.channel_mode == 1
    out = tmp_path / "mixed.mp3"
    result = stitch([PartInput(files["ff1"]), PartInput(files["lame2"])], out, COPY)
    assert result.join == "copy"
    n = round(result.duration_s * 44100)
    assert both(out) == (n, n)


@pytest.mark.parametrize("name, rate", [("lame2", 44100), ("lame22", 22050), ("lame8", 8000)])
def test_untagged_parts_header_and_duration_agree(files, tmp_path, name, rate):
    """No LAME tag in the first part: the duration reported is what decoders play from the header
    written (a LAME tag with delay 0, after which both skip their own decoder delay)."""
    out = tmp_path / "u.mp3"
    result = stitch([PartInput(files[name]), PartInput(files[name])], out, COPY)
    frames = mp3.scan(files[name]).frames
    spf = mp3.scan(files[name]).header.samples
    played = 2 * frames * spf - mp3.DECODER_DELAY
    assert result.join == "copy"
    assert round(result.duration_s * rate) == played
    assert both(out) == (played, played)
    assert result.parts[1].start_s == round(frames * spf / rate, 6)


@pytest.mark.parametrize("tagged, untagged, rate", [("ff22", "lame22", 22050), ("ff8", "lame8", 8000)])
def test_mpeg2_and_25_exact_join(files, tmp_path, tagged, untagged, rate):
    out = tmp_path / "e.mp3"
    result = stitch([PartInput(files[tagged]), PartInput(files[untagged])], out, EXACT)
    untagged_len = mp3.scan(files[untagged]).frames * mp3.scan(files[untagged]).header.samples
    expected = rate + untagged_len
    assert result.join == "exact" and result.added_silence_ms == 0
    assert round(result.duration_s * rate) == expected
    assert both(out) == (expected, expected)
    assert result.parts[1].start_s == 1.0


@pytest.mark.parametrize("other, rate, first", [("opus", 48000, 96000), ("m4a", 44100, 88200)])
def test_opus_and_m4a_parts_do_not_drift(files, tmp_path, other, rate, first):
    out = tmp_path / "d.mp3"
    result = stitch([PartInput(files[other]), PartInput(files["ff1"])], out, Options())
    assert result.join == "exact"
    assert result.parts[1].start_s == 2.0 and result.duration_s == 3.0
    assert both(out) == (first + rate, first + rate)


def test_garbage_prefixed_mp3_plays_its_tagged_length(files, tmp_path):
    out = tmp_path / "g.mp3"
    result = stitch([PartInput(files["junk6"]), PartInput(files["wav"])], out, Options())
    assert result.join == "exact" and result.duration_s == 7.0 and result.parts[1].start_s == 6.0
    assert both(out) == (7 * 44100, 7 * 44100)


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "flac", "wav"])
def test_exact_join_with_gap_trim_and_fades_is_sample_exact(files, tmp_path, fmt):
    parts = [PartInput(files["ff1"]), PartInput(files["lame2"], PartOptions(start_s=0.25, end_s=1.5)),
             PartInput(files["opus"])]
    out = tmp_path / f"x.{fmt}"
    opts = Options.from_dict({"format": fmt, "gap_ms": 100, "fade_in_ms": 50, "fade_out_ms": 300})
    result = stitch(parts, out, opts)
    rate = 48000
    expected = rate * 1 + round(1.25 * rate) + rate * 2 + 2 * round(0.1 * rate)
    assert round(result.duration_s * rate) == expected
    assert both(out) == (expected, expected)
    assert [p.start_s for p in result.parts] == [0.0, 1.1, 2.45]


@pytest.mark.parametrize("loudness", [None, -20])
def test_exact_crossfade_is_sample_exact(files, tmp_path, loudness):
    out = tmp_path / "xf.mp3"
    data = {"crossfade_ms": 200, **({"loudness_lufs": loudness} if loudness else {})}
    result = stitch([PartInput(files["ff1"]), PartInput(files["wav"]), PartInput(files["ff07"])], out,
                    Options.from_dict(data))
    expected = 44100 + 44100 + 30870 - 2 * 8820
    assert round(result.duration_s * 44100) == expected and both(out) == (expected, expected)
    assert [p.start_s for p in result.parts] == [0.0, 0.8, 1.6]


def test_auto_copies_long_parts_and_re_encodes_short_ones(files, tmp_path):
    # At 44.1 kHz LAME keeps about 1,600 samples at a join: 1 % of 3.6 s.
    long_ = [PartInput(files["ff6"]), PartInput(files["ff6"])]
    short = [PartInput(files["ff1"]), PartInput(files["ff07"])]
    copied = stitch(long_, tmp_path / "l.mp3", Options())
    assert copied.join == "copy" and copied.mode == "copy"
    s = mp3.scan(files["ff6"])
    assert copied.added_silence_ms == round((s.encoder_padding + s.encoder_delay) * 1000 / 44100, 3)
    exact = stitch(short, tmp_path / "s.mp3", Options())
    assert exact.join == "exact" and exact.mode == "encode" and exact.added_silence_ms == 0
    assert both(tmp_path / "s.mp3") == (44100 + 30870,) * 2
    forced = stitch(short, tmp_path / "c.mp3", COPY)
    assert forced.join == "copy" and forced.added_silence_ms > 30


def test_copy_join_cost_per_part_is_small(tmp_path, monkeypatch):
    """What a part costs beyond its bytes: each part is opened twice (peeked, then walked and
    copied from one descriptor), and the frame-size table is built once per stream kind, not
    once per part. (Timings on a shared machine are too noisy to assert; docs/engine.md has them.)"""
    import os
    import shutil

    from chalicelib.engine.mp3 import frames

    small = make_tone(tmp_path / "small.mp3", 0.3)
    many = [PartInput(shutil.copy(small, tmp_path / f"s{i}.mp3")) for i in range(1000)]
    opened = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    frames._size_table.cache_clear()
    monkeypatch.setattr(os, "open", counting_open)
    result = stitch(many, tmp_path / "many.mp3", COPY)
    monkeypatch.undo()
    assert result.join == "copy" and len(result.parts) == 1000
    reads = [p for p in opened if p.endswith(".mp3") and "many.mp3" not in p]
    assert len(reads) == 2 * 1000 and len(set(reads)) == 1000
    assert frames._size_table.cache_info().misses == 1


def true_peak_db(path) -> float:
    """The output's true peak (dBTP) as ffmpeg's ebur128 measures it, decoded as a player would."""
    from chalicelib.engine.loudness import _PEAK

    proc = subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
                           "-af", "ebur128=peak=true:framelog=verbose", "-f", "null", "-"],
                          capture_output=True, text=True)
    return float(_PEAK.search(proc.stderr).group(1))


def clipped(path) -> int:
    data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return int((np.abs(data) >= 1.0).sum())


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Speech-like: pink noise in syllable-rate bursts, about -17 LUFS with peaks near -3 dBFS."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    src = "anoisesrc=color=pink:amplitude=0.5:sample_rate=44100:duration=4:seed=7"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", src,
                    "-af", "tremolo=f=4:d=0.9,volume=-2dB", "-ac", "2", "-c:a", "pcm_s16le", str(path)], check=True)
    return path


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_loudness_boost_is_limited_to_the_true_peak_ceiling(speech, tmp_path, fmt):
    out = tmp_path / f"loud.{fmt}"
    result = stitch([PartInput(speech), PartInput(speech)], out,
                    Options.from_dict({"format": fmt, "loudness_lufs": -5}))
    assert all(p.gain_limited_db > 0 for p in result.parts)
    assert result.to_dict()["parts"][0]["gain_limited_db"] == result.parts[0].gain_limited_db
    assert clipped(out) == 0 and true_peak_db(out) <= -1.0


def test_gain_boost_on_a_loud_part_is_limited(tmp_path):
    loud = make_tone(tmp_path / "loud.wav", 1.0, volume=10.0)  # peaks at 0.88: about -1.1 dBFS
    plain = stitch([PartInput(loud)], tmp_path / "plain.wav", Options(format="wav"))
    assert plain.parts[0].gain_limited_db == 0 and "gain_limited_db" not in plain.to_dict()["parts"][0]
    out = tmp_path / "boost.wav"
    result = stitch([PartInput(loud, PartOptions(gain_db=12.0))], out, Options(format="wav"))
    headroom = -1.0 - true_peak_db(loud)
    assert 0 < headroom < 0.5
    assert result.parts[0].gain_limited_db == pytest.approx(12.0 - headroom, abs=0.01)
    assert clipped(out) == 0 and true_peak_db(out) <= -0.9
    # A boost that fits is applied whole.
    quiet = make_tone(tmp_path / "quiet.wav", 1.0, volume=0.05)
    fits = stitch([PartInput(quiet, PartOptions(gain_db=6.0))], tmp_path / "fits.wav", Options(format="wav"))
    assert fits.parts[0].gain_limited_db == 0
