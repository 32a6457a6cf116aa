"""The decode side of an exact join without an ffmpeg process, where one is not needed.

A plain join (every part an MP3 the probe knows exactly, used whole, at the output's rate and
layout, with no gain, crossfade, fade or loudness match: IVR prompts, a podcast's segments, an
audiobook's chapters) needs no filter at all: the output is the parts' gapless samples one after
the other, with gaps of zeros. ``native_pcm`` decodes them in this process with libsndfile
(engine.sndfile), straight into the chunk encoder's buffers, and is read like the decode graph's
pipe. A part libsndfile does not see as the probe does (another length) is decoded by an ffmpeg
of its own instead, so the output is the same either way.
"""
from __future__ import annotations

import contextlib
import ctypes
import subprocess
import tempfile
from collections.abc import Iterator

from ..errors import UnsupportedAudio
from ..ffmpeg import dies_with_parent, ffmpeg_command
from ..options import Options
from . import parallel, sndfile
from .graph import OUT_FRAME, Layout, Pcm
from .segment import Segment


def _log():
    import logging

    return logging.getLogger(__name__)


def applies(options: Options, segments: list[Segment], layout: Layout) -> bool:
    """True when the join is plain (see the module) and both libraries are here: libsndfile to
    decode, and LAME to encode from this process (other encoders read a pipe from ffmpeg)."""
    if options.loudness_lufs is not None or layout.crossfade or layout.fade_in or layout.fade_out:
        return False
    if options.format not in parallel.parallel_formats():
        return False
    if not all(s.info.codec == "mp3" and s.plain(layout.rate, layout.channels) for s in segments):
        return False
    return sndfile.library() is not None


@contextlib.contextmanager
def native_pcm(segments: list[Segment], layout: Layout) -> Iterator[Pcm]:
    stream = _Stream(segments, layout)
    try:
        yield Pcm(stream, list(segments))
    finally:
        stream.close()


class _Stream:
    """The parts' samples in order, gaps between them, as interleaved float32 (``readinto``)."""

    def __init__(self, segments: list[Segment], layout: Layout):
        self._layout = layout
        self._sb = 4 * layout.channels
        last = len(segments) - 1
        self._todo = [(s, layout.gap if i < last else 0) for i, s in enumerate(segments)]
        self._todo.reverse()
        self._part: _Part | None = None
        self._left = bytearray()  # bytes of a sample frame that did not fit the caller's buffer

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        if self._left:
            n = min(len(self._left), len(view))
            view[:n] = self._left[:n]
            del self._left[:n]
            filled = n
        while filled < len(view):
            if self._part is None:
                if not self._todo:
                    break
                segment, gap = self._todo.pop()
                self._part = _Part.open(segment, self._layout, gap)
            room = view[filled:]
            if len(room) < self._sb:  # less than one sample frame: decode one, keep the rest
                one = bytearray(self._sb)
                got = self._part.read(memoryview(one))
                if got:
                    room[:] = one[:len(room)]
                    self._left = one[len(room):got]
                    filled += len(room)
                    continue
            else:
                got = self._part.read(room)
                filled += got
            if not got:
                self._part.close()
                self._part = None
        return filled

    def close(self) -> None:
        if self._part is not None:
            self._part.close()
            self._part = None


class _Part:
    """One part's exact samples and the zeros of the gap after it."""

    def __init__(self, segment: Segment, sb: int, samples: int, gap: int):
        self.segment, self._sb = segment, sb
        self._samples, self._gap = samples, gap  # still to come

    @staticmethod
    def open(segment: Segment, layout: Layout, gap: int) -> _Part:
        samples = segment.samples(layout.rate)
        sb = 4 * layout.channels
        try:
            reader = sndfile.Mp3Reader(segment.info.path)
        except OSError as exc:
            _log().info("%s: decoded by ffmpeg (%s)", segment.info.label, exc)
            return _FfmpegPart(segment, layout, samples, gap)
        if (reader.frames, reader.rate, reader.channels) != (samples, layout.rate, layout.channels):
            _log().info("%s: decoded by ffmpeg (libsndfile sees %d samples at %d Hz x %d, the probe %d)",
                        segment.info.label, reader.frames, reader.rate, reader.channels, samples)
            reader.close()
            return _FfmpegPart(segment, layout, samples, gap)
        return _NativePart(segment, sb, samples, gap, reader)

    def read(self, view: memoryview) -> int:
        """Bytes written to ``view`` (whole sample frames, at least one if ``view`` holds one);
        0 once the part and its gap are done."""
        frames = len(view) // self._sb
        if self._samples:
            got = self._decode(view, min(frames, self._samples))
            if got:
                self._samples -= got
                return got * self._sb
            # The source ended early (cut short since it was probed): zeros keep the output at
            # the length reported.
            _log().warning("%s: %d samples short; padded with silence", self.segment.info.label, self._samples)
            self._gap += self._samples
            self._samples = 0
        n = min(frames, self._gap)
        if n:
            ctypes.memset(_address(view), 0, n * self._sb)
            self._gap -= n
        return n * self._sb

    def _decode(self, view: memoryview, frames: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _address(view: memoryview) -> int:
    return ctypes.addressof((ctypes.c_char * len(view)).from_buffer(view))


class _NativePart(_Part):
    def __init__(self, segment: Segment, sb: int, samples: int, gap: int, reader: sndfile.Mp3Reader):
        super().__init__(segment, sb, samples, gap)
        self._reader = reader

    def _decode(self, view: memoryview, frames: int) -> int:
        target = (ctypes.c_char * (frames * self._sb)).from_buffer(view)
        try:
            return self._reader.read_into(ctypes.addressof(target), frames)
        finally:
            del target

    def close(self) -> None:
        self._reader.close()


class _FfmpegPart(_Part):
    """The part through an ffmpeg of its own, with the filters that make it exact."""

    def __init__(self, segment: Segment, layout: Layout, samples: int, gap: int):
        super().__init__(segment, 4 * layout.channels, samples, gap)
        filters = [*segment.filters(layout.rate, layout.channels), f"asetnsamples=n={OUT_FRAME}:p=0"]
        cmd = ffmpeg_command(*segment.input_args(), "-map", "0:a:0", "-filter_threads", "1",
                             "-af", ",".join(filters), *layout.pcm_args(), "pipe:1")
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
                                      **dies_with_parent())
        self._half = bytearray()

    def _decode(self, view: memoryview, frames: int) -> int:
        want = frames * self._sb
        got = self._proc.stdout.readinto(view[:want])
        if got % self._sb:
            # a sample frame split across reads: complete it
            rest = self._sb - got % self._sb
            more = self._proc.stdout.read(rest)
            if len(more) < rest:
                got -= got % self._sb
            else:
                view[got:got + rest] = more
                got += rest
        if not got:
            self._finish()
        return got // self._sb

    def _finish(self) -> None:
        self._proc.stdout.close()
        code = self._proc.wait()
        if code != 0:
            self._err.seek(0)
            _log().warning("decoder failed (exit %s): %s", code,
                           self._err.read()[-2000:].decode("utf-8", "replace").strip())
            info = self.segment.info
            raise UnsupportedAudio(f"{info.label}: cannot be decoded ({info.codec})", part=info.index)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.stdout.close()
        self._proc.wait()
        self._err.close()
