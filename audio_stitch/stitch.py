"""`python -m audio_stitch stitch PART... -o OUT [options]`: join local audio files.

Prints the Result as JSON on stdout. A progress bar goes to stderr only when stderr is a
terminal and the job re-encodes. Bad input exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from chalicelib.errors import StitchError

# (flag, Options field, type): the flag is what the user typed, the field what errors name.
OPTION_FLAGS = (
    ("--format", "format", str, "mp3 (default), m4a, ogg, wav or flac"),
    ("--bitrate", "bitrate", str, "e.g. 128k (lossy formats)"),
    ("--sample-rate", "sample_rate", int, "Hz; default: the highest input rate"),
    ("--channels", "channels", int, "1 or 2; default: the most any input has"),
    ("--gap-ms", "gap_ms", int, "silence between parts"),
    ("--crossfade-ms", "crossfade_ms", int, "overlap consecutive parts with a crossfade"),
    ("--fade-in-ms", "fade_in_ms", int, "fade in at the start of the output"),
    ("--fade-out-ms", "fade_out_ms", int, "fade out at the end of the output"),
    ("--loudness-lufs", "loudness_lufs", float, "bring every part to this integrated loudness, e.g. -16"),
)
FIELD_TO_FLAG = {f: flag for flag, f, _, _ in OPTION_FLAGS}
_NUM = r"\d+(?:\.\d*)?|\.\d+"
# a.mp3@1.5-3  a.mp3@1.5-  a.mp3@-3  a.mp3@1.5-3@-6dB  a.mp3@@+3dB
_SUFFIX = re.compile(rf"@(?:(?P<start>{_NUM})?-(?P<end>{_NUM})?)?(?:@(?P<gain>[+-]?(?:{_NUM}))dB)?$", re.I)

EPILOG = """\
part syntax:
  FILE                 the whole file
  FILE@START-END       trimmed to START..END seconds of the source (either may be left out)
  FILE@START-END@GdB   trimmed, then gain G dB (e.g. a.mp3@0-30@-3dB, b.wav@@+2.5dB)

examples:
  python -m audio_stitch stitch intro.mp3 talk.mp3 outro.mp3 -o show.mp3
  python -m audio_stitch stitch a.wav b.m4a@10-70 -o mix.m4a --format m4a --crossfade-ms 2000
  python -m audio_stitch stitch *.mp3 -o all.mp3 --loudness-lufs -16 --gap-ms 500
"""


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m audio_stitch stitch", description="Join audio files into one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("parts", nargs="+", metavar="PART", help="input files in output order (see part syntax)")
    p.add_argument("-o", "--output", required=True, help="output file (written atomically)")
    for flag, name, kind, text in OPTION_FLAGS:
        p.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=text)
    return p


def parse_part(arg: str, index: int):
    """``FILE[@START-END][@GAINdB]`` -> PartInput; a file whose name really has the suffix wins."""
    from chalicelib.engine.types import PartInput
    from chalicelib.options import PartOptions

    m = _SUFFIX.search(arg)
    if not m or m.start() == 0 or Path(arg).exists():
        return PartInput(Path(arg), name=Path(arg).name)
    data = {}
    if m.group("start"):
        data["start_s"] = float(m.group("start"))
    if m.group("end"):
        data["end_s"] = float(m.group("end"))
    if m.group("gain"):
        data["gain_db"] = float(m.group("gain"))
    path = Path(arg[: m.start()])
    return PartInput(path, PartOptions.from_dict(data, f"part {index} ({path.name})"), name=path.name)


class _Bar:
    """Lazily opens a tqdm bar on the first fractional update (copy joins only report 1.0)."""

    def __init__(self):
        self.bar = None

    def __call__(self, fraction: float) -> None:
        if self.bar is None:
            if fraction >= 1.0:
                return
            from tqdm import tqdm

            self.bar = tqdm(total=1000, unit="‰", file=sys.stderr, leave=False,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        self.bar.update(int(fraction * 1000) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m audio_stitch stitch``; returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    bar = _Bar() if sys.stderr.isatty() else None
    try:
        from chalicelib.engine import stitch
        from chalicelib.options import Options

        data = {name: getattr(args, name) for _, name, _, _ in OPTION_FLAGS if getattr(args, name) is not None}
        try:
            options = Options.from_dict(data)
        except StitchError as exc:
            flag = FIELD_TO_FLAG.get(exc.field or "")
            raise CliError(f"{flag}: {exc.message}" if flag else exc.message) from None
        parts = [parse_part(a, i) for i, a in enumerate(args.parts)]
        result = stitch(parts, args.output, options, progress=bar)
    except CliError as exc:
        return _fail(bar, str(exc), 2)
    except StitchError as exc:
        return _fail(bar, exc.message, 2 if exc.permanent and exc.status < 500 else 1)
    except KeyboardInterrupt:
        return _fail(bar, "interrupted", 130)
    except Exception as exc:  # ffmpeg missing, disk full...: one line, not a traceback
        return _fail(bar, f"{type(exc).__name__}: {exc}", 1)
    if bar is not None:
        bar.close()
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _fail(bar, message: str, code: int) -> int:
    if bar is not None:
        bar.close()
    print(f"error: {message}", file=sys.stderr)
    return code
