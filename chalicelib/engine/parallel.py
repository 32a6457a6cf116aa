"""Encode a PCM stream with one encoder per usable core, and join the pieces into one exact stream.

ffmpeg's audio encoders use one core. ``encode_pcm`` cuts the PCM into chunks on the output's frame
grid and encodes them at once, one LAME per usable core in this process (``engine.lame``: threads,
the GIL released while LAME runs; no process, PCM file or pipe per chunk), each with a pre-roll (a few frames of the audio before it, so the
encoder's filter bank, psychoacoustic model and block switching are settled when the kept frames
start) and a post-roll (a few frames after it, so its last kept frames see what follows, as a
single pass would). The assembler keeps, from each chunk's stream, exactly the frames of the
global frame grid that the chunk owns, re-lays the MP3 bit reservoir across the seams
(``mp3.reservoir``) and writes one Xing/Info + LAME tag with the whole stream's frame count,
delay and padding, so decoders play exactly the samples that were fed in.

Formats whose chunks cannot be joined exactly here are encoded in one pass by one ffmpeg.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import queue
import subprocess
import tempfile
import threading
from array import array
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import StitchError
from ..ffmpeg import Children, ffmpeg_binary, nice_thread
from ..options import FORMATS, SAMPLE_RATES
from . import lame
from .mp3 import build_tag_frame
from .mp3.reservoir import Frame, FrameReader, Relayer, ReservoirError

# The default bitrates (encode.bitrate resolves and checks them; ogg: libvorbis' own quality default).
DEFAULT_BITRATE = {"mp3": "128k", "m4a": "128k"}
# Frames of the preceding audio each chunk's encoder sees before its first kept frame, and of
# the following audio after its last. Measured over 9 rate/channel/bitrate/signal cases with a
# seam every 2 s (docs/engine.md): with 4 pre-roll frames LAME's adaptive state has not settled
# at low rates (8 kHz: the seam windows' error 1.23x a single pass's, -0.32 dB SNR); with 8 every
# case is within 1.00-1.06x and -0.14 dB. Post-roll: 2 frames measure the same as 4; the extra
# ones are spare frames for a seam whose reservoir does not fit (see _Assembler).
PRE_ROLL_FRAMES = 8
POST_ROLL_FRAMES = 4
# With the total length known, chunks are total/workers long within these bounds; without it,
# DEFAULT_CHUNK_S. Short chunks balance the cores and bound the PCM held in memory (20 s of
# 48 kHz stereo float is 7.7 MB); each costs its pre- and post-roll frames (0.3 s of audio at
# 44.1 kHz: 1.5 % of a 20 s chunk).
# PCM the reader may hold ahead of the encoders (see held_chunks).
BUFFER_BYTES = 16 << 20
MIN_CHUNK_S = 5.0
MIN_ROUNDS = 4
MAX_CHUNK_S = 20.0
DEFAULT_CHUNK_S = 20.0
_READ_BYTES = 1 << 20
# The chunk encoders run this much nicer than the rest of the process (and the decoder feeding
# it): with every core busy, the decoder then gets the CPU it needs to keep ahead, and the last
# chunks are not held up behind a decoder starved by the encoders it feeds.
ENCODER_NICENESS = 5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    samples: int  # PCM sample frames (per channel) that were fed in
    delay: int  # encoder delay the output's header declares (samples to skip at the start)
    padding: int  # samples to drop at the end
    chunks: int  # how many chunks were encoded (1 = single pass)
    workers: int  # encoders used at once
    held: int = 0  # the most chunks that were read and not yet joined at one time (in memory)


def parallel_formats() -> frozenset[str]:
    """The formats ``encode_pcm`` encodes in chunks on several cores: MP3 where LAME loads."""
    return frozenset({"mp3"}) if lame.library() is not None else frozenset()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def encoder_args(fmt: str, rate: int, channels: int, bitrate: str | None) -> list[str]:
    """The ffmpeg encoder's output options for ``fmt``, without ``-f`` (encode._encoder_args adds it)."""
    spec = FORMATS[fmt]
    args = ["-c:a", spec.codec]
    bitrate = None if spec.lossless else bitrate or DEFAULT_BITRATE.get(fmt)
    if bitrate:
        args += ["-b:a", bitrate]
    return args + ["-ar", str(rate), "-ac", str(channels), "-map_metadata", "-1"]


def encode_pcm(pcm: BinaryIO, out_path: str | os.PathLike, *, fmt: str, rate: int, channels: int,
               bitrate: str | None = None, workers: int | None = None,
               progress: Callable[[float], None] | None = None, total_samples: int | None = None,
               chunk_s: float | None = None) -> Encoded:
    """Read interleaved float32 little-endian PCM from ``pcm`` until EOF and write ``out_path``.

    ``fmt`` is a key of ``options.FORMATS``. MP3 is encoded in chunks by ``workers`` LAME
    threads at once (default: the usable cores; an input known to be shorter than two chunks is
    one chunk); other formats, or MP3 without the LAME library, take one ffmpeg pass. The file
    appears atomically (temp file + rename).
    ``progress(fraction)`` follows the PCM consumed when ``total_samples`` is given. Raises
    StitchError on failure.
    """
    if fmt not in FORMATS:
        raise StitchError(f"cannot encode format {fmt!r}")
    if channels not in (1, 2) or rate not in SAMPLE_RATES:
        raise StitchError(f"cannot encode {channels} channels at {rate} Hz")
    workers = max(1, workers or usable_cores())
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{os.urandom(6).hex()}.part")
    job = _Job(fmt, rate, channels, bitrate, progress, total_samples)
    chunk = _chunk_samples(job, workers, chunk_s)
    try:
        # MP3 is LAME in this process even on one core: a chunk costs less CPU than one ffmpeg
        # pass (its PCM is not converted and piped again, and no process starts).
        if fmt in parallel_formats():
            result = _encode_chunked(pcm, tmp, job, workers, chunk)
        else:
            result = _encode_single(pcm, tmp, job)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if progress is not None:
        progress(1.0)
    return result


@dataclass
class _Job:
    fmt: str
    rate: int
    channels: int
    bitrate: str | None
    progress: Callable[[float], None] | None
    total: int | None

    @property
    def frame_samples(self) -> int:
        """Samples per MP3 frame: 1152 for MPEG-1 rates, 576 for MPEG-2 and 2.5."""
        return 1152 if self.rate >= 32000 else 576

    @property
    def sample_bytes(self) -> int:
        return 4 * self.channels

    def input_args(self, source: str) -> list[str]:
        return [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
                "-f", "f32le", "-ar", str(self.rate), "-ac", str(self.channels), "-i", source]

    def report(self, consumed: int) -> None:
        if self.progress is not None and self.total:
            self.progress(min(0.999, consumed / self.total))


def _chunk_samples(job: _Job, workers: int, chunk_s: float | None) -> int:
    """Chunk length in samples (a whole number of frames)."""
    spf = job.frame_samples
    if chunk_s is not None:
        seconds = chunk_s
    elif job.total is not None:
        if job.total < 2 * MIN_CHUNK_S * job.rate:
            # shorter than two chunks: one chunk, the whole input (at most 10 s in memory)
            frames = -(-job.total // spf)
            return max(PRE_ROLL_FRAMES + POST_ROLL_FRAMES, frames) * spf
        # Rounds of one chunk per encoder, all chunks alike (no encoder is left to finish a
        # last short chunk alone while the others wait), at least MIN_ROUNDS of them: the first
        # encode starts once one chunk is decoded, and the last once the decoder is done.
        total_s = job.total / job.rate
        count = workers * max(MIN_ROUNDS, math.ceil(total_s / workers / MAX_CHUNK_S))
        if total_s / count < MIN_CHUNK_S:
            count = max(1, int(total_s // MIN_CHUNK_S))  # fewer chunks, still alike,
            if count >= workers:
                count -= count % workers  # and whole rounds where there are enough
        seconds = total_s / count
    else:
        seconds = DEFAULT_CHUNK_S
    frames = max(PRE_ROLL_FRAMES + POST_ROLL_FRAMES, -(-round(seconds * job.rate) // spf))
    return frames * spf


def held_chunks(workers: int, chunk_bytes: int) -> int:
    """How many chunks may be read and not yet joined: workers + 1, or more within BUFFER_BYTES."""
    return max(workers + 1, BUFFER_BYTES // max(chunk_bytes, 1))


def _encode_single(pcm: BinaryIO, tmp: Path, job: _Job) -> Encoded:
    """One ffmpeg reading the PCM from its stdin: the encode path's command, fed by us."""
    cmd = job.input_args("pipe:0") + encoder_args(job.fmt, job.rate, job.channels, job.bitrate)
    cmd += ["-f", FORMATS[job.fmt].muxer, str(tmp)]
    children = Children("encoding stopped: the job failed")
    consumed = 0
    with tempfile.TemporaryFile() as err:
        proc = children.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            source, view = _Source(pcm, job), memoryview(bytearray(_READ_BYTES))  # whole samples
            while True:
                got = source.fill(view, lambda: None, consumed)
                got -= got % job.sample_bytes  # a sample cut in half at the end is not a sample
                try:
                    proc.stdin.write(view[:got])
                except BrokenPipeError:
                    break  # the encoder stopped: its exit status says why
                consumed += got // job.sample_bytes
                if got < len(view):
                    break  # EOF
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        except BaseException:
            children.kill()
            raise
    if code != 0:
        raise StitchError(f"the {job.fmt} encoder failed (exit {code})")
    delay, padding = 0, 0
    if job.fmt == "mp3":
        delay, padding = _mp3_tag_delay_padding(tmp)
    return Encoded(consumed, delay, padding, chunks=1, workers=1)


def _mp3_tag_delay_padding(path: Path) -> tuple[int, int]:
    from .mp3 import peek

    tag = peek(path).vbr_tag
    if tag is None:
        return 0, 0
    return tag.encoder_delay or 0, tag.encoder_padding or 0


# ---------------------------------------------------------------------------------------------
# Chunked MP3


@dataclass
class _Chunk:
    index: int  # it owns the global samples from index * chunk on
    pcm: bytearray | None  # its interleaved f32 PCM from its pre-roll on, dropped once encoded
    last: bool = False
    delay: int = 0  # the encoder delay of its stream
    future: Future | None = field(default=None, repr=False)


class _Source:
    """Fills buffers from the PCM stream: straight into them (``readinto``) where the stream can."""

    def __init__(self, pcm: BinaryIO, job: _Job):
        self._pcm, self._job = pcm, job
        self._readinto = getattr(pcm, "readinto", None)

    def fill(self, view: memoryview, check: Callable[[], None], consumed_before: int) -> int:
        """Bytes read into ``view``: all of it, or less at EOF."""
        filled = 0
        while filled < len(view):
            part = view[filled:filled + _READ_BYTES]
            got = None
            if self._readinto is not None:
                try:
                    got = self._readinto(part)
                except NotImplementedError:  # a raw stream with read() only
                    self._readinto = None
            if got is None:
                data = self._pcm.read(len(part))
                got = len(data)
                part[:got] = data
            if not got:
                break
            filled += got
            self._job.report(consumed_before + filled // self._job.sample_bytes)
            check()
        return filled


def _encode_chunked(pcm: BinaryIO, tmp: Path, job: _Job, workers: int, chunk: int) -> Encoded:
    """Chunk k owns the global samples [k*chunk, (k+1)*chunk) (the last one: to the end) and is
    encoded from its pre-roll to its post-roll; only one chunk is being read at a time, and the
    next one starts with the tail of the previous one (its pre-roll and the post-roll overlap)."""
    spf = job.frame_samples
    pre, post = PRE_ROLL_FRAMES * spf, POST_ROLL_FRAMES * spf
    sb = job.sample_bytes
    # Chunks read and not yet joined (their PCM, then their MP3, is in memory): the reader waits
    # while this many are. One more than the encoders keeps them busy; more, within
    # BUFFER_BYTES, let the decoder run ahead, so the last chunks are not waiting for it.
    slots = threading.BoundedSemaphore(held_chunks(workers, (chunk + pre + post) * sb))
    chunks: queue.SimpleQueue = queue.SimpleQueue()
    assembler = _Assembler(tmp, job, slots, chunk, pre)
    thread = threading.Thread(target=assembler.run, args=(chunks,), name="mp3-assemble", daemon=True)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mp3-chunk", initializer=nice_thread,
                              initargs=(ENCODER_NICENESS,))
    source = _Source(pcm, job)
    thread.start()
    consumed = 0
    count = held = 0
    try:
        carry = b""  # the previous chunk's last pre + post samples: where the next one starts
        while True:
            k = count
            first = k * chunk - pre if k else 0
            size = (k + 1) * chunk + post - first
            while not slots.acquire(timeout=0.5):
                assembler.check()
            buf = bytearray(size * sb)
            buf[:len(carry)] = carry
            view = memoryview(buf)
            filled = len(carry) + source.fill(view[len(carry):], assembler.check, first + len(carry) // sb)
            view.release()
            eof = filled < len(buf)
            if eof:
                filled -= filled % sb  # a sample cut in half at the end is not a sample
                del buf[filled:]
            consumed = first + filled // sb
            if k == 0 and consumed == 0:
                slots.release()
                break
            c = _Chunk(k, buf, last=eof)
            if not eof:
                carry = bytes(buf[-(pre + post) * sb:])
            c.future = pool.submit(_encode_chunk, c, job)
            chunks.put(c)
            buf = c = None  # the chunk's PCM is freed once encoded, not when the next one is read
            count += 1
            held = max(held, count - assembler.joined)
            if eof:
                break
        chunks.put(None)
        thread.join()
        assembler.check()
        pool.shutdown()
        if count:
            assembler.write_tag(consumed)
    except BaseException:
        assembler.stop()
        chunks.put(None)
        pool.shutdown(cancel_futures=True)
        thread.join()
        raise
    if count == 0:
        return _encode_single(_Empty(), tmp, job)
    padding = assembler.frames * spf - assembler.delay - consumed
    return Encoded(consumed, assembler.delay, padding, chunks=count, workers=min(workers, count), held=held)


class _Empty:
    @staticmethod
    def read(_n: int = -1) -> bytes:
        return b""


def _encode_chunk(c: _Chunk, job: _Job) -> bytes:
    """One chunk's MP3 stream (no Info frame), from LAME in this process (engine.lame)."""
    enc = lame.Encoder(job.rate, job.channels, job.bitrate or DEFAULT_BITRATE["mp3"])
    try:
        data = enc.encode(c.pcm)
        c.pcm = None
        data += enc.finish()
    finally:
        enc.close()
    c.delay = enc.delay
    return data


def _own_words(exc: BaseException) -> StitchError:
    """Our message for a failure while joining: the reason, never a path or a traceback (those
    go to the log)."""
    log.warning("joining the mp3 chunks failed: %r", exc)
    if isinstance(exc, OSError) and exc.strerror:
        return StitchError(f"cannot write the mp3 output: {exc.strerror}")
    return StitchError(f"cannot join the encoded chunks ({type(exc).__name__})")


class _Assembler:
    """Joins the chunks' MP3 streams in order into the output, as their encodes finish.

    From chunk k it keeps the global frames [k*C, (k+1)*C) (the last chunk: to its end). At a seam
    the first kept frames of chunk k may need more reservoir than the frames before them leave
    free even at the highest bitrate; then chunk k-1's own next frame (from its post-roll, whose
    reservoir is consistent with what precedes it) is used instead and the seam moves one frame.
    """

    def __init__(self, tmp: Path, job: _Job, slots: threading.BoundedSemaphore, chunk: int, pre: int):
        self._tmp = tmp
        self._job = job
        self._slots = slots
        self._chunk_frames = chunk // job.frame_samples
        self._pre_frames = pre // job.frame_samples
        self._error: BaseException | None = None
        self._stopped = False
        self.frames = 0
        self.joined = 0  # chunks written out
        self.delay = 0
        self.seam_moves = 0
        self.bumped = 0

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stopped = True

    def run(self, chunks: queue.SimpleQueue) -> None:
        try:
            self._run(chunks)
        except BaseException as exc:  # handed to the reading thread by check()
            self._error = exc if isinstance(exc, StitchError) else _own_words(exc)
            self._drain(chunks)

    def _drain(self, chunks: queue.SimpleQueue) -> None:
        while chunks.get() is not None:
            self._slots.release()

    def _run(self, chunks: queue.SimpleQueue) -> None:
        out = open(self._tmp, "wb")
        try:
            self._join(chunks, out)
        finally:
            out.close()

    def _join(self, chunks: queue.SimpleQueue, out: BinaryIO) -> None:
        offsets = array("q")  # byte offset (from the first audio frame) of every 32nd frame
        written = [0]
        tag_size = 0
        first_header = None

        def write(frame: bytes) -> None:
            if self.frames_out % 32 == 0:
                offsets.append(written[0])
            out.write(frame)
            written[0] += len(frame)
            self.frames_out += 1

        self.frames_out = 0
        relayer = Relayer(write)
        spare: list[Frame] = []  # the previous chunk's frames after its last kept one
        while (c := chunks.get()) is not None:
            if self._stopped:
                self._slots.release()
                continue
            stream = c.future.result()
            with io.BytesIO(stream) as f:
                reader = FrameReader(f)
                keep_from = self._pre_frames if c.index else 0
                keep_to = None if c.last else keep_from + self._chunk_frames
                new_spare: list[Frame] = []
                seam = bool(c.index)
                kept = 0
                for j, frame in enumerate(reader):
                    if first_header is None:
                        first_header = frame.header
                        tag_size = len(build_tag_frame(frame.header, 0, 0, bytes(100), vbr=False,
                                                       delay=0, padding=0))
                        out.write(bytes(tag_size))
                        self.delay = c.delay
                    if j < keep_from:
                        continue
                    if keep_to is not None and j >= keep_to:
                        if len(new_spare) < POST_ROLL_FRAMES - 1:
                            new_spare.append(frame)
                        continue
                    if seam:
                        # The seam moves while chunk k's frame cannot be placed and the previous
                        # chunk still has its own version of that frame.
                        skipped = j - keep_from
                        if not relayer.fits(frame) and skipped < len(spare):
                            relayer.add(spare[skipped])
                            self.seam_moves += 1
                            kept += 1
                            continue
                        seam = False
                    relayer.add(frame)
                    kept += 1
                spare = new_spare
            if keep_to is not None and kept != self._chunk_frames:
                raise StitchError(f"chunk {c.index} of the mp3 encode came out short")
            self.joined += 1
            self._slots.release()
        relayer.finish()
        if first_header is None:
            return
        self.frames = relayer.frames
        self.bumped = relayer.bumped
        self._tag = (first_header, tag_size, offsets, written[0], relayer.bumped > 0)

    def write_tag(self, samples: int) -> None:
        h, tag_size, offsets, audio_bytes, vbr = self._tag
        total_bytes = tag_size + audio_bytes
        toc = bytearray(100)
        for i in range(100):
            target = i * self.frames // 100
            k = min(target // 32, len(offsets) - 1)
            nxt = offsets[k + 1] if k + 1 < len(offsets) else audio_bytes
            span = min(32, self.frames - k * 32) or 1
            pos = offsets[k] + (nxt - offsets[k]) * (target - k * 32) // span
            toc[i] = min(255, pos * 256 // max(audio_bytes, 1))
        padding = self.frames * self._job.frame_samples - self.delay - samples
        if not 0 <= padding <= 0xFFF:
            raise StitchError(f"the mp3 chunks hold {self.frames} frames, which do not fit {samples} samples")
        frame = build_tag_frame(h, self.frames, total_bytes, bytes(toc), vbr=vbr, delay=self.delay,
                                padding=padding)
        with open(self._tmp, "r+b") as f:
            f.write(frame)


__all__ = ["Encoded", "encode_pcm", "parallel_formats", "ReservoirError"]
