"""The decode side of an exact join: every part decoded, trimmed, gained, resampled, cut to its
exact length and joined (gaps, crossfades, fades), as interleaved f32le PCM on a pipe.

Two shapes, one per-part pipeline (``Segment``): one ffmpeg process with one filter graph, or,
when loudness matching lets parts start before every level is known, one decoder per part
streaming into the pipe in order.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import StitchError, UnsupportedAudio
from ..ffmpeg import dies_with_parent, ffmpeg_command
from ..options import Options
from .loudness import leveling
from .segment import Segment, fades

log = logging.getLogger(__name__)


# Samples per frame of the decoder's output (see graph_command), and the filter that makes them.
OUT_FRAME = 16384
REFRAME = f"asetnsamples=n={OUT_FRAME}:p=0"
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged pipe (fs.pipe-max-size)


def widen_pipe(fd: int) -> None:
    """Let a pipe hold PIPE_BYTES, so its writer and reader swap far less often (best effort)."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class DecodeFailed(StitchError):
    """The one-graph decoder failed; the engine finds the part to blame."""


@dataclass(frozen=True)
class Layout:
    """The PCM every part is turned into, and the exact lengths that follow from the options."""

    rate: int
    channels: int
    gap: int = 0  # samples of silence between parts
    crossfade: int = 0  # samples two neighbours overlap
    fade_in: int = 0
    fade_out: int = 0

    @classmethod
    def of(cls, options: Options, rate: int, channels: int, parts: int) -> Layout:
        def n(ms: int) -> int:
            return round(ms * rate / 1000)

        return cls(rate, channels, n(options.gap_ms) if parts > 1 else 0,
                   n(options.crossfade_ms) if parts > 1 else 0, n(options.fade_in_ms), n(options.fade_out_ms))

    def total(self, segments: list[Segment]) -> int:
        """Samples of the output, to the sample."""
        joins = len(segments) - 1
        return sum(s.samples(self.rate) for s in segments) + joins * (self.gap - self.crossfade)

    def pcm_args(self) -> list[str]:
        return ["-f", "f32le", "-ar", str(self.rate), "-ac", str(self.channels)]

    def edges(self, i: int, parts: int) -> tuple[int, int, int]:
        """What part ``i`` of ``parts`` carries itself when parts are decoded one by one: the gap
        after it, and the fade-in or fade-out when it is the first or last (samples)."""
        last = parts - 1
        return (self.gap if i < last else 0, self.fade_in if i == 0 else 0, self.fade_out if i == last else 0)


def graph_command(segments: list[Segment], layout: Layout) -> list[str]:
    """One ffmpeg decoding every part through one filter graph to f32le on stdout."""
    cmd = ffmpeg_command()
    for s in segments:
        cmd += s.input_args()
    last = len(segments) - 1
    chains, labels = [], []
    for i, s in enumerate(segments):
        filters = s.filters(layout.rate, layout.channels, gap_samples=layout.gap if i < last else 0)
        if layout.crossfade:
            # ffmpeg 7.0's acrossfade drops most of its second input when that input arrives in
            # frames larger than usual (flac's 4608 samples); even frames avoid it.
            filters.append("asetnsamples=n=1024:p=0")
        if filters:
            chains.append(f"[{i}:a:0]{','.join(filters)}[p{i}]")
            labels.append(f"p{i}")
        else:
            labels.append(f"{i}:a:0")
    if layout.crossfade:
        prev = labels[0]
        for i in range(1, len(segments)):
            chains.append(f"[{prev}][{labels[i]}]acrossfade=ns={layout.crossfade}:c1=tri:c2=tri[x{i}]")
            prev = f"x{i}"
        joined = prev
    elif last:
        chains.append("".join(f"[{label}]" for label in labels) + f"concat=n={len(segments)}:v=0:a=1[j]")
        joined = "j"
    else:
        joined = labels[0]
    post = fades(layout.total(segments), layout.fade_in, layout.fade_out)
    # Out in frames of OUT_FRAME samples, not the decoders' 1152: a twelfth of the writes and
    # wake-ups on the pipe (about a third of the decoder's system time at 44.1 kHz).
    post.append(REFRAME)
    chains.append(f"[{joined}]{','.join(post)}[out]")
    return cmd + ["-filter_complex_threads", "1", "-filter_complex", ";".join(chains), "-map", "[out]",
                  *layout.pcm_args(), "pipe:1"]


@dataclass
class Pcm:
    """A PCM stream being produced, and the segments as finally leveled (known once it ends)."""

    stream: BinaryIO
    segments: list[Segment] = field(default_factory=list)


def tail(err) -> str:
    """The end of what an ffmpeg wrote to ``err`` (a file), for the log."""
    err.seek(0)
    return err.read()[-2000:].decode("utf-8", "replace").strip()


@contextlib.contextmanager
def graph_pcm(segments: list[Segment], layout: Layout) -> Iterator[Pcm]:
    """The one-graph decoder running; raises DecodeFailed after the block if it failed."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: ffmpeg can never block on it
        dec = subprocess.Popen(graph_command(segments, layout), stdout=subprocess.PIPE, stderr=err,
                               stdin=subprocess.DEVNULL, **dies_with_parent())
        widen_pipe(dec.stdout.fileno())
        try:
            yield Pcm(dec.stdout, list(segments))
        except BaseException:
            dec.kill()
            raise
        finally:
            dec.stdout.close()
            code = dec.wait()
        if code != 0:
            # The tool's own words go to the log, not to the client.
            log.warning("decoder failed (exit %s): %s", code, tail(err))
            raise DecodeFailed(f"ffmpeg failed (exit {code}) while decoding the parts")


def streams_parts(options: Options, segments: list[Segment], layout: Layout) -> bool:
    """Loudness matching can stream part after part (each starts once its own level is known)
    unless parts overlap (crossfades) or a fade reaches past the first or last part."""
    if options.loudness_lufs is None or layout.crossfade:
        return False
    first, last = segments[0].samples(layout.rate), segments[-1].samples(layout.rate)
    return layout.fade_in <= first and layout.fade_out <= last


@contextlib.contextmanager
def streamed_pcm(segments: list[Segment], layout: Layout, target_lufs: float | None,
                 ceiling_dbtp: float) -> Iterator[Pcm]:
    """One decoder per part, in order, into one pipe; each part's level is measured in parallel
    and it starts as soon as its own level is known. Gaps and fades are each part's own."""
    read_fd, write_fd = os.pipe()
    widen_pipe(read_fd)
    pcm = Pcm(open(read_fd, "rb"))
    failures: list[BaseException] = []

    def pump() -> None:
        try:
            with open(write_fd, "wb") as sink, leveling(segments, target_lufs, ceiling_dbtp) as level:
                for i, s in enumerate(segments):
                    s = level(s)
                    pcm.segments.append(s)
                    gap, fade_in, fade_out = layout.edges(i, len(segments))
                    filters = s.filters(layout.rate, layout.channels, gap_samples=gap, fade_in=fade_in,
                                        fade_out=fade_out)
                    _decode_into(sink, s, filters, layout)
        except BrokenPipeError:
            pass  # the encoder stopped reading: its own error tells why
        except BaseException as exc:  # re-raised in the calling thread below
            failures.append(exc)

    feeder = threading.Thread(target=pump, name="stitch-feed", daemon=True)
    feeder.start()
    try:
        yield pcm
    except BaseException:
        pcm.stream.close()  # the feeder's next write fails, and it stops
        feeder.join()
        if failures:
            raise failures[0] from None  # a part that cannot be decoded explains the encoder's error
        raise
    pcm.stream.close()
    feeder.join()
    if failures:
        raise failures[0]


def part_command(inputs: list[str], filters: list[str], layout: Layout) -> list[str]:
    """One ffmpeg running one part's ``filters`` on ``inputs``, out as the pipe's PCM, in frames of
    OUT_FRAME samples."""
    return ffmpeg_command(*inputs, "-filter_threads", "1", "-af", ",".join([*filters, REFRAME]),
                          *layout.pcm_args(), "pipe:1")


def _decode_into(sink: BinaryIO, s: Segment, filters: list[str], layout: Layout) -> None:
    cmd = part_command([*s.input_args(), "-map", "0:a:0"], filters, layout)
    with tempfile.TemporaryFile() as err:
        # The decoder writes into the pipe itself: no copy through Python.
        code = subprocess.run(cmd, stdout=sink, stderr=err, stdin=subprocess.DEVNULL,
                              **dies_with_parent()).returncode
        if code == 0:
            return
        # ffmpeg ignores SIGPIPE: a reader that went away shows as a failed write.
        if code == -13 or "Broken pipe" in tail(err):
            raise BrokenPipeError()
    raise UnsupportedAudio(f"{s.info.label}: cannot be decoded ({s.info.codec})", part=s.info.index)
