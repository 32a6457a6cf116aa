"""The two reference decoders (ffmpeg, libsndfile via soundfile) and the files other encoders write.

First: prove that each decoder honours the gapless tags, so that other tests may trust it. Then:
every builder in tests/audio.py produces what its docstring says, as both decoders play it.
Where a decoder mis-handles a file, the test pins what it does, so a change is noticed.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from tests import audio

pytestmark = pytest.mark.timeout(120)

# A length that is no multiple of any frame size, so padding is never zero.
N = 2 * 44100 + 777
DECODER_DELAY = 529  # mpg123 and ffmpeg both drop 529 samples of decoder delay (plus the tag's delay)


def _n(rate: int) -> int:
    return 2 * rate + 333


def _counts(path) -> tuple[int, int]:
    return audio.ffmpeg_frames(path), audio.sf_frames(path)


def test_soundfile_wheel_decodes_mp3():
    major, minor = (int(x) for x in sf.__libsndfile_version__.split(".")[:2])
    assert (major, minor) >= (1, 1)
    assert "MP3" in sf.available_formats()


def test_both_decoders_honour_the_lame_tag_and_the_check_can_fail(tmp_path):
    """A real LAME tag (libmp3lame through ffmpeg) gives exactly N; without it, all frames."""
    p = tmp_path / "tagged.mp3"
    audio.ffmpeg_mp3(p, N, id3=False)
    assert _counts(p) == (N, N)
    ref = audio.pcm(N)
    assert audio.best_lag(ref, audio.ffmpeg_decode(p)) == 0
    assert audio.best_lag(ref, audio.sf_decode(p)) == 0

    data = p.read_bytes()
    frames = audio.frames_of(data)
    assert data[frames[0].offset + 36:frames[0].offset + 40] == b"Info"
    stripped = tmp_path / "stripped.mp3"
    stripped.write_bytes(data[frames[1].offset:])  # drop the Info frame: no gapless information left
    audio_frames = len(frames) - 1
    assert _counts(stripped) == (audio_frames * 1152, audio_frames * 1152)
    assert audio_frames * 1152 != N


def test_sf_frames_counts_what_it_decodes_not_the_header_estimate(tmp_path):
    p = tmp_path / "untagged.mp3"
    audio.lameenc_mp3(p, N, tag=False)
    decoded = audio.sf_frames(p)
    with sf.SoundFile(str(p)) as f:
        estimate = f.frames
    assert decoded == len(audio.frames_of(p.read_bytes())) * 1152
    assert estimate > decoded  # mpg123 guesses from the file size; the decode is the truth


# (builder kwargs, rate): MPEG-1, MPEG-2 and MPEG-2.5, with and without tags and CRC.
MP3_RATES = [(44100, 128), (48000, 128), (32000, 112), (22050, 96), (24000, 96), (16000, 64), (11025, 48),
             (12000, 48), (8000, 32)]


@pytest.mark.parametrize("rate,kbps", MP3_RATES, ids=[str(r) for r, _ in MP3_RATES])
@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_lameenc_with_lame_tag_plays_exactly(tmp_path, rate, kbps, crc):
    p = tmp_path / "lame.mp3"
    n = audio.lameenc_mp3(p, _n(rate), rate=rate, bitrate=kbps, crc=crc)
    assert _counts(p) == (n, n)
    ref = audio.pcm(n, rate=rate)
    assert audio.best_lag(ref, audio.ffmpeg_decode(p)) == 0
    assert audio.best_lag(ref, audio.sf_decode(p)) == 0
    frames = audio.frames_of(p.read_bytes())
    assert {f.protected for f in frames} == {crc}
    assert {f.mpeg for f in frames} == {1 if rate >= 32000 else 2 if rate >= 16000 else 2.5}
    assert {f.mode for f in frames} == {1}  # joint stereo, the tag frame too (LAME copies its mode)


@pytest.mark.parametrize("rate,kbps", [(44100, 128), (22050, 96), (11025, 48)], ids=["mpeg1", "mpeg2", "mpeg25"])
@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_lameenc_without_tag_plays_delay_and_padding(tmp_path, rate, kbps, crc):
    """`lame -t` (and sox): no tag, so both decoders play every frame, the encoder delay included."""
    p = tmp_path / "lame-t.mp3"
    n = audio.lameenc_mp3(p, _n(rate), rate=rate, bitrate=kbps, tag=False, crc=crc)
    frames = audio.frames_of(p.read_bytes())
    played = len(frames) * frames[0].samples
    assert played > n
    assert _counts(p) == (played, played)
    ref = audio.pcm(n, rate=rate)
    assert audio.best_lag(ref, audio.ffmpeg_decode(p)) == audio.LAME_DELAY + DECODER_DELAY
    assert audio.best_lag(ref, audio.sf_decode(p)) == audio.LAME_DELAY + DECODER_DELAY


def test_crc_frames_pass_ffmpeg_crc_check_and_decode_to_the_same_pcm(tmp_path):
    plain, crc = tmp_path / "plain.mp3", tmp_path / "crc.mp3"
    audio.lameenc_mp3(plain, N, tag=False)
    audio.lameenc_mp3(crc, N, tag=False, crc=True)
    strict = ["-err_detect", "crccheck+explode", "-xerror"]
    assert audio.ffmpeg_frames(crc, extra=strict) == audio.ffmpeg_frames(plain)
    # Same main data through a different reservoir layout: the very same PCM.
    assert np.array_equal(audio.ffmpeg_decode(crc), audio.ffmpeg_decode(plain))
    assert np.array_equal(audio.sf_decode(crc), audio.sf_decode(plain))
    assert crc.stat().st_size == plain.stat().st_size  # same bitrate: CRC bytes came out of main data

    # The check can fail: one flipped bit in a frame's side info.
    data = bytearray(crc.read_bytes())
    data[audio.frames_of(bytes(data))[10].offset + 6] ^= 0x01
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(bytes(data))
    with pytest.raises(subprocess.CalledProcessError):
        audio.ffmpeg_frames(bad, extra=strict)


def test_crc_lame_tag_sits_where_lame_puts_it(tmp_path):
    """`lame -p`: the tag frame is CRC-protected, yet "Info" stays at 4 + side info (36), not 38."""
    p = tmp_path / "crc-tag.mp3"
    audio.lameenc_mp3(p, N, crc=True)
    data = p.read_bytes()
    first = audio.frames_of(data)[0]
    assert first.protected
    assert data[36:40] == b"Info" and data[38:42] != b"Info"
    assert int.from_bytes(data[4:6], "big") == audio.crc16_mpeg(data[2:4] + data[6:6 + first.side_info_len])


def test_add_crc_refuses_when_main_data_cannot_fit(tmp_path):
    """At MPEG-2 64 kbps LAME fills the reservoir with this module's tone; 2 bytes less per frame
    do not fit, and the rewriter says so rather than writing a broken stream (CRC builds there use
    96 kbps)."""
    with pytest.raises(ValueError, match="do not fit"):
        audio.lameenc_mp3(tmp_path / "x.mp3", _n(22050), rate=22050, bitrate=64, crc=True)


def test_ffmpeg_info_frame_says_stereo_over_joint_stereo_frames(tmp_path):
    p = tmp_path / "ff.mp3"
    n = audio.ffmpeg_mp3(p, N)
    assert _counts(p) == (n, n)
    data = p.read_bytes()
    assert audio.id3v2_size(data) > 0
    frames = audio.frames_of(data)
    assert data[frames[0].offset + 36:frames[0].offset + 40] == b"Info"
    assert frames[0].mode == 0  # stereo, in the Info frame's header
    assert {f.mode for f in frames[1:]} == {1}  # joint stereo, in every audio frame


@pytest.mark.parametrize("rate,kbps", [(22050, "64k"), (24000, "64k"), (16000, "48k"), (11025, "32k"),
                                       (12000, "32k"), (8000, "24k")])
def test_ffmpeg_mpeg2_and_25_play_exactly(tmp_path, rate, kbps):
    p = tmp_path / "low.mp3"
    n = audio.ffmpeg_mp3(p, _n(rate), rate=rate, bitrate=kbps)
    assert _counts(p) == (n, n)
    assert {f.samples for f in audio.frames_of(p.read_bytes())} == {576}


def test_ffmpeg_without_xing_is_like_sox(tmp_path):
    p = tmp_path / "sox.mp3"
    n = audio.ffmpeg_mp3(p, N, xing=False)
    frames = audio.frames_of(p.read_bytes())
    assert b"Info" not in p.read_bytes() and b"Xing" not in p.read_bytes()
    assert _counts(p) == (len(frames) * 1152, len(frames) * 1152) != (n, n)


def test_garbage_prefixed_mp3_mpg123_finds_the_tag_ffmpeg_does_not(tmp_path):
    """For "engine": with junk before the Info frame, mpg123 (soundfile) still applies the LAME tag and
    plays exactly N; ffmpeg 7.0 plays the Info frame's gapless data as absent: every audio frame, and
    the encoder delay (576 + 529 samples) at the start."""
    p = tmp_path / "junk.mp3"
    n = audio.garbage_prefixed_mp3(p, N)
    data = p.read_bytes()
    assert audio.parse_frame(data, 0) is None and b"\xff" not in data[:1500]
    frames = audio.frames_of(data, 1500)
    ref = audio.pcm(n)
    assert audio.sf_frames(p) == n
    assert audio.best_lag(ref, audio.sf_decode(p)) == 0
    assert audio.ffmpeg_frames(p) == (len(frames) - 1) * 1152
    assert audio.best_lag(ref, audio.ffmpeg_decode(p)) == audio.LAME_DELAY + DECODER_DELAY


def test_opus_pre_skip_312_both_decoders_exact(tmp_path):
    p = tmp_path / "a.opus"
    n = audio.opus_file(p, 2 * 48000 + 333)
    data = p.read_bytes()
    head = data.index(b"OpusHead")
    assert int.from_bytes(data[head + 10:head + 12], "little") == 312
    assert _counts(p) == (n, n)


def test_m4a_ffmpeg_skips_priming_but_plays_the_last_frame_whole(tmp_path):
    """For "engine": ffmpeg's aac + ipod muxer write priming 1024 (edit list media_time) and the true
    end (a short last stts entry), but ffmpeg's own decode keeps the last AAC frame whole: it plays
    N rounded up to 1024. The edit list's duration is in the movie timescale (ms), too coarse to say
    N. libsndfile does not read MP4 (pinned, so a wheel that starts to is noticed)."""
    p = tmp_path / "a.m4a"
    n = audio.m4a_file(p, N)
    data = p.read_bytes()
    elst = data.index(b"elst")
    assert int.from_bytes(data[elst + 8:elst + 12], "big") == 1  # one entry
    assert int.from_bytes(data[elst + 16:elst + 20], "big") == 1024  # media_time: the priming
    assert audio.ffmpeg_frames(p) == -(-n // 1024) * 1024
    assert audio.best_lag(audio.pcm(n), audio.ffmpeg_decode(p)) == 0
    with pytest.raises(sf.LibsndfileError):
        audio.sf_frames(p)


@pytest.mark.parametrize("encoder", ["ffmpeg", "libsndfile"])
@pytest.mark.parametrize("build", [audio.flac_file, audio.wav_file], ids=["flac", "wav"])
def test_lossless_is_sample_exact_in_both_decoders(tmp_path, build, encoder):
    p = tmp_path / f"a.{'flac' if build is audio.flac_file else 'wav'}"
    n = build(p, N, encoder=encoder)
    ref = audio.pcm(n)
    assert np.array_equal(audio.ffmpeg_decode(p), ref)
    assert np.array_equal(audio.sf_decode(p), ref)
    assert _counts(p) == (n, n)
