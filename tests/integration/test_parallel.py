"""Chunked parallel encoding (engine/parallel.py) and the MP3 reservoir re-lay (engine/mp3/reservoir.py).

Every output is decoded by two independent decoders, ffmpeg and libsndfile (mpg123, through the
soundfile wheel), and compared with the PCM that was fed in. Signals are generated with numpy:
music-like (enveloped tones with beats, so there are attacks and block switching everywhere) and
speech-like (voiced syllables with pauses), seeded so every run encodes the same audio.

Seam criterion. A seam is where the frames of chunk k follow the frames of chunk k-1. Around each,
the 10 ms windows of output samples [k*C - 1105 - 2 frames, k*C - 1105 + 2 frames) are "seam windows"
(1105 = LAME's 576 delay + the decoder's 529: output sample k*C - 1105 is where frame k*C/spf starts,
and +-2 frames covers both frames' overlap-add). Asserted:
  (a) the largest RMS error of a seam window is no larger than the largest of the other windows
      (the issue's "no larger than in the rest of the output");
  (b) seams add no systematic error: the RMS error over all seam windows, relative to that of a
      single-pass encode of the same PCM in the same windows, is within 15 % of 1 (chunks of 2 s
      put 11 seams in 24 s of signal);
  (c) total SNR within 0.5 dB of the single pass.
"""
from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from chalicelib import records
from chalicelib.engine import encode as encode_module
from chalicelib.engine import lame as lame_binding
from chalicelib.engine import parallel
from chalicelib.engine.graph import Layout
from chalicelib.engine.mp3 import parse_header, peek
from chalicelib.engine.mp3.reservoir import (
    Frame,
    FrameReader,
    Relayer,
    ReservoirError,
    main_data_begin,
    max_back,
)
from chalicelib.errors import StitchError
from chalicelib.ffmpeg import ffmpeg_binary
from chalicelib.options import FORMATS, Options

DECODER_DELAY = 529


def music(seconds: float, rate: int, channels: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros((n, channels), np.float64)
    for _ in range(10):
        f = rng.uniform(60, min(5000, rate / 2.5))
        start = rng.uniform(0, seconds)
        env = np.exp(-np.maximum(0, t - start) * rng.uniform(0.5, 4)) * (t >= start)
        beat = 0.5 + 0.5 * (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) > 0.3)
        phase = rng.uniform(0, 6)
        for c in range(channels):
            x[:, c] += 0.08 * env * beat * np.sin(2 * np.pi * f * t * (1 + 0.001 * c) + phase)
    x += 0.002 * rng.standard_normal((n, channels))
    return np.clip(x, -1, 1).astype(np.float32)


def speech(seconds: float, rate: int, channels: int, seed: int = 2) -> np.ndarray:
    """Voiced syllables (a gliding pitch with harmonics under a formant-ish tilt) and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 150 < rate / 2)
    syllable = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) ** 2 * (np.sin(2 * np.pi * 0.4 * t) > -0.3)
    hiss = 0.02 * rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t) > 0.8)
    mono = 0.25 * voice * syllable + hiss
    return np.clip(np.repeat(mono[:, None], channels, axis=1), -1, 1).astype(np.float32)


def encode(x: np.ndarray, path: Path, rate: int, **kw) -> parallel.Encoded:
    kw.setdefault("fmt", "mp3")
    return parallel.encode_pcm(io.BytesIO(x.tobytes()), path, rate=rate, channels=x.shape[1], **kw)


def ffmpeg_decode(path: Path, channels: int) -> np.ndarray:
    out = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "f32le", "-ac", str(channels), "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32).reshape(-1, channels)


def sndfile_decode(path: Path) -> np.ndarray:
    data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data


def snr_db(ref: np.ndarray, dec: np.ndarray) -> float:
    err = ref.astype(np.float64) - dec
    return 10 * np.log10((ref.astype(np.float64) ** 2).sum() / (err ** 2).sum())


def window_rms(a: np.ndarray, w: int) -> np.ndarray:
    n = len(a) // w * w
    return np.sqrt((a[:n].astype(np.float64) ** 2).mean(axis=1).reshape(-1, w).mean(axis=1))


def chunk_samples(chunk_s: float, rate: int) -> int:
    spf = 1152 if rate >= 32000 else 576
    return -(-round(chunk_s * rate) // spf) * spf


def strip_tag(path: Path, dst: Path) -> Path:
    head = peek(path)
    dst.write_bytes(path.read_bytes()[head.audio_start:])
    return dst


# -- the independent decoder is trustworthy -----------------------------------------------------

def test_sndfile_honours_the_lame_gapless_tag(tmp_path):
    """Before trusting soundfile's sample counts: it trims by the tag, and without one it does not."""
    x = music(3, 44100, 2)
    encode(x, tmp_path / "a.mp3", 44100, workers=1)
    assert len(sndfile_decode(tmp_path / "a.mp3")) == len(x)
    bare = strip_tag(tmp_path / "a.mp3", tmp_path / "bare.mp3")
    assert len(sndfile_decode(bare)) > len(x) + 576


# -- the chunk encoder is ffmpeg's encoder -----------------------------------------------------------

@pytest.mark.parametrize("rate,channels,bitrate", [(44100, 2, "128k"), (48000, 2, "256k"), (16000, 1, "32k")])
def test_lame_in_process_encodes_as_ffmpegs_libmp3lame(tmp_path, rate, channels, bitrate):
    """Same stream kind frame for frame (bitrate, rate, stereo mode), same frame count and the same
    quality as `ffmpeg -c:a libmp3lame` on the same PCM; the builds differ, so not the same bytes."""
    x = music(6, rate, channels)
    ref = lame(tmp_path, x, rate, bitrate)
    enc = lame_binding.Encoder(rate, channels, bitrate)
    ours = tmp_path / "ours.mp3"
    ours.write_bytes(enc.encode(bytearray(x.tobytes())) + enc.finish())

    def kinds(path):
        return [(f.header.bitrate, f.header.sample_rate, f.header.channel_mode) for f in FrameReader(open(path, "rb"))]

    assert kinds(ours) == kinds(ref)
    a, b = ffmpeg_decode(ours, channels), ffmpeg_decode(ref, channels)
    assert len(a) == len(b)
    d = enc.delay + 529  # both streams start with LAME's delay: compare with the input
    n = len(x)
    ours_db, ref_db = snr_db(x, a[d:d + n]), snr_db(x, b[d:d + n])
    assert ref_db > 15 and abs(ours_db - ref_db) < 0.25


# -- reservoir re-lay -----------------------------------------------------------------------------

def _ffmpeg_lame(x: np.ndarray, path: Path, rate: int, bitrate: str, *extra: str) -> Path:
    """``x`` through one `ffmpeg -c:a libmp3lame` pass, with ``extra`` output options."""
    layout = "mono" if x.shape[1] == 1 else "stereo"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "f32le", "-ar", str(rate), "-ch_layout", layout,
                    "-i", "pipe:", "-c:a", "libmp3lame", "-b:a", bitrate, *extra, str(path)],
                   input=x.tobytes(), check=True)
    return path


def lame(tmp_path: Path, x: np.ndarray, rate: int, bitrate: str, name: str = "src.mp3") -> Path:
    """A plain LAME stream (no ID3, no Info frame) of ``x``, written by ffmpeg."""
    return _ffmpeg_lame(x, tmp_path / name, rate, bitrate, "-id3v2_version", "0", "-write_xing", "0")


def single_pass(x: np.ndarray, path: Path, rate: int, bitrate: str = "128k") -> Path:
    """The reference: one `ffmpeg -c:a libmp3lame` pass over ``x``, LAME tag and all."""
    return _ffmpeg_lame(x, path, rate, bitrate)


def relay(frames, path: Path) -> Relayer:
    with open(path, "wb") as out:
        r = Relayer(out.write)
        for f in frames:
            r.add(f)
        r.finish()
    return r


@pytest.mark.parametrize("rate,channels,bitrate", [
    (44100, 2, "128k"), (48000, 1, "64k"), (22050, 1, "48k"), (24000, 2, "96k"), (8000, 1, "16k"), (11025, 2, "32k"),
])
def test_relay_keeps_every_frame_bit_exact(tmp_path, rate, channels, bitrate):
    """Side-info layouts of MPEG-1/2/2.5, mono and stereo: re-laid frames decode to the same PCM."""
    src = lame(tmp_path, music(4, rate, channels), rate, bitrate)
    frames = list(FrameReader(open(src, "rb")))
    assert any(main_data_begin(f.header, f.side) for f in frames)  # the source uses the reservoir
    r = relay(frames, tmp_path / "out.mp3")
    assert r.frames == len(frames) and r.bumped == 0
    assert ffmpeg_decode(tmp_path / "out.mp3", channels).tobytes() == ffmpeg_decode(src, channels).tobytes()
    again = list(FrameReader(open(tmp_path / "out.mp3", "rb")))
    assert [f.main for f in again] == [f.main for f in frames]
    assert all(main_data_begin(f.header, f.side) <= max_back(f.header) for f in again)


def _relabel(f: Frame, index: int) -> Frame:
    head = bytes((f.head[0], f.head[1], (f.head[2] & 0x0F) | (index << 4), f.head[3]))
    return Frame(parse_header(head), head, f.side, f.main)


def test_relay_reframes_at_a_higher_bitrate_where_data_does_not_fit(tmp_path):
    """Frames of a 160k stream offered as 64k frames: where a frame's data cannot fit, it gets a bigger
    frame. The stream still decodes bit-exactly, and headers say which frames were re-framed."""
    src = lame(tmp_path, music(4, 44100, 2), 44100, "160k")
    frames = list(FrameReader(open(src, "rb")))
    small = [_relabel(f, 5) for f in frames]  # index 5 = 64 kbit/s in MPEG-1 Layer III
    r = relay(small, tmp_path / "out.mp3")
    assert r.bumped > len(frames) // 2
    assert ffmpeg_decode(tmp_path / "out.mp3", 2).tobytes() == ffmpeg_decode(src, 2).tobytes()
    rates = {f.header.bitrate for f in FrameReader(open(tmp_path / "out.mp3", "rb"))}
    assert 64 in rates and max(rates) > 64


def test_relay_refuses_what_cannot_fit_even_at_320k(tmp_path):
    src = lame(tmp_path, music(1, 44100, 2), 44100, "128k")
    f = next(iter(FrameReader(open(src, "rb"))))
    huge = Frame(f.header, f.head, f.side, bytes(2000))
    r = Relayer(lambda b: None)
    assert not r.fits(huge)
    with pytest.raises(ReservoirError):
        r.add(huge)


def test_relay_writes_valid_crcs_for_protected_frames(tmp_path):
    """A CRC-protected frame loses 2 bytes of room; the CRC over header and new side info is right."""
    src = lame(tmp_path, music(3, 44100, 2), 44100, "128k")
    frames = list(FrameReader(open(src, "rb")))
    protected = [Frame(records.replace(f.header, protected=True),
                       bytes((f.head[0], f.head[1] & 0xFE, f.head[2], f.head[3])), f.side, f.main) for f in frames]
    relay(protected, tmp_path / "crc.mp3")
    def checked(path: Path) -> subprocess.CompletedProcess:
        cmd = [ffmpeg_binary(), "-v", "error", "-err_detect", "crccheck", "-i", str(path), "-f", "f32le", "-"]
        return subprocess.run(cmd, capture_output=True)

    good = checked(tmp_path / "crc.mp3")
    assert good.stderr == b"" and good.stdout == ffmpeg_decode(src, 2).tobytes()
    data = bytearray((tmp_path / "crc.mp3").read_bytes())
    data[parse_header(data, 0).size + 4] ^= 1  # the second frame's CRC
    (tmp_path / "bad.mp3").write_bytes(data)
    assert b"CRC mismatch" in checked(tmp_path / "bad.mp3").stderr


# -- chunked MP3 ----------------------------------------------------------------------------------

CASES = [
    # rate, channels, bitrate, signal
    (44100, 2, "128k", music),
    (44100, 1, "320k", speech),
    (48000, 2, "192k", music),
    (32000, 2, "96k", speech),
    (22050, 1, "48k", music),
    (24000, 2, "160k", speech),
    (16000, 1, "32k", music),
    (11025, 1, "32k", speech),
    (8000, 2, "32k", music),
]


@pytest.mark.parametrize("rate,channels,bitrate,signal", CASES,
                         ids=[f"{r}-{c}ch-{b}-{s.__name__}" for r, c, b, s in CASES])
def test_chunked_mp3_is_exact_and_seams_are_clean(tmp_path, rate, channels, bitrate, signal):
    x = signal(24, rate, channels)
    chunk_s = 2.0
    par = encode(x, tmp_path / "par.mp3", rate, bitrate=bitrate, workers=2, chunk_s=chunk_s)
    single_pass(x, tmp_path / "one.mp3", rate, bitrate)
    assert (par.chunks, par.workers) == (12, 2)
    assert par.samples == len(x)
    assert par.delay == peek(tmp_path / "one.mp3").vbr_tag.encoder_delay == 576  # as ffmpeg's Info tag says
    spf = 1152 if rate >= 32000 else 576
    head = peek(tmp_path / "par.mp3")
    assert head.vbr_tag.frames * spf - head.vbr_tag.encoder_delay - head.vbr_tag.encoder_padding == len(x)
    assert head.vbr_tag.encoder_padding == par.padding

    dp = ffmpeg_decode(tmp_path / "par.mp3", channels)
    ds = ffmpeg_decode(tmp_path / "one.mp3", channels)
    assert len(dp) == len(x)  # (a) ffmpeg honours our LAME tag: the exact sample count
    sf = sndfile_decode(tmp_path / "par.mp3")
    assert sf.shape == dp.shape  # mpg123 agrees, sample for sample
    assert np.abs(sf - dp).max() < 1e-3

    w = rate // 100
    err_par, err_one = window_rms(x - dp, w), window_rms(x - ds, w)
    seam = np.zeros(len(err_par), bool)
    C = chunk_samples(chunk_s, rate)
    for k in range(1, par.chunks):
        at = k * C - 576 - DECODER_DELAY
        seam[max(0, (at - 2 * spf) // w):(at + 2 * spf) // w + 1] = True
    assert seam.sum() >= 11 * 3
    assert err_par[seam].max() <= err_par[~seam].max()  # (a)
    relative = np.sqrt((err_par[seam] ** 2).mean() / (err_one[seam] ** 2).mean())
    assert 0.85 <= relative <= 1.15  # (b)
    assert snr_db(x, dp) >= snr_db(x, ds) - 0.5  # (c)


def test_a_seam_whose_reservoir_does_not_fit_moves_onto_the_previous_chunks_frames(tmp_path, monkeypatch):
    """When chunk k's first frame cannot be placed even at 320k, chunk k-1's own version of that frame
    (from its post-roll) is used and the seam moves one frame; the output stays exact and clean."""
    refused = []
    fits = Relayer.fits

    def every_other_seam_frame_refused(self, frame):
        if len(refused) % 2 == 0 or refused[-1] is not None:
            refused.append(None)
            return False
        refused.append(frame)
        return fits(self, frame)

    monkeypatch.setattr(Relayer, "fits", every_other_seam_frame_refused)
    rate, chunk_s = 44100, 2.0
    x = music(12, rate, 2)
    par = encode(x, tmp_path / "par.mp3", rate, workers=2, chunk_s=chunk_s)
    assert refused.count(None) == par.chunks - 1 == 5  # one refusal per seam
    monkeypatch.setattr(Relayer, "fits", fits)
    single_pass(x, tmp_path / "one.mp3", rate)
    dp, ds = ffmpeg_decode(tmp_path / "par.mp3", 2), ffmpeg_decode(tmp_path / "one.mp3", 2)
    assert len(dp) == len(sndfile_decode(tmp_path / "par.mp3")) == len(x)
    assert snr_db(x, dp) >= snr_db(x, ds) - 0.5
    err = window_rms(x - dp, rate // 100)
    seam = np.zeros(len(err), bool)
    for k in range(1, par.chunks):
        at = k * chunk_samples(chunk_s, rate) - 576 - DECODER_DELAY
        seam[(at - 2 * 1152) // 441:(at + 3 * 1152) // 441 + 1] = True
    assert err[seam].max() <= err[~seam].max()


PRE, POST = parallel.PRE_ROLL_FRAMES * 576, parallel.POST_ROLL_FRAMES * 576


@pytest.mark.parametrize("extra", [-1, 0, 1, POST - 1, POST, POST + 1, -PRE, -PRE - 1, -PRE + 1])
def test_every_end_position_decodes_to_the_exact_length(tmp_path, extra):
    """EOF inside the next chunk's pre-roll, at a chunk boundary, inside the post-roll: always exact.
    A chunk whose post-roll the input does not fill is the last one and owns the rest; an input
    that fills it exactly leaves a fourth chunk owning just that post-roll."""
    rate = 8000
    C = chunk_samples(1.5, rate)
    assert C > PRE + POST
    x = speech(5, rate, 1)[:3 * C + extra]
    r = encode(x, tmp_path / "o.mp3", rate, bitrate="24k", workers=2, chunk_s=1.5)
    assert r.chunks == (3 if extra < POST else 4)
    assert len(ffmpeg_decode(tmp_path / "o.mp3", 1)) == len(x)
    assert len(sndfile_decode(tmp_path / "o.mp3")) == len(x)


def test_chunk_length_follows_the_total_and_short_inputs_take_one_pass(tmp_path):
    rate = 8000
    x = speech(12, rate, 1)
    long = encode(x, tmp_path / "a.mp3", rate, workers=2, total_samples=len(x))
    assert long.chunks == 2 and long.workers == 2  # chunks alike, at least MIN_CHUNK_S: 2 x 6 s
    short = encode(x[:rate * 9], tmp_path / "b.mp3", rate, workers=2, total_samples=rate * 9)
    assert short.chunks == 1  # shorter than two chunks
    unknown = encode(x[:rate * 3], tmp_path / "c.mp3", rate, workers=2)
    assert unknown.chunks == 1  # EOF before the first chunk ended
    for name, n in (("a", len(x)), ("b", rate * 9), ("c", rate * 3)):
        assert len(ffmpeg_decode(tmp_path / f"{name}.mp3", 1)) == n


def test_chunks_in_memory_stay_bounded(tmp_path, monkeypatch):
    """At most held_chunks() chunks (their PCM, then their MP3) are held at once, however long
    the input: with encoders slower than the reader, the reader waits."""
    encode_chunk = parallel._encode_chunk

    def slow(c, job):
        time.sleep(0.05)
        return encode_chunk(c, job)

    monkeypatch.setattr(parallel, "_encode_chunk", slow)
    chunk_bytes = (chunk_samples(1.0, 8000) + PRE + POST) * 4  # 8 kHz mono float, with its rolls
    monkeypatch.setattr(parallel, "BUFFER_BYTES", 4 * chunk_bytes + 100)
    assert parallel.held_chunks(2, chunk_bytes) == 4
    x = speech(40, 8000, 1)
    r = encode(x, tmp_path / "a.mp3", 8000, workers=2, chunk_s=1.0)
    assert r.chunks >= 30
    assert r.held == 4  # reached, never exceeded
    monkeypatch.setattr(parallel, "BUFFER_BYTES", 0)
    assert parallel.held_chunks(2, chunk_bytes) == 3  # never fewer than one per encoder + 1
    assert len(ffmpeg_decode(tmp_path / "a.mp3", 1)) == len(x)
    assert _leftovers(tmp_path) == ["a.mp3"]


def test_progress_follows_the_pcm_and_ends_at_one(tmp_path):
    x = speech(12, 8000, 1)
    seen = []
    encode(x, tmp_path / "a.mp3", 8000, workers=2, total_samples=len(x), chunk_s=1.0, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 2


def test_a_partial_sample_at_the_end_is_dropped(tmp_path):
    x = speech(2, 8000, 2)
    data = x.tobytes() + b"\x00\x00\x80"
    r = parallel.encode_pcm(io.BytesIO(data), tmp_path / "a.mp3", fmt="mp3", rate=8000, channels=2, workers=2,
                            chunk_s=0.5)
    assert r.samples == len(x) and len(ffmpeg_decode(tmp_path / "a.mp3", 2)) == len(x)


class _Trickle(io.RawIOBase):
    """A raw pipe: every read returns what happens to be there, often less than one sample."""

    def __init__(self, data: bytes, seed: int = 4):
        self._data, self._pos, self._rng = data, 0, np.random.default_rng(seed)

    def read(self, n=-1):
        size = int(self._rng.choice([1, 3, 5, 7, 4093, 65537]))
        block = self._data[self._pos:self._pos + min(n, size)]
        self._pos += len(block)
        return block


@pytest.mark.parametrize("workers", [1, 2])
def test_short_reads_are_not_the_end(tmp_path, workers):
    x = speech(4, 8000, 2)
    r = parallel.encode_pcm(_Trickle(x.tobytes()), tmp_path / "a.mp3", fmt="mp3", rate=8000, channels=2,
                            workers=workers, chunk_s=1.0)
    assert r.samples == len(x) and len(ffmpeg_decode(tmp_path / "a.mp3", 2)) == len(x)


# -- other formats: one pass, same encoder options as the encode path ----------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_encoder_args_are_the_encode_paths(fmt):
    for bitrate in (None, "96k"):
        if bitrate and FORMATS[fmt].lossless:
            continue
        options = Options(format=fmt, bitrate=bitrate)
        cmd = encode_module.encoder_command(options, Layout(44100, 2), "OUT")
        ours = parallel._Job(fmt, 44100, 2, bitrate, None, None).input_args("pipe:0")
        ours += parallel.encoder_args(fmt, 44100, 2, bitrate) + ["-f", FORMATS[fmt].muxer, "OUT"]
        assert [a for a in ours if a != "-y"] == [a for a in cmd if a not in ("-y", "-progress", "pipe:1")]
        # what the encode path hands over (its bitrate, resolved) gives the same options
        resolved = encode_module.bitrate(options, Layout(44100, 2))
        assert parallel.encoder_args(fmt, 44100, 2, resolved) == parallel.encoder_args(fmt, 44100, 2, bitrate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "m4a", "ogg"])
def test_single_pass_formats(tmp_path, fmt):
    x = music(3, 48000, 2)
    out = tmp_path / f"a.{fmt}"
    r = encode(x, out, 48000, fmt=fmt, workers=2, chunk_s=1.0)
    assert fmt not in parallel.parallel_formats()
    assert (r.chunks, r.workers, r.samples) == (1, 1, len(x))
    decoded = ffmpeg_decode(out, 2)
    if FORMATS[fmt].lossless:
        assert len(decoded) == len(x)
        assert np.abs(decoded - x).max() < 2 / 32768
    else:  # the container trims the priming (edit list, granule position)
        assert abs(len(decoded) - len(x)) <= 1024


# -- failures and cleanup --------------------------------------------------------------------------

def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _children_of_us() -> list[int]:
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry))
    return pids


def test_an_encoder_failure_is_our_message_and_leaves_nothing(tmp_path, monkeypatch):
    """One ffmpeg pass (ogg) and LAME in this process (mp3, one worker or two): our message, no
    tool output, no file left."""
    tool = tmp_path / "bin" / "ffmpeg"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'raw ffmpeg noise' >&2\nexit 3\n")
    tool.chmod(0o755)
    monkeypatch.setattr(parallel, "ffmpeg_binary", lambda: str(tool))
    calls = []

    def refuse(self, addr, n, out):
        calls.append(n)
        return -3  # what LAME returns when its output buffer is too small

    monkeypatch.setattr(lame_binding.Encoder, "_lame_encode", refuse)
    out = tmp_path / "out"
    out.mkdir()
    for fmt, workers, message in (("ogg", 2, "exit 3"), ("mp3", 1, "LAME error -3"), ("mp3", 2, "LAME error -3")):
        with pytest.raises(StitchError) as e:
            encode(speech(3, 8000, 1), out / f"a.{fmt}", 8000, fmt=fmt, workers=workers, chunk_s=0.5)
        assert message in e.value.message and "noise" not in e.value.message
        assert _leftovers(out) == []
    assert calls  # the mp3 runs did reach LAME


class _FailingPcm(io.RawIOBase):
    """A PCM source that breaks after a few blocks, like a decoder dying mid-stream."""

    def __init__(self, data: bytes, fail_after: int):
        self._data, self._pos, self._fail_after = data, 0, fail_after

    def read(self, n=-1):
        if self._pos >= self._fail_after:
            raise OSError("the decoder died")
        block = self._data[self._pos:self._pos + min(n, 64000)]
        self._pos += len(block)
        return block


def test_a_failing_source_stops_the_encoders_and_cleans_up(tmp_path):
    x = speech(30, 16000, 2)
    out = tmp_path / "out"
    out.mkdir()
    src = _FailingPcm(x.tobytes(), fail_after=len(x.tobytes()) // 2)
    before = set(_children_of_us())  # other tests' servers may be running
    with pytest.raises(OSError, match="decoder died"):
        parallel.encode_pcm(src, out / "a.mp3", fmt="mp3", rate=16000, channels=2, workers=2, chunk_s=1.0)
    assert _leftovers(out) == []
    assert set(_children_of_us()) <= before


def test_children_die_with_the_thread_that_started_them():
    """PR_SET_PDEATHSIG: an encoder whose starter is gone (we were killed) does not run on."""
    children = parallel.Children()
    started = []
    t = threading.Thread(target=lambda: started.append(children.popen(["sleep", "30"])))
    t.start()
    t.join()
    proc = started[0]
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.returncode == -9


def test_unknown_format_or_layout_is_refused(tmp_path):
    with pytest.raises(StitchError):
        parallel.encode_pcm(io.BytesIO(b""), tmp_path / "a", fmt="aiff", rate=44100, channels=2)
    with pytest.raises(StitchError):
        parallel.encode_pcm(io.BytesIO(b""), tmp_path / "a", fmt="mp3", rate=44100, channels=6)


def test_a_write_failure_while_joining_names_the_reason_not_the_path(tmp_path, monkeypatch):
    """ENOSPC in the assembler: "No space left on device", without the temp file's path."""
    import errno

    real_open = open

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "secret.part"))

        def close(self):
            self._f.close()

    def opening(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Full(f) if str(path).endswith(".part") and "w" in mode else f

    monkeypatch.setattr("builtins.open", opening)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StitchError) as e:
        encode(speech(12, 8000, 1), out / "a.mp3", 8000, workers=2, chunk_s=2.0)
    assert e.value.message == "cannot write the mp3 output: No space left on device"
    assert "secret" not in e.value.message
    monkeypatch.undo()
    assert _leftovers(out) == []
