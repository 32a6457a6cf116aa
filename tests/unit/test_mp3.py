"""Copy-mode joins: frame walking, tag stripping, and a header that tells the true duration."""
from __future__ import annotations

import errno
import importlib
import os
import struct

import mutagen.mp3
import pytest

from chalicelib.engine import PartInput, mp3, plan_mode, probe, stitch
from chalicelib.options import Options, PartOptions
from tests.audio import decoded_frames, make_tone

# the module, not mp3.join (the function): its CHUNK is patched to force many chunks
join_module = importlib.import_module("chalicelib.engine.mp3.join")

VBR = ["-q:a", "2"]
# Short test parts: auto would pick an exact join for them.
COPY = Options(join="copy")


def id3v2(footer: bool = False) -> bytes:
    body = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00" + b"\x03title"
    size = len(body)
    syncsafe = bytes(((size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F))
    flags = 0x10 if footer else 0
    tag = b"ID3\x04\x00" + bytes([flags]) + syncsafe + body
    return tag + (b"3DI\x04\x00" + bytes([flags]) + syncsafe if footer else b"")


def ape() -> bytes:
    item = struct.pack("<II", 5, 0) + b"Title\x00" + b"hello"
    size = len(item) + 32
    header = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0xA0000000) + b"\x00" * 8
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0x80000000) + b"\x00" * 8
    return header + item + footer


ID3V1 = b"TAG" + b"title".ljust(30, b"\x00") + b"\x00" * 95


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    d = tmp_path_factory.mktemp("mp3")
    out = {
        "a": make_tone(d / "a.mp3", 1.0),
        "b": make_tone(d / "b.mp3", 0.7, freq=660),
        "c": make_tone(d / "c.mp3", 1.3, freq=880),
        "va": make_tone(d / "va.mp3", 1.2, extra=VBR),
        "vb": make_tone(d / "vb.mp3", 0.9, freq=300, extra=VBR),
        "mono": make_tone(d / "mono.mp3", 1.0, channels=1),
        "m22": make_tone(d / "m22.mp3", 1.0, rate=22050),
        "m22b": make_tone(d / "m22b.mp3", 0.6, rate=22050, freq=500),
        "m8a": make_tone(d / "m8a.mp3", 0.8, rate=8000, channels=1, extra=["-b:a", "8k"]),
        "m8b": make_tone(d / "m8b.mp3", 0.5, rate=8000, channels=1, extra=["-b:a", "8k"]),
    }
    tagged = d / "tagged.mp3"
    tagged.write_bytes(id3v2(footer=True) + out["b"].read_bytes() + ape() + ID3V1)
    out["tagged"] = tagged
    return out


def check_header_matches_decode(path, parts):
    """Header duration (mutagen) == decoded duration (pydub) and == the parts' sum within a frame each."""
    info = mutagen.mp3.MP3(str(path)).info
    decoded = decoded_frames(path)
    spf = mp3.scan(path).header.samples
    assert round(info.length * info.sample_rate) == decoded
    # Frames are copied whole, so at each junction the encoder's padding (end of one part) and
    # delay (start of the next) stay in: exactly that, nothing more, nothing less.
    scans = [mp3.scan(p) for p in parts]
    junctions = sum(a.encoder_padding + b.encoder_delay for a, b in zip(scans, scans[1:], strict=False))
    expected = sum(decoded_frames(p) for p in parts)
    assert decoded == expected + junctions
    if spf == 1152:  # MPEG-1: within one frame per part
        assert decoded - expected <= spf * len(parts)
    return decoded, info.sample_rate


@pytest.mark.parametrize("names", [("a", "b", "c"), ("va", "vb", "va"), ("m22", "m22b"), ("m8a", "m8b", "m8a"),
                                   ("a", "tagged", "c"), ("mono", "mono")])
def test_copy_join_header_duration_equals_decoded(tones, tmp_path, names):
    paths = [tones[n] for n in names]
    out = tmp_path / "joined.mp3"
    result = stitch([PartInput(p) for p in paths], out, COPY)
    assert result.mode == "copy"
    decoded, rate = check_header_matches_decode(out, paths)
    assert result.duration_s == pytest.approx(decoded / rate, abs=1e-5)
    assert result.size_bytes == out.stat().st_size
    assert result.parts[-1].end_s == pytest.approx(result.duration_s, abs=1e-5)
    scan = mp3.scan(out)
    assert scan.frames == sum(mp3.scan(p).frames for p in paths)
    assert scan.vbr_tag.frames == scan.frames
    assert scan.vbr_tag.kind == ("Xing" if names[0].startswith("v") else "Info")
    assert scan.vbr_tag.bytes == out.stat().st_size
    assert list(scan.vbr_tag.toc) == sorted(scan.vbr_tag.toc) and scan.vbr_tag.toc[0] == 0


def test_copy_join_drops_every_tag(tones, tmp_path):
    out = tmp_path / "j.mp3"
    stitch([PartInput(tones["tagged"]), PartInput(tones["tagged"])], out, COPY)
    data = out.read_bytes()
    assert data[:2] == b"\xff\xfb"  # the new Info frame comes first: no ID3v2 kept
    assert b"APETAGEX" not in data and b"3DI" not in data and not data[-128:].startswith(b"TAG")
    # Each tagged input held the same frames as the untagged original.
    assert mp3.scan(out).frames == 2 * mp3.scan(tones["b"]).frames


def test_part_offsets_follow_frames(tones, tmp_path):
    parts = [PartInput(tones[n]) for n in ("a", "b", "c")]
    result = stitch(parts, tmp_path / "j.mp3", COPY)
    spans = result.parts
    assert [s.index for s in spans] == [0, 1, 2]
    assert spans[0].start_s == 0 and spans[1].start_s == spans[0].end_s and spans[2].start_s == spans[1].end_s
    for span, name in zip(spans, ("a", "b", "c"), strict=True):
        assert span.end_s - span.start_s == pytest.approx(probe(tones[name]).duration_s, abs=2 * 1152 / 44100)


@pytest.mark.parametrize("names, options, part_options", [
    (("a", "mono"), {}, None),  # channel mode differs
    (("a", "m22"), {}, None),  # sample rate / MPEG version differs
    (("a", "b"), {"gap_ms": 100}, None),
    (("a", "b"), {"bitrate": "128k"}, None),
    (("a", "b"), {"format": "wav"}, None),
    (("a", "b"), {}, {"gain_db": 3}),
    (("a", "b"), {}, {"start_s": 0.1}),
])
def test_plan_falls_back_to_encode(tones, tmp_path, names, options, part_options):
    po = PartOptions.from_dict(part_options or {})
    parts = [PartInput(tones[names[0]]), PartInput(tones[names[1]], po)]
    opts = Options.from_dict(options)
    assert plan_mode([probe(p.path, i) for i, p in enumerate(parts)], parts, opts) == "encode"
    assert stitch(parts, tmp_path / f"o.{opts.format}", opts).mode == "encode"


def test_mp2_is_re_encoded_not_copied(tmp_path):
    """A Xing frame would play as a frame of silence in Layer II, so MP2 never takes the copy path."""
    a = make_tone(tmp_path / "a.mp2", 0.5, fmt="mp3", extra=["-c:a", "mp2", "-b:a", "128k", "-f", "mp2"])
    assert mp3.scan(a).header.layer == 2
    result = stitch([PartInput(a), PartInput(a)], tmp_path / "o.mp3", COPY)
    assert result.mode == "encode"
    assert result.duration_s == pytest.approx(1.0, abs=0.06)


def test_tag_crc_matches_lame(tones):
    """Our LAME-tag CRC agrees with the one libmp3lame wrote into a real file."""
    s = mp3.scan(tones["a"])
    with open(tones["a"], "rb") as f:
        f.seek(s.start - s.header.size)
        frame = f.read(s.header.size)
    p = 4 + s.header.side_info + 120
    assert mp3.crc16(frame[:p + 34]) == struct.unpack(">H", frame[p + 34:p + 36])[0]


def test_truncated_file_is_detected(tones, tmp_path):
    data = tones["a"].read_bytes()
    half = tmp_path / "half.mp3"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(mp3.Mp3Truncated, match="truncated"):
        mp3.scan(half)
    s = mp3.scan(tones["a"])
    on_boundary = tmp_path / "boundary.mp3"  # cut between two frames: only the header knows
    on_boundary.write_bytes(data[: s.offsets[1]])
    with pytest.raises(mp3.Mp3Truncated, match=f"header announces {s.frames} frames, the file holds 32"):
        mp3.scan(on_boundary)
    # Without a Xing frame, a cut-off last frame gives it away.
    s = mp3.scan(tones["a"])
    bare = tmp_path / "bare.mp3"
    bare.write_bytes(data[s.start:s.end - 100])
    with pytest.raises(mp3.Mp3Truncated, match="cut off"):
        mp3.scan(bare)


def test_garbage_between_frames_is_encoded_not_copied(tones, tmp_path):
    data = tones["a"].read_bytes()
    s = mp3.scan(tones["a"])
    mid = s.offsets[1]
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(data[:mid] + b"\x00" * 700 + data[mid:])
    with pytest.raises(mp3.Mp3Error, match="garbage"):
        mp3.scan(junk)
    assert probe(junk).mp3 is None
    result = stitch([PartInput(junk), PartInput(tones["b"])], tmp_path / "o.mp3", COPY)
    assert result.mode == "encode"


def test_scan_reads_in_chunks(tones, tmp_path, monkeypatch):
    """Frames that straddle chunk boundaries are walked the same as with one big read."""
    whole = mp3.scan(tones["c"])
    from chalicelib.engine.mp3 import walk

    monkeypatch.setattr(walk, "CHUNK", 1000)
    chunked = mp3.scan(tones["c"])
    assert (chunked.frames, chunked.start, chunked.end) == (whole.frames, whole.start, whole.end)
    assert list(chunked.offsets) == list(whole.offsets)


@pytest.mark.parametrize("chunk", [1000, None])
def test_stray_bytes_after_last_frame_are_left_out(tones, tmp_path, monkeypatch, chunk):
    """The walk writes what it read; bytes it rejects must not reach the output, also when a
    read ends inside a frame (small chunks) and the frame's rest is written separately."""
    if chunk:
        monkeypatch.setattr(join_module, "CHUNK", chunk)
    stray = tmp_path / "stray.mp3"
    stray.write_bytes(tones["a"].read_bytes() + b"\xff\x00")
    out = tmp_path / "j.mp3"
    result = stitch([PartInput(stray), PartInput(tones["b"]), PartInput(stray)], out, COPY)
    assert result.mode == "copy"
    expected = [mp3.scan(p) for p in (tones["a"], tones["b"], tones["a"])]
    joined = mp3.scan(out)
    assert joined.frames == sum(s.frames for s in expected)
    assert out.stat().st_size == joined.end == joined.vbr_tag.bytes
    check_header_matches_decode(out, [tones["a"], tones["b"], tones["a"]])


@pytest.mark.parametrize("name", ["c", "va", "m22", "m8a", "tagged", "mono"])
def test_constant_bitrate_fast_path_agrees_with_frame_walk(tones, monkeypatch, name):
    fast = mp3.scan(tones[name])
    from chalicelib.engine.mp3 import walk

    monkeypatch.setattr(walk, "run_pattern", lambda _header: (None, 0))
    slow = mp3.scan(tones[name])
    assert (fast.frames, fast.start, fast.end, fast.variable_bitrate) == (
        slow.frames, slow.start, slow.end, slow.variable_bitrate)
    assert list(fast.offsets) == list(slow.offsets)


@pytest.mark.parametrize("chunk", [1000, None])
def test_copy_join_writes_every_frame_in_place(tones, tmp_path, monkeypatch, chunk):
    """The output is the new tag frame, then each part's audio frames byte for byte, in order:
    both copying threads write every chunk at its place, also with small chunks (frames and
    headers straddling chunks, many turns) and with parts that carry ID3v2/APE/ID3v1 tags."""
    from chalicelib.engine.mp3.tags import tag_frame_header

    if chunk:
        monkeypatch.setattr(join_module, "CHUNK", chunk)
    names = ("c", "tagged", "a", "c")
    out = tmp_path / "j.mp3"
    result = stitch([PartInput(tones[n]) for n in names], out, COPY)
    scans = [mp3.scan(tones[n]) for n in names]
    _, tag_size = tag_frame_header(scans[0].header)
    data = out.read_bytes()
    assert data[tag_size:] == b"".join(tones[n].read_bytes()[s.start:s.end] for n, s in zip(names, scans, strict=True))
    assert result.size_bytes == len(data) == tag_size + sum(s.end - s.start for s in scans)
    assert mp3.scan(out).vbr_tag.frames == sum(s.frames for s in scans)


@pytest.mark.parametrize("chunk", [1000, None])
def test_copy_join_names_a_truncated_part_and_leaves_nothing(tones, tmp_path, monkeypatch, chunk):
    from chalicelib.errors import UnsupportedAudio

    if chunk:
        monkeypatch.setattr(join_module, "CHUNK", chunk)
    data = tones["c"].read_bytes()
    inputs = tmp_path / "in"
    inputs.mkdir()
    cut = inputs / "cut.mp3"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out_dir = tmp_path / "out"
    with pytest.raises(UnsupportedAudio) as exc:
        stitch([PartInput(tones["a"]), PartInput(cut), PartInput(tones["b"])], out_dir / "j.mp3", COPY)
    with pytest.raises(mp3.Mp3Truncated, match="cut off") as walked:
        mp3.scan(cut)
    assert exc.value.part == 1
    assert exc.value.message == f"part 1 (cut.mp3): {walked.value}"
    assert list(out_dir.iterdir()) == []  # neither the output nor its temp file


@pytest.mark.parametrize("junk_chunk", [1, 2])  # walked by the helper thread / by the calling one
def test_frame_copier_raises_what_either_thread_hit_and_goes_on(tones, tmp_path, junk_chunk):
    from chalicelib.engine.mp3.walk import FrameCopier

    data = tones["c"].read_bytes()
    s = mp3.scan(tones["c"])
    junk = tmp_path / "junk.mp3"
    at = s.start + junk_chunk * 1000 + 100  # inside that chunk of 1000 bytes
    junk.write_bytes(data[:at] + b"\x00" * 8 + data[at:])
    with pytest.raises(mp3.Mp3Error, match="garbage at byte") as walked:
        mp3.scan(junk)
    where = int(str(walked.value).split("byte ")[1].split()[0])
    assert (where - s.start) // 1000 == junk_chunk
    out = tmp_path / "o.bin"
    fd = os.open(out, os.O_RDWR | os.O_CREAT)
    copier = FrameCopier(fd, 1000)
    try:
        for path in (junk, tones["c"]):
            with open(path, "rb") as f:
                head = mp3.peek(path)
                if path == junk:
                    with pytest.raises(mp3.Mp3Error) as exc:
                        copier.copy(f.fileno(), head, 0)
                    assert str(exc.value) == str(walked.value)
                else:
                    copied = copier.copy(f.fileno(), head, 0)
        assert (copied.frames, copied.end, list(copied.offsets)) == (s.frames, s.end, list(s.offsets))
        assert out.read_bytes()[:s.end - s.start] == data[s.start:s.end]
    finally:
        copier.close()
        os.close(fd)


def test_frame_copier_raises_a_write_error(tones, tmp_path):
    from chalicelib.engine.mp3.walk import FrameCopier

    target = tmp_path / "ro"
    target.write_bytes(b"")
    fd = os.open(target, os.O_RDONLY)  # every pwrite fails with EBADF, in both threads
    copier = FrameCopier(fd, 1000)
    try:
        with open(tones["c"], "rb") as f, pytest.raises(OSError) as exc:
            copier.copy(f.fileno(), mp3.peek(tones["c"]), 0)
        assert exc.value.errno == errno.EBADF
    finally:
        copier.close()
        os.close(fd)
    assert target.read_bytes() == b""


def test_copy_join_without_fallocate_writes_the_same_bytes(tones, tmp_path, monkeypatch):
    """Where the file system cannot preallocate, the join writes the same file; a full disk is
    still an error."""
    parts = [PartInput(tones[n]) for n in ("a", "c", "b")]
    stitch(parts, tmp_path / "reserved.mp3", COPY)

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    stitch(parts, tmp_path / "plain.mp3", COPY)
    assert (tmp_path / "plain.mp3").read_bytes() == (tmp_path / "reserved.mp3").read_bytes()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as exc:
        stitch(parts, tmp_path / "full" / "o.mp3", COPY)
    assert exc.value.errno == errno.ENOSPC
    assert list((tmp_path / "full").iterdir()) == []


def test_copy_join_without_a_second_thread_writes_the_same_bytes(tones, tmp_path, monkeypatch):
    """Where no thread can be started (a process limit), the calling thread copies alone."""
    import _thread
    monkeypatch.setattr(join_module, "CHUNK", 1000)  # every part takes many chunks: two threads normally
    parts = [PartInput(tones[n]) for n in ("c", "tagged", "a")]
    stitch(parts, tmp_path / "two.mp3", COPY)

    def refuse(*_args):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", refuse)
    stitch(parts, tmp_path / "one.mp3", COPY)
    assert (tmp_path / "one.mp3").read_bytes() == (tmp_path / "two.mp3").read_bytes()
