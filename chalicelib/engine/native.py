"""The decode side of an exact join without an ffmpeg decoder, where one is not needed.

A join of MP3s used whole, at the output's rate and layout, without crossfades (IVR prompts, a
podcast's segments, an audiobook's chapters) needs no decoder process: ``native_pcm`` decodes
the parts in this process with libsndfile (engine.sndfile), straight into the chunk encoder's
buffers, and is read like the decode graph's pipe. A part with no gain and no fade needs no
filter at all: its gapless samples go out as they are, then its gap of zeros. A part with a gain
(its own, or a loudness match) or a fade goes through an ffmpeg that filters the PCM decoded here
(volume, afade: the graph's own filters, so the output is the same). Loudness is measured in
parallel, each part from PCM decoded here too (``feed``), and a part starts once its own level is
known, as in the streamed graph. A part libsndfile does not see as the probe does (another
length) is decoded by an ffmpeg of its own instead, so the output is the same either way.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator

from ..errors import UnsupportedAudio
from ..ffmpeg import dies_with_parent
from ..options import Options
from . import parallel, sndfile
from .graph import Layout, Pcm, part_command, tail, widen_pipe
from .loudness import leveling
from .segment import Segment

FEED_FRAMES = 32768  # sample frames per write into a filtering or measuring ffmpeg


log = logging.getLogger(__name__)


def applies(options: Options, segments: list[Segment], layout: Layout) -> bool:
    """True when every part is an MP3 used whole (see the module), parts do not overlap, fades
    stay within the first and last part, and both libraries are here: libsndfile to decode, and
    LAME to encode from this process (other encoders read a pipe from ffmpeg)."""
    if layout.crossfade or options.format not in parallel.parallel_formats():
        return False
    if layout.fade_in > segments[0].samples(layout.rate) or layout.fade_out > segments[-1].samples(layout.rate):
        return False
    if not all(s.info.codec == "mp3" and s.whole(layout.rate, layout.channels) for s in segments):
        return False
    return sndfile.library() is not None


@contextlib.contextmanager
def native_pcm(segments: list[Segment], layout: Layout, target_lufs: float | None = None,
               ceiling_dbtp: float = 0.0) -> Iterator[Pcm]:
    """The parts' PCM; the parts whose level is needed (``loudness.needs_level``) are measured
    in parallel meanwhile, and ``Pcm.segments`` fills with the parts as finally leveled."""
    with leveling(segments, target_lufs, ceiling_dbtp) as level:
        pcm = Pcm(None)  # type: ignore[arg-type]  # the stream follows: it fills pcm.segments
        stream = pcm.stream = _Stream(segments, layout, level, pcm.segments)
        try:
            yield pcm
        finally:
            stream.close()


def reader(segment: Segment, rate: int, channels: int) -> sndfile.Mp3Reader | None:
    """libsndfile open on the part's source, if it sees exactly the samples the probe does at
    ``rate``/``channels`` (the caller checked that the part is an MP3 used whole); else None."""
    try:
        r = sndfile.Mp3Reader(segment.info.path)
    except OSError as exc:
        log.info("%s: decoded by ffmpeg (%s)", segment.info.label, exc)
        return None
    samples = segment.samples(rate)
    if (r.frames, r.rate, r.channels) != (samples, rate, channels):
        log.info("%s: decoded by ffmpeg (libsndfile sees %d samples at %d Hz x %d, the probe %d)",
                    segment.info.label, r.frames, r.rate, r.channels, samples)
        r.close()
        return None
    return r


def measurable(segment: Segment) -> bool:
    """True when a part's level can be measured from PCM decoded here (an MP3 used whole)."""
    info = segment.info
    return (info.codec == "mp3" and segment.whole(info.sample_rate, info.channels)
            and sndfile.library() is not None)


def pcm_input(rate: int, channels: int) -> list[str]:
    """ffmpeg's input options for the float PCM ``feed`` writes to its stdin."""
    return ["-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0"]


def feed(r: sndfile.Mp3Reader, sink) -> None:
    """Every sample ``r`` decodes, as interleaved float32, written to ``sink`` (a binary file),
    which is closed at the end; a reader that went away (BrokenPipeError) ends it quietly: the
    reader's exit tells why. Other errors are the caller's, and ``sink`` is left open for it to
    stop the reader first."""
    buf = bytearray(FEED_FRAMES * 4 * r.channels)
    target = (ctypes.c_char * len(buf)).from_buffer(buf)
    view = memoryview(buf)
    try:
        while got := r.read_into(ctypes.addressof(target), FEED_FRAMES):
            sink.write(view[:got * 4 * r.channels])
        sink.close()  # end of input; on an error it stays open, so the reader never takes a short input for the whole
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sink.close()  # closes the pipe even when the last flush fails
    finally:
        view.release()
        del target


class _Stream:
    """The parts' samples in order, gaps between them, as interleaved float32 (``readinto``)."""

    def __init__(self, segments: list[Segment], layout: Layout, leveled: Callable[[Segment], Segment],
                 opened: list[Segment]):
        self._layout, self._leveled, self._opened = layout, leveled, opened
        self._sb = 4 * layout.channels
        self._todo = [(s, *layout.edges(i, len(segments))) for i, s in enumerate(segments)]
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
                segment, gap, fade_in, fade_out = self._todo.pop()
                segment = self._leveled(segment)  # waits for its level, if it is measured
                self._opened.append(segment)
                self._part = _Part.open(segment, self._layout, gap, fade_in, fade_out)
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
    def open(segment: Segment, layout: Layout, gap: int, fade_in: int = 0, fade_out: int = 0) -> _Part:
        samples = segment.samples(layout.rate)
        filters = segment.filters(layout.rate, layout.channels, fade_in=fade_in, fade_out=fade_out)
        r = reader(segment, layout.rate, layout.channels)
        if r is None:
            cmd = part_command([*segment.input_args(), "-map", "0:a:0"], filters, layout)
            return _FfmpegPart(segment, layout, samples, gap, cmd)
        if not filters:
            return _NativePart(segment, 4 * layout.channels, samples, gap, r)
        # The graph's own filters (gain, fades) on the PCM decoded here: the same samples out.
        return _FfmpegPart(segment, layout, samples, gap, part_command(pcm_input(layout.rate, layout.channels),
                                                                       filters, layout), r)

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
            log.warning("%s: %d samples short; padded with silence", self.segment.info.label, self._samples)
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
    """The part through an ffmpeg of its own (``cmd``): decoding and filtering the source, or,
    given ``source``, filtering the PCM a thread decodes here and feeds to its stdin."""

    def __init__(self, segment: Segment, layout: Layout, samples: int, gap: int, cmd: list[str],
                 source: sndfile.Mp3Reader | None = None):
        super().__init__(segment, 4 * layout.channels, samples, gap)
        self._err = tempfile.TemporaryFile()
        self._source, self._feeder, self._feed_error = source, None, None
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err,
                                          stdin=subprocess.PIPE if source else subprocess.DEVNULL,
                                          **dies_with_parent())
        except BaseException:
            self._err.close()
            if source is not None:
                source.close()
            raise
        widen_pipe(self._proc.stdout.fileno())
        if source is not None:
            widen_pipe(self._proc.stdin.fileno())
            self._feeder = threading.Thread(target=self._feed, name="stitch-native-feed", daemon=True)
            self._feeder.start()

    def _feed(self) -> None:
        try:
            feed(self._source, self._proc.stdin)
        except BaseException as exc:  # reported by _finish: ffmpeg would end cleanly, and short
            self._feed_error = exc
            self._proc.kill()

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
        if self._feeder is not None:
            self._feeder.join()
        info = self.segment.info
        if self._feed_error is not None:
            log.warning("%s: decoding failed: %r", info.label, self._feed_error)
        elif code != 0:
            log.warning("decoder failed (exit %s): %s", code, tail(self._err))
        else:
            return
        raise UnsupportedAudio(f"{info.label}: cannot be decoded ({info.codec})", part=info.index)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.stdout.close()
        self._proc.wait()
        if self._feeder is not None:
            self._feeder.join()  # its next write fails once ffmpeg is gone
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            self._source.close()
        self._err.close()
