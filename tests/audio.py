"""Generate real audio with ffmpeg's lavfi sources, and measure it by decoding (pydub = reference)."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from chalicelib.ffmpeg import ffmpeg_binary

CODEC_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "128k"],
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac"],
    "m4a": ["-c:a", "aac", "-b:a", "96k", "-f", "ipod"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "3"],
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"],
}


def make_tone(path, seconds: float = 1.0, *, rate: int = 44100, channels: int = 2,
              freq: int = 440, fmt: str | None = None, volume: float = 0.5, extra: list | None = None) -> Path:
    """Write a sine tone of ``seconds`` to ``path``; the format comes from ``fmt`` or the suffix."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    src = f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"
    layout = "mono" if channels == 1 else "stereo"
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src,
           "-af", f"volume={volume},aformat=channel_layouts={layout}", "-ar", str(rate),
           *CODEC_ARGS[fmt], *(extra or []), str(path)]
    subprocess.run(cmd, check=True)
    return path


# pydub only skips ffprobe when it is given the decoder too (``codec=``), not just ``format=``.
DECODERS = {"mp3": "mp3", "wav": "pcm_s16le", "flac": "flac", "mp4": "aac", "ogg": "vorbis", "opus": "opus"}


def decode_audio(path, fmt: str | None = None):
    """Decode ``path`` with pydub (the reference decoder), naming the decoder so it never calls ffprobe."""
    from pydub import AudioSegment

    AudioSegment.converter = ffmpeg_binary()
    path = Path(path)
    suffix = path.suffix.lstrip(".")
    fmt = fmt or {"m4a": "mp4"}.get(suffix, suffix)
    if fmt == "wav":
        return AudioSegment.from_file(str(path), format="wav")
    codec = DECODERS[fmt]
    return AudioSegment.from_file(str(path), format="ogg" if fmt == "opus" else fmt, codec=codec)


def decoded_frames(path, fmt: str | None = None) -> int:
    """Sample frames (per channel) a full decode of ``path`` produces."""
    return int(decode_audio(path, fmt).frame_count())


def decoded_duration(path, fmt: str | None = None) -> float:
    seg = decode_audio(path, fmt)
    return seg.frame_count() / seg.frame_rate


# ---------------------------------------------------------------------------------------------------
# Two independent decoders, and files written the way other encoders write them.
#
# ffmpeg (its own mp3/aac/opus decoders, gapless from the LAME tag, edit list and pre-skip) and
# libsndfile through the `soundfile` wheel (MP3 through mpg123, with mpg123's gapless handling;
# Ogg Opus through libopus; FLAC and WAV natively; it does not read MP4). Both count what a
# player plays. tests/integration/test_decoders.py proves that each honours the gapless tags before any
# other test trusts it.
# ---------------------------------------------------------------------------------------------------

BLOCK = 1 << 16


def pcm(samples: int, *, rate: int = 44100, channels: int = 2, seed: int = 0, level: float = 0.3):
    """``samples`` frames of int16 audio, shape (samples, channels): a tone over a little noise,
    so lossy encoders work on it about as hard as on speech. The same seed gives the same PCM."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    out = np.empty((samples, channels), dtype=np.int16)
    for c in range(channels):
        tone = np.sin(2 * np.pi * (330 + 110 * c + 20 * seed) * t)
        noise = rng.standard_normal(samples) * 0.05
        out[:, c] = np.clip((tone * level + noise * level) * 32767, -32768, 32767).astype(np.int16)
    return out


def ffmpeg_decode(path, *, channels: int | None = None):
    """Decode the first audio stream of ``path`` with ffmpeg to int16, shape (frames, channels).

    ``channels`` forces a channel count (``-ac``); by default ffmpeg keeps the file's."""
    import numpy as np

    ch = channels or _ffmpeg_channels(path)
    raw = subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                          "-ac", str(ch), "-f", "s16le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").reshape(-1, ch)


def _ffmpeg_channels(path) -> int:
    err = subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    for line in err.splitlines():
        if "Audio:" in line:
            return 1 if " mono" in line else 2
    raise ValueError(f"ffmpeg finds no audio stream in {path}")


def ffmpeg_frames(path, *, extra: list | None = None) -> int:
    """Sample frames (per channel) ffmpeg plays from ``path``, streamed: memory stays flat.

    ``extra``: input options (``["-err_detect", "crccheck", "-xerror"]``) placed before ``-i``."""
    proc = subprocess.Popen([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", *(extra or []), "-i", str(path),
                             "-map", "0:a:0", "-ac", "1", "-f", "s16le", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    total = 0
    while chunk := proc.stdout.read(BLOCK):
        total += len(chunk)
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, "ffmpeg", stderr=err)
    return total // 2


def sf_frames(path) -> int:
    """Sample frames (per channel) libsndfile (soundfile) plays from ``path``, read in blocks.

    Counted from what the reads return, not from ``SoundFile.frames``: for an MP3 without a
    Xing/LAME tag that field is mpg123's estimate from the file size (90,060 for 89,856 decoded).
    soundfile caps every read at that field (``SoundFile._check_frames``), so an estimate below the
    truth would truncate: the tests of untagged files show that it errs above."""
    import soundfile as sf

    total = 0
    with sf.SoundFile(str(path)) as f:
        while n := len(f.read(BLOCK, dtype="int16")):
            total += n
    return total


def sf_decode(path):
    """Decode ``path`` with libsndfile (soundfile) to int16, shape (frames, channels)."""
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return data


def best_lag(reference, decoded, *, search: int = 2400, window: int = 8192, start: int = 4096) -> int:
    """The shift (in samples) that best aligns ``decoded`` with ``reference``: 0 when a decoder
    removed exactly the encoder's delay, positive when ``decoded`` starts late."""
    import numpy as np

    ref = reference[start:start + window, 0].astype(np.float64)
    best, best_err = 0, None
    for lag in range(-search, search + 1):
        lo = start + lag
        if lo < 0 or lo + window > len(decoded):
            continue
        seg = decoded[lo:lo + window, 0].astype(np.float64)
        err = float(np.sum((seg - ref) ** 2))
        if best_err is None or err < best_err:
            best, best_err = lag, err
    return best


def _ffmpeg_encode(path, samples, *, rate, channels, seed, args, fmt=None) -> Path:
    """Feed ``pcm(samples)`` to ffmpeg as raw s16le and encode it with ``args``."""
    path = Path(path)
    data = pcm(samples, rate=rate, channels=channels, seed=seed)
    cmd = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "s16le", "-ar", str(rate),
           "-ac", str(channels), "-i", "-", *args, *(["-f", fmt] if fmt else []), str(path)]
    subprocess.run(cmd, input=data.tobytes(), check=True)
    return path


# --- MPEG audio frames, parsed here independently of chalicelib.engine.mp3 ---------------------------

_BITRATES = {  # kbps by bitrate index, Layer III
    1: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # version bits


@dataclass(frozen=True)
class Frame:
    """One Layer III frame header. ``mpeg`` is 1, 2 or 2.5."""
    offset: int
    raw: bytes  # the 4 header bytes
    mpeg: float
    bitrate: int
    rate: int
    padding: int
    protected: bool
    mode: int  # 0 stereo, 1 joint stereo, 2 dual channel, 3 mono

    @property
    def channels(self) -> int:
        return 1 if self.mode == 3 else 2

    @property
    def samples(self) -> int:
        return 1152 if self.mpeg == 1 else 576

    @property
    def size(self) -> int:
        return (144 if self.mpeg == 1 else 72) * self.bitrate * 1000 // self.rate + self.padding

    @property
    def side_info_len(self) -> int:
        if self.mpeg == 1:
            return 17 if self.channels == 1 else 32
        return 9 if self.channels == 1 else 17


def parse_frame(data: bytes, offset: int = 0) -> Frame | None:
    """The Layer III frame header at ``offset``, or None."""
    h = data[offset:offset + 4]
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    br_index, rate_index = h[2] >> 4, (h[2] >> 2) & 3
    if version == 1 or layer != 1 or br_index in (0, 15) or rate_index == 3:
        return None
    mpeg = {3: 1, 2: 2, 0: 2.5}[version]
    return Frame(offset, bytes(h), mpeg, _BITRATES[1 if mpeg == 1 else 2][br_index], _RATES[version][rate_index],
                 (h[2] >> 1) & 1, not (h[1] & 1), h[3] >> 6)


def id3v2_size(data: bytes) -> int:
    """Bytes of the ID3v2 tag at the start of ``data`` (ffmpeg writes one), 0 if there is none."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def frames_of(data: bytes, start: int | None = None) -> list[Frame]:
    """Every frame from ``start`` (default: after an ID3v2 tag) on, following frame sizes; stops at
    the first non-frame."""
    out, pos = [], id3v2_size(data) if start is None else start
    while (f := parse_frame(data, pos)) is not None and pos + f.size <= len(data):
        out.append(f)
        pos += f.size
    return out


def crc16_mpeg(data: bytes, crc: int = 0xFFFF) -> int:
    """ISO 11172-3's CRC-16 (polynomial 0x8005, MSB first, preset 0xFFFF)."""
    for byte in data:
        for bit in range(7, -1, -1):
            top = (crc >> 15) & 1
            crc = (crc << 1) & 0xFFFF
            if top ^ ((byte >> bit) & 1):
                crc ^= 0x8005
    return crc


def crc16_lame(data: bytes, crc: int = 0) -> int:
    """The CRC-16 LAME puts in its tag (reflected polynomial 0xA001, preset 0: CRC-16/ARC)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _bits(buf: bytes, pos: int, n: int) -> int:
    v = 0
    for i in range(pos, pos + n):
        v = (v << 1) | ((buf[i >> 3] >> (7 - (i & 7))) & 1)
    return v


def _set_bits(buf: bytearray, pos: int, n: int, value: int) -> None:
    for i in range(n):
        bit = (value >> (n - 1 - i)) & 1
        byte, shift = (pos + i) >> 3, 7 - ((pos + i) & 7)
        buf[byte] = (buf[byte] & ~(1 << shift)) | (bit << shift)


def _main_data(f: Frame, side: bytes) -> tuple[int, int]:
    """(main_data_begin, main data bytes) from a frame's side info (ISO 11172-3 / 13818-3)."""
    nch = f.channels
    if f.mpeg == 1:
        begin = _bits(side, 0, 9)
        base = 9 + (5 if nch == 1 else 3) + 4 * nch
        bits = sum(_bits(side, base + k * 59, 12) for k in range(2 * nch))
    else:
        begin = _bits(side, 0, 8)
        base = 8 + (1 if nch == 1 else 2)
        bits = sum(_bits(side, base + k * 63, 12) for k in range(nch))
    return begin, (bits + 7) // 8


def add_crc(data: bytes) -> bytes:
    """Turn a CRC-less Layer III stream into a CRC-protected one at the same bitrate, as `lame -p`
    writes it: each header's protection bit cleared, a 16-bit CRC (over header bytes 2-3 and the side
    info) after it. The 2 CRC bytes come out of each frame's main-data slot, so the main data of
    every frame is laid out again through the bit reservoir (new main_data_begin values); a frame
    whose data no longer fits raises ValueError (encode at a higher bitrate, or a quieter signal)."""
    frames = frames_of(data, 0)
    if not frames or len(frames) < 2:
        raise ValueError("no MPEG audio frames")
    if any(f.protected for f in frames):
        raise ValueError("already CRC-protected")
    # The original main-data stream: every frame's slot after its side info, end to end.
    stream, slot_start, payloads = bytearray(), [], []
    for f in frames:
        body = data[f.offset + 4 + f.side_info_len:f.offset + f.size]
        slot_start.append(len(stream))
        stream += body
    for f, s in zip(frames, slot_start, strict=True):
        begin, length = _main_data(f, data[f.offset + 4:f.offset + 4 + f.side_info_len])
        if begin > s:
            raise ValueError(f"frame at {f.offset}: main_data_begin points before the stream")
        payloads.append(bytes(stream[s - begin:s - begin + length]))
    max_begin = 511 if frames[0].mpeg == 1 else 255
    out_stream, new_begin, pos, slot = bytearray(), [], 0, 0
    for f, md in zip(frames, payloads, strict=True):
        capacity = f.size - 4 - 2 - f.side_info_len
        start = max(pos, slot - max_begin)
        if start + len(md) > slot + capacity:
            raise ValueError(f"frame at {f.offset}: {len(md)} bytes of main data do not fit with a CRC")
        out_stream += bytes(slot + capacity - len(out_stream))
        out_stream[start:start + len(md)] = md
        new_begin.append(slot - start)
        pos, slot = start + len(md), slot + capacity
    out, slot = bytearray(), 0
    for f, begin in zip(frames, new_begin, strict=True):
        header = bytearray(f.raw)
        header[1] &= 0xFE
        side = bytearray(data[f.offset + 4:f.offset + 4 + f.side_info_len])
        _set_bits(side, 0, 9 if f.mpeg == 1 else 8, begin)
        capacity = f.size - 6 - f.side_info_len
        out += header + crc16_mpeg(bytes(header[2:4]) + bytes(side)).to_bytes(2, "big") + side
        out += out_stream[slot:slot + capacity]
        slot += capacity
    return bytes(out) + data[frames[-1].offset + frames[-1].size:]


LAME_DELAY = 576  # what LAME adds before the first sample at the usual settings (no resampling)


def lame_tag_frame(first: Frame, audio_frames: int, audio_bytes: int, audio: bytes, *, delay: int,
                   padding: int, protected: bool = False) -> bytes:
    """A CBR "Info" frame with a LAME extension, laid out as LAME's VbrTag.c writes it: the first
    audio frame's header (its mode, joint stereo included; no padding, no mode extension), the
    smallest bitrate of that version whose frame holds the tag, then Xing fields, a linear TOC and
    the LAME tag (version string, delay/padding, music length and CRC, tag CRC).

    ``protected`` (``lame -p``): the header's protection bit is cleared and bytes 4-5 hold the CRC
    of header bytes 2-3 plus the side-info span, but the Xing data stays at the offset it has
    without CRC (4 + side info), so it starts 2 bytes before the end of the side-info span. That
    is LAME's choice ("the Xing data still starts at the same offset"), and what decoders expect."""
    side = first.side_info_len
    xing = 4 + side  # with CRC too: LAME keeps the Xing data where it is without one (see above)
    need = xing + 120 + 36
    rates = _BITRATES[1 if first.mpeg == 1 else 2]
    index = next(i for i in range(1, 15) if rates[i] >= first.bitrate and
                 (144 if first.mpeg == 1 else 72) * rates[i] * 1000 // first.rate >= need)
    size = (144 if first.mpeg == 1 else 72) * rates[index] * 1000 // first.rate
    frame = bytearray(size)
    header = bytearray(first.raw)
    header[1] = (header[1] & 0xFE) | (0 if protected else 1)
    header[2] = (index << 4) | (header[2] & 0x0C) | (header[2] & 0x01)  # padding bit cleared
    header[3] &= 0xCF  # mode extension cleared
    frame[0:4] = header
    total = size + audio_bytes
    p = xing
    frame[p:p + 4] = b"Info"
    frame[p + 4:p + 8] = (0x0F).to_bytes(4, "big")  # frames, bytes, TOC, quality
    frame[p + 8:p + 12] = audio_frames.to_bytes(4, "big")
    frame[p + 12:p + 16] = total.to_bytes(4, "big")
    frame[p + 16:p + 116] = bytes(min(255, (i * total // 100) * 256 // total) for i in range(100))
    frame[p + 116:p + 120] = (0).to_bytes(4, "big")
    p += 120
    frame[p:p + 9] = b"LAME3.100"
    frame[p + 9] = 0x01  # tag revision 0, VBR method 1 (CBR)
    frame[p + 10] = 160  # lowpass / 100 Hz
    frame[p + 20] = min(255, first.bitrate)  # CBR: the bitrate
    frame[p + 21:p + 24] = ((delay << 12) | padding).to_bytes(3, "big")
    src = 0 if first.rate <= 32000 else 1 if first.rate == 44100 else 2
    frame[p + 24] = (src << 6) | (first.mode << 2)
    frame[p + 28:p + 32] = total.to_bytes(4, "big")
    frame[p + 32:p + 34] = crc16_lame(audio).to_bytes(2, "big")
    frame[p + 34:p + 36] = crc16_lame(bytes(frame[:p + 34])).to_bytes(2, "big")
    if protected:
        frame[4:6] = crc16_mpeg(bytes(frame[2:4]) + bytes(frame[6:6 + side])).to_bytes(2, "big")
    return bytes(frame)


def lameenc_mp3(path, samples: int, *, rate: int = 44100, channels: int = 2, bitrate: int = 128,
                tag: bool = True, crc: bool = False, seed: int = 0) -> int:
    """An MP3 as the LAME command line writes it, encoded by LAME itself (the ``lameenc`` wheel).

    lameenc returns LAME's frames without the Xing/LAME frame (it never asks LAME for it), which
    is what ``lame -t`` writes. ``tag=True`` prepends the LAME tag that ``lame`` writes there
    (:func:`lame_tag_frame`: delay 576, padding to the last frame); ``crc=True`` protects every
    frame as ``lame -p`` does (:func:`add_crc`), the tag frame included. MPEG-2 and 2.5 come from
    ``rate`` (22050/24000/16000, 11025/12000/8000). Returns the gapless length: ``samples``."""
    import lameenc

    enc = lameenc.Encoder()
    enc.set_bit_rate(bitrate)
    enc.set_in_sample_rate(rate)
    enc.set_out_sample_rate(rate)
    enc.set_channels(channels)
    enc.set_quality(2)
    audio = bytes(enc.encode(pcm(samples, rate=rate, channels=channels, seed=seed).tobytes()) + enc.flush())
    if crc:
        audio = add_crc(audio)
    if tag:
        frames = frames_of(audio, 0)
        padding = len(frames) * frames[0].samples - samples - LAME_DELAY
        audio = lame_tag_frame(frames[0], len(frames), len(audio), audio, delay=LAME_DELAY, padding=padding,
                               protected=crc) + audio
    Path(path).write_bytes(audio)
    return samples


def ffmpeg_mp3(path, samples: int, *, rate: int = 44100, channels: int = 2, bitrate: str = "128k",
               xing: bool = True, id3: bool = True, seed: int = 0) -> int:
    """An MP3 as ffmpeg writes it: libmp3lame's frames behind ffmpeg's own Xing frame ("Info" for
    CBR, with a LAME extension carrying delay/padding; its header says "stereo" even when the
    frames are joint stereo). ``xing=False`` (``-write_xing 0``) writes LAME frames and no tag at
    all, as sox does. ffmpeg puts a small ID3v2 tag first (``id3=False``: none). Returns the gapless
    length: ``samples``."""
    args = ["-c:a", "libmp3lame", "-b:a", bitrate, *([] if xing else ["-write_xing", "0"]),
            *([] if id3 else ["-id3v2_version", "0"])]
    _ffmpeg_encode(path, samples, rate=rate, channels=channels, seed=seed, args=args, fmt="mp3")
    return samples


def garbage_prefixed_mp3(path, samples: int, *, garbage: int = 1500, seed: int = 0, **kwargs) -> int:
    """A tagged MP3 (:func:`ffmpeg_mp3`, no ID3v2) behind ``garbage`` random bytes that hold no
    frame sync (no 0xFF byte), as files cut out of streams or with broken tag writers are found in
    the wild: the Info frame is the first frame, but not at the start of the file."""
    import numpy as np

    ffmpeg_mp3(path, samples, seed=seed, id3=False, **kwargs)
    junk = np.random.default_rng(seed + 1000).integers(0, 255, garbage, dtype=np.uint8).tobytes()
    path = Path(path)
    path.write_bytes(junk + path.read_bytes())
    return samples


def opus_file(path, samples: int, *, channels: int = 2, bitrate: str = "64k", seed: int = 0) -> int:
    """Ogg Opus as ffmpeg's libopus writes it: 48 kHz, a pre-skip of 312 in the OpusHead and a last
    granule position that cuts the final packet. Returns the gapless length: ``samples`` (48 kHz)."""
    _ffmpeg_encode(path, samples, rate=48000, channels=channels, seed=seed,
                   args=["-c:a", "libopus", "-b:a", bitrate], fmt="ogg")
    return samples


def m4a_file(path, samples: int, *, rate: int = 44100, channels: int = 2, bitrate: str = "96k",
             seed: int = 0) -> int:
    """M4A/AAC-LC as ffmpeg's native aac encoder and ipod muxer write it: 1024 samples of priming
    hidden by an edit list. Returns the gapless length: ``samples``."""
    _ffmpeg_encode(path, samples, rate=rate, channels=channels, seed=seed,
                   args=["-c:a", "aac", "-b:a", bitrate], fmt="ipod")
    return samples


def flac_file(path, samples: int, *, rate: int = 44100, channels: int = 2, seed: int = 0,
              encoder: str = "ffmpeg") -> int:
    """FLAC from ffmpeg's encoder, or libsndfile's (``encoder="libsndfile"``). Exact by design."""
    return _lossless(path, samples, rate, channels, seed, encoder, "flac", "FLAC")


def wav_file(path, samples: int, *, rate: int = 44100, channels: int = 2, seed: int = 0,
             encoder: str = "ffmpeg") -> int:
    """16-bit WAV from ffmpeg, or libsndfile (``encoder="libsndfile"``). Exact by design."""
    return _lossless(path, samples, rate, channels, seed, encoder, "pcm_s16le", "WAV")


def _lossless(path, samples, rate, channels, seed, encoder, codec, sf_format) -> int:
    if encoder == "libsndfile":
        import soundfile as sf

        sf.write(str(path), pcm(samples, rate=rate, channels=channels, seed=seed), rate, format=sf_format,
                 subtype="PCM_16")
    else:
        _ffmpeg_encode(path, samples, rate=rate, channels=channels, seed=seed, args=["-c:a", codec],
                       fmt="wav" if codec.startswith("pcm") else "flac")
    return samples
