"""The in-process decode of plain MP3 joins (engine/native.py, engine/sndfile.py).

A plain join is decoded with libsndfile in this process instead of an ffmpeg decode graph. Its
PCM must be the graph's: the same length to the sample, the same samples to within float
rounding, for files the way other encoders write them. A part libsndfile sees otherwise than
the probe (untagged files: mpg123 estimates their length from the file size) goes through an
ffmpeg of its own, and the PCM is still the graph's.
"""
from __future__ import annotations

import logging
import subprocess

import numpy as np
import pytest

from chalicelib.engine import PartInput, loudness, native, probe, sndfile, stitch
from chalicelib.engine.graph import Layout, graph_pcm, streamed_pcm
from chalicelib.engine.segment import Segment
from chalicelib.errors import UnsupportedAudio
from chalicelib.options import Options
from tests.audio import ffmpeg_frames, ffmpeg_mp3, lameenc_mp3, sf_frames

pytestmark = pytest.mark.skipif(sndfile.library() is None, reason="no libsndfile")

# name: (builder, whether libsndfile decodes it: its length agrees with the probe's)
KINDS = {
    "ffmpeg 44.1k": (lambda p: ffmpeg_mp3(p, 44100), True),
    "ffmpeg 48k 320k": (lambda p: ffmpeg_mp3(p, 48000, rate=48000, bitrate="320k"), True),
    "ffmpeg MPEG-2 22.05k": (lambda p: ffmpeg_mp3(p, 22050, rate=22050, bitrate="64k"), True),
    "ffmpeg MPEG-2.5 8k mono": (lambda p: ffmpeg_mp3(p, 8000, rate=8000, channels=1, bitrate="16k"), True),
    "LAME tag": (lambda p: lameenc_mp3(p, 2 * 44100), True),
    "LAME tag, CRC frames": (lambda p: lameenc_mp3(p, 44100, crc=True), True),
    "LAME tag MPEG-2.5 12k": (lambda p: lameenc_mp3(p, 12000, rate=12000, bitrate=32), True),
    "no tag (lame -t)": (lambda p: lameenc_mp3(p, 2 * 44100, tag=False), False),
    "no tag (sox), 22.05k": (lambda p: lameenc_mp3(p, 22050, rate=22050, bitrate=64, tag=False), False),
    "no tag, CRC frames": (lambda p: lameenc_mp3(p, 44100, crc=True, tag=False), False),
    "no Xing frame (ffmpeg -write_xing 0)": (lambda p: ffmpeg_mp3(p, 44100, xing=False), False),
}


def segment_of(path, index: int = 0) -> Segment:
    info = probe(path, index)
    return Segment(info, 0.0, info.duration_s, 0.0, cut_end=False)


def read_all(stream, size: int = 1 << 16) -> bytes:
    out, buf = bytearray(), bytearray(size)
    while n := stream.readinto(buf):
        out += buf[:n]
    return bytes(out)


def native_bytes(segments, layout, size: int = 1 << 16) -> bytes:
    with native.native_pcm(segments, layout) as pcm:
        return read_all(pcm.stream, size)


def graph_bytes(segments, layout) -> bytes:
    with graph_pcm(segments, layout) as pcm:
        return pcm.stream.read()


def f32(data: bytes, channels: int) -> np.ndarray:
    return np.frombuffer(data, "<f4").reshape(-1, channels)


def record_popen(monkeypatch) -> list[list[str]]:
    """The commands of every process started from here on (they still run)."""
    started = []
    real = subprocess.Popen

    def popen(cmd, *a, **kw):
        started.append(cmd)
        return real(cmd, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


@pytest.mark.parametrize("kind", KINDS)
def test_pcm_is_the_decode_graphs(tmp_path, kind, caplog):
    build, decoded_here = KINDS[kind]
    path = tmp_path / "part.mp3"
    build(path)
    s = segment_of(path)
    layout = Layout(s.info.sample_rate, s.info.channels)
    assert s.plain(layout.rate, layout.channels)
    with caplog.at_level(logging.INFO, logger="chalicelib.engine.native"):
        ours = f32(native_bytes([s], layout), layout.channels)
    theirs = f32(graph_bytes([s], layout), layout.channels)
    assert len(ours) == len(theirs) == s.samples(layout.rate)
    assert np.abs(ours - theirs).max() < 1e-5
    by_ffmpeg = "decoded by ffmpeg" in caplog.text
    assert by_ffmpeg is not decoded_here, caplog.text


def test_a_join_with_gaps_reads_alike_in_any_piece_size(tmp_path):
    """Parts of 1 s, 0.7 s (not a whole frame) and mono-free stereo, 250 ms gaps of zeros; read
    in pieces of 7 bytes (less than a sample frame: split across reads) and of 1 MB."""
    paths = [tmp_path / f"p{i}.mp3" for i in range(3)]
    for i, (p, n) in enumerate(zip(paths, (44100, 30870, 44100), strict=True)):
        ffmpeg_mp3(p, n, seed=i)
    segments = [segment_of(p, i) for i, p in enumerate(paths)]
    layout = Layout(44100, 2, gap=11025)
    big = native_bytes(segments, layout, 1 << 20)
    assert native_bytes(segments, layout, 7) == big
    assert native_bytes(segments, layout, 4096 + 4) == big
    pcm = f32(big, 2)
    assert len(pcm) == layout.total(segments) == 44100 + 30870 + 44100 + 2 * 11025
    graph = f32(graph_bytes(segments, layout), 2)
    assert len(graph) == len(pcm) and np.abs(graph - pcm).max() < 1e-5
    assert not pcm[44100:44100 + 11025].any()  # the gap is zeros
    assert pcm[44100 - 100:44100].any() and pcm[44100 + 11025:44100 + 11025 + 100].any()


def test_a_part_cut_short_after_probing_is_padded_to_its_length(tmp_path, caplog):
    path = tmp_path / "short.mp3"
    lameenc_mp3(path, 4 * 44100)
    s = segment_of(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # half the frames are gone
    layout = Layout(44100, 2)
    with caplog.at_level(logging.WARNING, logger="chalicelib.engine.native"):
        pcm = f32(native_bytes([s], layout), 2)
    assert len(pcm) == s.samples(44100)
    assert "samples short; padded with silence" in caplog.text
    assert not pcm[-44100:].any() and pcm[:44100].any()


def test_a_part_libsndfile_cannot_open_is_decoded_by_ffmpeg(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    ffmpeg_mp3(path, 44100)
    s = segment_of(path)
    layout = Layout(44100, 2)

    def refuse(_path):
        raise OSError("no")

    expected = graph_bytes([s], layout)
    monkeypatch.setattr(sndfile, "Mp3Reader", refuse)
    assert native_bytes([s], layout) == expected


def test_a_part_ffmpeg_then_cannot_decode_is_named(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    ffmpeg_mp3(path, 44100)
    s = segment_of(path, 3)
    path.write_bytes(b"\0" * 4096)  # replaced after probing by something no decoder reads
    with pytest.raises(UnsupportedAudio) as err:
        native_bytes([s], Layout(44100, 2))
    assert err.value.part == 3 and "cannot be decoded" in str(err.value)


def test_what_is_native(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    ffmpeg_mp3(path, 44100)
    s = segment_of(path)
    plain = Options(join="exact")
    layout = Layout(44100, 2)
    assert native.applies(plain, [s, s], layout)
    assert native.applies(Options(join="exact", gap_ms=300), [s, s], Layout(44100, 2, gap=13230))
    assert native.applies(Options(join="exact", loudness_lufs=-16), [s], layout)
    assert native.applies(Options(join="exact", fade_in_ms=100), [s], Layout(44100, 2, fade_in=4410))
    assert native.applies(plain, [s.with_gain(-3.0)], layout)
    # a fade longer than the part it starts in reaches into the next: the graph's
    assert not native.applies(Options(join="exact", fade_in_ms=1500), [s, s], Layout(44100, 2, fade_in=66150))
    assert not native.applies(Options(join="exact", crossfade_ms=100), [s, s], Layout(44100, 2, crossfade=4410))
    assert not native.applies(Options(join="exact", format="ogg"), [s], layout)
    assert not native.applies(plain, [Segment(s.info, 0.25, 0.5, 0.0)], layout)  # trimmed
    assert not native.applies(plain, [s], Layout(48000, 2))  # resampled
    assert not native.applies(plain, [s], Layout(44100, 1))  # downmixed
    monkeypatch.setattr(sndfile, "library", lambda: None)
    assert not native.applies(plain, [s], layout)


def _mixed_parts(tmp_path):
    """A LAME file, an ffmpeg file and an untagged one (decoded by ffmpeg, not here)."""
    paths = [tmp_path / f"p{i}.mp3" for i in range(3)]
    lameenc_mp3(paths[0], 2 * 44100, seed=1)
    ffmpeg_mp3(paths[1], 30870, seed=2)
    lameenc_mp3(paths[2], 44100, seed=3, tag=False)
    return [segment_of(p, i) for i, p in enumerate(paths)]


def test_gains_and_fades_give_the_graphs_pcm(tmp_path, caplog):
    segments = _mixed_parts(tmp_path)
    # cuts only: a boost is measured first (see the loudness tests below)
    segments = [segments[0].with_gain(-6.0), segments[1], segments[2].with_gain(-2.5)]
    layout = Layout(44100, 2, gap=2205, fade_in=22050, fade_out=11025)
    with caplog.at_level(logging.INFO, logger="chalicelib.engine.native"):
        ours = f32(native_bytes(segments, layout, 10007), 2)
    assert caplog.text.count("(p2.mp3): decoded by ffmpeg") == 1 and "(p0.mp3)" not in caplog.text
    theirs = f32(graph_bytes(segments, layout), 2)
    assert len(ours) == len(theirs) == layout.total(segments)
    assert np.abs(ours - theirs).max() < 1e-5
    assert abs(ours[0]).max() < 1e-3  # faded in from silence


def test_only_filters_run_in_ffmpeg_for_parts_decoded_here(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    lameenc_mp3(path, 44100)
    s = segment_of(path).with_gain(-3.0)
    started = record_popen(monkeypatch)
    pcm = f32(native_bytes([s, s], Layout(44100, 2)), 2)
    assert len(pcm) == 2 * 44100 and len(started) == 2
    for cmd in started:
        assert "pipe:0" in cmd and str(path) not in cmd and any(a.startswith("volume=-3.0000dB,") for a in cmd)


def test_loudness_matching_gives_the_streamed_graphs_pcm_and_levels(tmp_path):
    segments = _mixed_parts(tmp_path)
    layout = Layout(44100, 2, gap=4410)
    with native.native_pcm(segments, layout, -20.0, -1.5) as pcm:
        ours = f32(read_all(pcm.stream), 2)
    with streamed_pcm(segments, layout, -20.0, -1.5) as graph:
        theirs = f32(graph.stream.read(), 2)
    assert [s.gain_db for s in pcm.segments] == pytest.approx([s.gain_db for s in graph.segments], abs=0.01)
    assert all(s.gain_db for s in pcm.segments)
    assert len(ours) == len(theirs) == layout.total(segments)
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("kind", ["LAME tag", "ffmpeg MPEG-2 22.05k", "no tag (lame -t)"])
def test_a_level_measured_from_pcm_decoded_here_is_ffmpegs(tmp_path, kind, monkeypatch):
    path = tmp_path / "part.mp3"
    KINDS[kind][0](path)
    s = segment_of(path)
    ours = loudness.measure(s)
    monkeypatch.setattr(native, "measurable", lambda _s: False)
    theirs = loudness.measure(s)
    assert ours.lufs == pytest.approx(theirs.lufs, abs=0.05)
    assert ours.true_peak_db == pytest.approx(theirs.true_peak_db, abs=0.05)


def test_a_part_that_cannot_be_measured_is_named(tmp_path):
    path = tmp_path / "p.mp3"
    lameenc_mp3(path, 44100)
    s = segment_of(path, 2)
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(UnsupportedAudio) as err:
        with native.native_pcm([s], Layout(44100, 2), -16.0, -1.5) as pcm:
            read_all(pcm.stream)
    assert err.value.part == 2 and "measure loudness" in str(err.value)


def test_a_plain_join_starts_no_decoder_and_plays_its_length_in_both_decoders(tmp_path, monkeypatch):
    paths = [tmp_path / f"p{i}.mp3" for i in range(3)]
    lengths = (44100, 30870, 2 * 44100)
    for i, (p, n) in enumerate(zip(paths, lengths, strict=True)):
        lameenc_mp3(p, n, seed=i, crc=i == 1)
    started = record_popen(monkeypatch)
    out = tmp_path / "out.mp3"
    result = stitch([PartInput(p) for p in paths], out, Options(join="exact", gap_ms=100))
    assert started == []
    monkeypatch.undo()
    total = sum(lengths) + 2 * 4410
    assert result.join == "exact" and round(result.duration_s * 44100) == total
    assert ffmpeg_frames(out) == sf_frames(out) == total
    assert [round(p.start_s * 44100) for p in result.parts] == [0, 44100 + 4410, 44100 + 30870 + 2 * 4410]


def _failing_reads(monkeypatch):
    """libsndfile's reads fail after the first (a disk error, a file replaced mid-read)."""
    real = sndfile.Mp3Reader.read_into
    calls = []

    def read_into(self, address, frames):
        calls.append(frames)
        if len(calls) > 1:
            raise OSError("read error")
        return real(self, address, frames)

    monkeypatch.setattr(sndfile.Mp3Reader, "read_into", read_into)


def test_a_part_whose_decoding_here_fails_while_filtered_is_named_not_padded(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    lameenc_mp3(path, 4 * 44100)
    s = segment_of(path, 1).with_gain(-3.0)
    _failing_reads(monkeypatch)
    with pytest.raises(UnsupportedAudio) as err:
        native_bytes([s], Layout(44100, 2))
    assert err.value.part == 1 and "cannot be decoded" in str(err.value)


def test_a_part_whose_decoding_here_fails_while_measured_is_named(tmp_path, monkeypatch):
    path = tmp_path / "p.mp3"
    lameenc_mp3(path, 4 * 44100)
    s = segment_of(path, 4)
    _failing_reads(monkeypatch)
    with pytest.raises(UnsupportedAudio) as err:
        loudness.measure(s)
    assert err.value.part == 4 and "measure loudness" in str(err.value)
