"""The engine on real audio: generated with ffmpeg's lavfi, measured by decoding with pydub."""
from __future__ import annotations

import pytest

from chalicelib.engine import PartInput, probe, stitch
from chalicelib.errors import BadRequest, PartNotFound, UnsupportedAudio
from chalicelib.options import Options, PartOptions
from tests.audio import decode_audio, decoded_duration, decoded_frames, make_tone


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp3": make_tone(d / "a.mp3", 1.5),
        "wav": make_tone(d / "b.wav", 1.0, rate=22050, channels=1, freq=300),
        "m4a": make_tone(d / "c.m4a", 1.0, freq=550),
        "ogg": make_tone(d / "d.ogg", 1.0, freq=660),
        "flac": make_tone(d / "e.flac", 1.0, rate=48000, freq=770),
        "quiet": make_tone(d / "quiet.wav", 1.0, volume=0.05),
        "loud": make_tone(d / "loud.wav", 1.0, volume=0.8, freq=880),
    }


def leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def mixed(clips):
    return [PartInput(clips[k]) for k in ("mp3", "wav", "m4a", "ogg", "flac")]


def test_mixed_inputs_one_encode(clips, tmp_path):
    out = tmp_path / "out.mp3"
    result = stitch(mixed(clips), out, Options())
    assert result.mode == "encode" and result.format == "mp3"
    assert result.size_bytes == out.stat().st_size
    seg = decode_audio(out)
    # The highest input rate wins (48 kHz flac); a mono part is upmixed to the widest layout.
    assert seg.frame_rate == 48000 and seg.channels == 2
    assert seg.frame_count() / 48000 == pytest.approx(5.5, abs=0.06)
    assert result.duration_s == pytest.approx(5.5, abs=0.06)
    starts = [p.start_s for p in result.parts]
    ends = [p.end_s for p in result.parts]
    assert starts[0] == 0 and starts[1:] == pytest.approx(ends[:-1])
    assert ends == pytest.approx([1.5, 2.5, 3.5, 4.5, 5.5], abs=0.03)
    assert leftovers(tmp_path, {"out.mp3"}) == []


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "ogg", "wav", "flac"])
def test_output_formats_rate_channels(clips, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    data = {"format": fmt, "sample_rate": 22050, "channels": 1}
    if fmt in ("mp3", "m4a", "ogg"):
        data["bitrate"] = "64k"
    stitch([PartInput(clips["mp3"]), PartInput(clips["ogg"])], out, Options.from_dict(data))
    seg = decode_audio(out)
    assert (seg.frame_rate, seg.channels) == (22050, 1)
    assert seg.frame_count() / 22050 == pytest.approx(2.5, abs=0.06)
    info = probe(out)
    assert info.sample_rate == 22050 and info.channels == 1


def test_bitrate_is_applied(clips, tmp_path):
    low, high = tmp_path / "low.mp3", tmp_path / "high.mp3"
    parts = [PartInput(clips["wav"]), PartInput(clips["flac"])]
    stitch(parts, low, Options.from_dict({"bitrate": "32k"}))
    stitch(parts, high, Options.from_dict({"bitrate": "256k"}))
    assert probe(low).bitrate_kbps == 32 and probe(high).bitrate_kbps == 256
    assert high.stat().st_size > 4 * low.stat().st_size


def flat(result):
    return [t for p in result.parts for t in (p.start_s, p.end_s)]


def rms_db(seg, start_s, end_s):
    return seg[int(start_s * 1000):int(end_s * 1000)].dBFS


def test_gap_inserts_silence_and_shifts_offsets(clips, tmp_path):
    out = tmp_path / "gap.wav"
    parts = [PartInput(clips["wav"]), PartInput(clips["flac"]), PartInput(clips["ogg"])]
    result = stitch(parts, out, Options.from_dict({"format": "wav", "gap_ms": 400}))
    seg = decode_audio(out)
    assert seg.frame_count() / seg.frame_rate == pytest.approx(3.8, abs=0.03)
    assert flat(result) == pytest.approx([0, 1, 1.4, 2.4, 2.8, 3.8], abs=0.02)
    assert rms_db(seg, 1.05, 1.35) == float("-inf")  # digital silence in the gap
    assert rms_db(seg, 2.45, 2.75) == float("-inf")
    assert rms_db(seg, 1.5, 2.3) > -40


def test_crossfade_overlaps_parts(clips, tmp_path):
    out = tmp_path / "xf.wav"
    parts = [PartInput(clips[k]) for k in ("mp3", "flac", "m4a")]
    result = stitch(parts, out, Options.from_dict({"format": "wav", "crossfade_ms": 300}))
    assert decoded_duration(out) == pytest.approx(3.5 - 0.6, abs=0.05)
    assert [p.start_s for p in result.parts] == pytest.approx([0, 1.2, 1.9], abs=0.02)
    assert result.duration_s == pytest.approx(2.9, abs=0.05)


def test_fades(clips, tmp_path):
    out = tmp_path / "fade.wav"
    stitch([PartInput(clips["loud"]), PartInput(clips["loud"])], out,
           Options.from_dict({"format": "wav", "fade_in_ms": 500, "fade_out_ms": 500}))
    seg = decode_audio(out)
    middle = rms_db(seg, 0.8, 1.2)
    assert rms_db(seg, 0.0, 0.05) < middle - 20
    assert rms_db(seg, 1.95, 2.0) < middle - 20
    assert rms_db(seg, 0.5, 1.5) == pytest.approx(middle, abs=0.5)


def test_gain_and_trim(clips, tmp_path):
    out = tmp_path / "trim.wav"
    parts = [PartInput(clips["loud"], PartOptions.from_dict({"start_s": 0.25, "end_s": 0.75})),
             PartInput(clips["loud"], PartOptions.from_dict({"gain_db": -12}))]
    result = stitch(parts, out, Options.from_dict({"format": "wav"}))
    seg = decode_audio(out)
    assert seg.frame_count() / seg.frame_rate == pytest.approx(1.5, abs=0.01)
    assert flat(result) == pytest.approx([0, 0.5, 0.5, 1.5], abs=0.01)
    assert rms_db(seg, 0.6, 1.4) - rms_db(seg, 0.05, 0.45) == pytest.approx(-12, abs=0.3)


def test_loudness_matches_quiet_and_loud_parts(clips, tmp_path):
    parts = [PartInput(clips["quiet"]), PartInput(clips["loud"])]
    plain, matched = tmp_path / "plain.wav", tmp_path / "matched.wav"
    stitch(parts, plain, Options.from_dict({"format": "wav"}))
    stitch(parts, matched, Options.from_dict({"format": "wav", "loudness_lufs": -20}))
    a, b = decode_audio(plain), decode_audio(matched)
    assert rms_db(a, 1.1, 1.9) - rms_db(a, 0.1, 0.9) > 20
    assert abs(rms_db(b, 1.1, 1.9) - rms_db(b, 0.1, 0.9)) < 1.0


def test_progress_reported_and_ends_at_one(clips, tmp_path):
    seen = []
    stitch(mixed(clips), tmp_path / "p.ogg", Options.from_dict({"format": "ogg"}), progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0 <= f <= 1 for f in seen)


def test_probe_fields(clips):
    info = probe(clips["wav"], 4, "b.wav")
    assert (info.sample_rate, info.channels) == (22050, 1)
    assert info.duration_s == pytest.approx(1.0, abs=0.01)
    m = probe(clips["mp3"])
    assert (m.codec, m.sample_rate, m.channels, m.bitrate_kbps) == ("mp3", 44100, 2, 128)
    assert m.duration_s == pytest.approx(decoded_duration(clips["mp3"]), abs=1e-6)


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp3").write_bytes(b"")
    (d / "b.txt").write_text("hello, this is not audio\n" * 20)
    full = make_tone(d / "full.mp3", 2.0).read_bytes()
    (d / "cut.mp3").write_bytes(full[: len(full) // 2])
    return d


@pytest.mark.parametrize("name, error, part_message", [
    ("missing.mp3", PartNotFound, "part 1 (missing.mp3): file not found"),
    ("empty.mp3", UnsupportedAudio, "part 1 (empty.mp3): empty file"),
    ("b.txt", UnsupportedAudio, "part 1 (b.txt): no audio stream"),
    ("cut.mp3", UnsupportedAudio, "part 1 (cut.mp3): truncated"),
])
def test_bad_part_named_by_index(clips, bad, tmp_path, name, error, part_message):
    out = tmp_path / "out.mp3"
    with pytest.raises(error) as exc:
        stitch([PartInput(clips["mp3"]), PartInput(bad / name)], out, Options())
    assert exc.value.part == 1
    assert exc.value.message.startswith(part_message)
    assert leftovers(tmp_path, set()) == []


def test_trim_beyond_end(clips, tmp_path):
    parts = [PartInput(clips["wav"]), PartInput(clips["mp3"], PartOptions.from_dict({"start_s": 2.0}))]
    with pytest.raises(BadRequest) as exc:
        stitch(parts, tmp_path / "o.mp3", Options())
    assert exc.value.part == 1 and exc.value.field == "message_parts[1].start_s"
    assert "beyond its end (1.50 s)" in exc.value.message
    parts[1] = PartInput(clips["mp3"], PartOptions.from_dict({"end_s": 9.0}))
    with pytest.raises(BadRequest) as exc:
        stitch(parts, tmp_path / "o.mp3", Options())
    assert exc.value.field == "message_parts[1].end_s"
    assert leftovers(tmp_path, set()) == []


def test_crossfade_longer_than_a_part(clips, tmp_path):
    parts = [PartInput(clips["mp3"]), PartInput(clips["wav"], name="a.wav")]
    with pytest.raises(BadRequest) as exc:
        stitch(parts, tmp_path / "o.mp3", Options.from_dict({"crossfade_ms": 1200}))
    assert exc.value.field == "crossfade_ms" and exc.value.part == 1
    assert exc.value.message == "crossfade_ms (1200) is longer than part 1 (a.wav) (1.0 s)"
    assert leftovers(tmp_path, set()) == []


def test_fade_longer_than_output(clips, tmp_path):
    with pytest.raises(BadRequest) as exc:
        stitch([PartInput(clips["wav"])], tmp_path / "o.mp3", Options.from_dict({"fade_out_ms": 5000}))
    assert exc.value.field == "fade_out_ms"


def test_failed_encode_leaves_existing_output_untouched(clips, bad, tmp_path):
    out = tmp_path / "keep.mp3"
    out.write_bytes(b"previous result")
    with pytest.raises(UnsupportedAudio):
        stitch([PartInput(clips["wav"]), PartInput(bad / "b.txt")], out, Options.from_dict({"gap_ms": 10}))
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path, {"keep.mp3"}) == []


def test_part_ffmpeg_cannot_decode_is_blamed(clips, tmp_path):
    """A header mutagen accepts (WAVE, unknown codec tag) but no decoder exists for: the failed
    encode is traced back to the part."""
    import struct

    data = bytes(range(256)) * 64
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    odd = tmp_path / "odd.wav"
    odd.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    out = tmp_path / "o.mp3"
    with pytest.raises(UnsupportedAudio) as exc:
        stitch([PartInput(clips["wav"]), PartInput(odd)], out, Options())
    assert exc.value.part == 1 and exc.value.message.startswith("part 1 (odd.wav):")
    assert leftovers(tmp_path, {"odd.wav"}) == []


def test_loudness_with_gap_trim_and_fades_streams_exact_lengths(clips, tmp_path):
    """The loudness path streams parts into the encoder: lengths, gaps and offsets still exact."""
    out = tmp_path / "l.wav"
    parts = [PartInput(clips["quiet"]), PartInput(clips["loud"], PartOptions.from_dict({"start_s": 0.2, "end_s": 0.9})),
             PartInput(clips["wav"])]
    opts = Options.from_dict({"format": "wav", "loudness_lufs": -23, "gap_ms": 250, "fade_out_ms": 200})
    seen = []
    result = stitch(parts, out, opts, progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    seg = decode_audio(out)
    assert seg.frame_rate == 44100 and seg.channels == 2
    assert seg.frame_count() == round((1.0 + 0.25 + 0.7 + 0.25 + 1.0) * 44100)
    assert flat(result) == pytest.approx([0, 1, 1.25, 1.95, 2.2, 3.2], abs=0.005)
    assert rms_db(seg, 1.03, 1.22) == float("-inf") and rms_db(seg, 1.98, 2.17) == float("-inf")
    levels = [rms_db(seg, 0.1, 0.9), rms_db(seg, 1.3, 1.9), rms_db(seg, 2.3, 2.9)]
    assert max(levels) - min(levels) < 1.0
    assert rms_db(seg, 3.15, 3.2) < levels[2] - 10  # the fade-out


def test_loudness_with_crossfade_measures_first(clips, tmp_path):
    out = tmp_path / "x.wav"
    parts = [PartInput(clips["quiet"]), PartInput(clips["loud"])]
    result = stitch(parts, out, Options.from_dict({"format": "wav", "loudness_lufs": -20, "crossfade_ms": 200}))
    seg = decode_audio(out)
    assert seg.frame_count() / seg.frame_rate == pytest.approx(1.8, abs=0.01)
    assert result.parts[1].start_s == pytest.approx(0.8, abs=0.005)
    assert abs(rms_db(seg, 0.1, 0.7) - rms_db(seg, 1.1, 1.7)) < 1.0


def test_loudness_part_that_cannot_be_measured(clips, tmp_path):
    import struct

    fmt = struct.pack("<HHIIHH", 0x1234, 1, 8000, 16000, 2, 16)
    data = bytes(4096)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    odd = tmp_path / "odd.wav"
    odd.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(UnsupportedAudio) as exc:
        stitch([PartInput(clips["wav"]), PartInput(odd)], tmp_path / "o.mp3", Options.from_dict({"loudness_lufs": -16}))
    assert exc.value.part == 1
    assert leftovers(tmp_path, {"odd.wav"}) == []


def test_one_graph_decodes_to_pcm_and_a_separate_encoder_encodes_it(clips, tmp_path):
    """The decode side is one ffmpeg writing f32le on stdout, every part cut to its exact length."""
    from chalicelib.engine import graph
    from chalicelib.engine.segment import Segment

    infos = [probe(clips["mp3"], 0), probe(clips["m4a"], 1)]
    segs = [Segment(i, 0.0, i.duration_s, 0.0, cut_end=False) for i in infos]
    layout = graph.Layout.of(Options(), 44100, 2, 2)
    cmd = graph.graph_command(segs, layout)
    assert cmd[-7:] == ["-f", "f32le", "-ar", "44100", "-ac", "2", "pipe:1"]
    chains = cmd[cmd.index("-filter_complex") + 1].split(";")
    # The MP3 decodes to its gapless length as it is; ffmpeg plays an AAC's last frame whole,
    # past the edit list, so that part is cut to its length.
    assert chains[0] == "[1:a:0]aresample=44100,aformat=sample_fmts=flt:channel_layouts=stereo," \
                        "atrim=end_sample=44100,apad=whole_len=44100[p1]"
    assert chains[-2] == "[0:a:0][p1]concat=n=2:v=0:a=1[j]"
    # out in big frames: fewer writes on the pipe (graph.OUT_FRAME)
    assert chains[-1] == f"[j]asetnsamples=n={graph.OUT_FRAME}:p=0[out]"
    assert "-t" not in cmd
    out = tmp_path / "o.mp3"
    result = stitch([PartInput(clips["mp3"]), PartInput(clips["m4a"])], out, Options.from_dict({"bitrate": "96k"}))
    assert decoded_frames(out) == 66150 + 44100 and result.duration_s == 2.5


@pytest.mark.parametrize("streamed", [False, True])
def test_failed_loudness_measurement_kills_the_others(clips, tmp_path, streamed):
    """A part that cannot be measured ends the job at once: measurements still running (here one
    that would wait forever on a FIFO nobody writes) are killed, not waited for."""
    import os
    import struct
    import threading

    from chalicelib.engine import graph, loudness
    from chalicelib.engine.probe import AudioInfo
    from chalicelib.engine.segment import Segment

    fmt = struct.pack("<HHIIHH", 0x1234, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 4096) + bytes(4096)
    odd = tmp_path / "odd.wav"
    odd.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    fifo = tmp_path / "never.wav"
    os.mkfifo(fifo)
    segments = [Segment(AudioInfo(odd, 0.1, "pcm", 8000, 1, index=0), 0.0, 0.1, 0.0),
                Segment(AudioInfo(fifo, 60.0, "pcm", 44100, 2, index=1), 0.0, 60.0, 0.0)]
    layout = graph.Layout.of(Options(), 44100, 2, 2)
    outcome = []

    def run():
        try:
            if streamed:
                with graph.streamed_pcm(segments, layout, -16, -1.0) as pcm:
                    while pcm.stream.read(1 << 16):
                        pass
            else:
                loudness.leveled(segments, -16, -1.0)
        except UnsupportedAudio as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # unblock the measurement so the test run can end
        with open(fifo, "wb"):
            pass
        worker.join(30)
        pytest.fail("the failed measurement waited for the one still running")
    assert [e.part for e in outcome] == [0]


def test_streamed_encoder_failure_is_not_blamed_on_a_part(clips, tmp_path, monkeypatch):
    """The loudness path's encoder reads raw PCM: its failure is reported as is, without
    decoding every part again to find one to blame."""
    from chalicelib.engine import encode, parallel
    from chalicelib.errors import StitchError

    real = encode.encoder_command
    monkeypatch.setattr(encode, "encoder_command", lambda *a: [*real(*a)[:-1], "-no-such-option", "x"])
    monkeypatch.setattr(parallel, "parallel_formats", frozenset)  # the one-ffmpeg encoder
    monkeypatch.setattr(encode, "decodes", lambda info: pytest.fail("a part was decoded to blame it"))
    with pytest.raises(StitchError) as exc:
        stitch([PartInput(clips["quiet"]), PartInput(clips["loud"])], tmp_path / "o.mp3",
               Options.from_dict({"loudness_lufs": -16}))
    assert type(exc.value) is StitchError and "ffmpeg failed" in exc.value.message
    assert "no-such-option" not in exc.value.message  # the tool's own output stays in the log
    assert leftovers(tmp_path, set()) == []


def test_a_part_that_hangs_ffmpeg_is_unsupported_audio_not_a_crash(tmp_path, monkeypatch):
    """ffmpeg blocks on a FIFO nobody writes to: the probe gives up with a typed, permanent error."""
    import importlib
    import os

    probe_module = importlib.import_module("chalicelib.engine.probe")  # the module, not the function

    fifo = tmp_path / "stuck.m4a"
    os.mkfifo(fifo)
    monkeypatch.setattr(probe_module, "PROBE_TIMEOUT_S", 0.5)
    with pytest.raises(UnsupportedAudio) as err:
        probe_module._probe_ffmpeg(fifo, 2, "stuck.m4a", "part 2 (stuck.m4a)")
    assert err.value.part == 2 and err.value.permanent
    assert err.value.message == "part 2 (stuck.m4a): ffmpeg could not read it within 0.5 s"
