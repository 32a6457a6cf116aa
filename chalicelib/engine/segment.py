"""One part's pipeline, described once: the trimmed span of its source, its gain, and the exact
number of samples it contributes. Its methods give the ffmpeg input args and filters; the
one-graph path and the streamed path both build from them."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .probe import AudioInfo

# Input-side reads may stop this much after a trimmed end: the exact cut is atrim's.
_READ_SLACK_S = 0.1
# Decoders whose whole-file output already is the gapless length the probe reports (LAME tag,
# pre-skip and granule, exact containers), in planar float: such parts, used whole at the output
# rate and layout, need no filters, so a plain join costs what ffmpeg's own concat does. AAC is
# not here: ffmpeg plays the last frame whole, past the edit list's end.
_EXACT_DECODERS = frozenset({"mp3", "vorbis", "opus", "flac"})


@dataclass(frozen=True)
class Segment:
    """One part as it enters the graph: the trimmed span of its source and its total gain."""

    info: AudioInfo
    start_s: float
    duration_s: float
    gain_db: float
    cut_end: bool = True  # end_s was given: stop reading there
    gain_limited_db: float = 0.0  # how much of the requested boost was given up for headroom

    def with_gain(self, gain_db: float, limited_db: float = 0.0) -> Segment:
        return replace(self, gain_db=gain_db, gain_limited_db=limited_db)

    def samples(self, rate: int) -> int:
        """Samples this part contributes at ``rate``: its gapless length, to the sample."""
        return round(self.duration_s * rate)

    def plain(self, rate: int, channels: int) -> bool:
        """True when this part needs no filter: a decoder alone gives exactly its samples at
        ``rate``/``channels`` (``whole``, and no gain)."""
        return not self.gain_db and self.whole(rate, channels)

    def whole(self, rate: int, channels: int) -> bool:
        """True when a decoder alone gives exactly this part's samples at ``rate``/``channels``,
        gain aside: the whole source, in the output's layout, in a gapless-exact codec."""
        info = self.info
        head = info.mp3_head
        return (not self.start_s and not self.cut_end and not info.lead_in
                and info.codec in _EXACT_DECODERS and (info.sample_rate, info.channels) == (rate, channels)
                and not (head is not None and head.prefix_junk) and (info.codec != "mp3" or info.mp3 is not None))

    def input_args(self, slack_s: float = _READ_SLACK_S) -> list[str]:
        """The ffmpeg input options and ``-i`` for this part's source (reading ``slack_s`` past
        a trimmed end, for the exact cut of ``filters`` to take)."""
        args = []
        head = self.info.mp3_head
        if head is not None:
            # MPEG audio, known from its own frames: no format probing (a third of ffmpeg's
            # start-up with 100 one-second parts).
            args += ["-f", "mp3"]
        if head is not None and head.prefix_junk:
            # ffmpeg only reads a LAME tag in the first frame it sees: start it there.
            args += ["-skip_initial_bytes", str(head.first_frame)]
        if self.start_s:
            args += ["-ss", f"{self.start_s:.6f}"]
        if self.cut_end:
            args += ["-t", f"{self.duration_s + slack_s:.6f}"]
        return args + ["-i", str(self.info.path)]

    def filters(self, rate: int, channels: int, *, gap_samples: int = 0, fade_in: int = 0,
                fade_out: int = 0) -> list[str]:
        """Gain, resampling and layout, then the exact length, fades within the part (in
        samples) and a gap of zeros after it."""
        layout = "mono" if channels == 1 else "stereo"
        out = []
        if self.whole(rate, channels):  # the decoder gives exactly its samples: no resampling or trim
            out += [f"volume={self.gain_db:.4f}dB"] if self.gain_db else []
            out += fades(self.samples(rate), fade_in, fade_out)
            return out + ([f"apad=pad_len={gap_samples}"] if gap_samples else [])
        if self.info.lead_in and not self.start_s:
            out.append(f"atrim=start_sample={self.info.lead_in}")
        if self.gain_db:
            out.append(f"volume={self.gain_db:.4f}dB")
        n = self.samples(rate)
        out += [f"aresample={rate}", f"aformat=sample_fmts=flt:channel_layouts={layout}",
                f"atrim=end_sample={n}", f"apad=whole_len={n}"]
        out += fades(n, fade_in, fade_out)
        if gap_samples:
            out.append(f"apad=pad_len={gap_samples}")
        return out


def fades(total: int, fade_in: int, fade_out: int) -> list[str]:
    """afade filters for a stream of ``total`` samples, by sample count (exact at any rate)."""
    out = []
    if fade_in:
        out.append(f"afade=t=in:ss=0:ns={fade_in}")
    if fade_out:
        out.append(f"afade=t=out:ss={max(0, total - fade_out)}:ns={fade_out}")
    return out
