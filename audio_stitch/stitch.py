"""`audio-stitch stitch PART... -o OUT [options]`: join local audio files.

Prints the Result as JSON on stdout. A progress bar goes to stderr only when stderr is a
terminal and the job re-encodes. Bad input exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from audio_stitch.args import (
    FIELD_TO_FLAG,
    JOIN_POLICIES,
    PART_SYNTAX,
    CliError,
    add_option_flags,
    option_values,
    resolve_output,
    split_part,
)
from chalicelib.errors import StitchError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

EPILOG = PART_SYNTAX + """
examples:
  audio-stitch stitch intro.mp3 talk.mp3 outro.mp3 -o show.mp3
  audio-stitch stitch a.wav b.m4a@10-70 -o mix.m4a --crossfade-ms 2000
  audio-stitch stitch *.mp3 -o all.mp3 --loudness-lufs -16 --gap-ms 500
"""


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="audio-stitch stitch", description="Join audio files into one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("parts", nargs="+", metavar="PART", help="input files in output order (see part syntax)")
    p.add_argument("-o", "--output", required=True, help="output file (written atomically)")
    add_option_flags(p)
    return p


class _Args:
    """What ``_quick_args`` found: the parser's attributes for the flags it knows (the option
    flags it does not know are read with ``getattr(args, name, None)``)."""

    def __init__(self, parts: list[str], values: dict[str, str]):
        self.parts = parts
        self.output = values.pop("output")
        self.format = values.pop("format", None)
        self.join = values.pop("join", None)


_QUICK_FLAGS = {"-o": "output", "--output": "output", "--format": "format", "--join": "join"}


def _quick_args(argv: list[str]) -> _Args | None:
    """The common ``PART... -o OUT [--join POLICY] [--format FMT]``, parsed without argparse.

    Importing argparse and building the parser cost about 8 ms, a tenth of a copy join of L.
    Anything else (another flag, ``--output=X``, a flag twice, a value or part that starts with
    ``-``, a --join value that is not a policy, no part, no -o) is None: argparse then parses it
    and words the errors and help, so both read the accepted forms the same."""
    parts, values = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            name = _QUICK_FLAGS.get(arg)
            if name is None or name in values or i + 1 == len(argv):
                return None
            value = argv[i + 1]
            if not value or value.startswith("-") or (name == "join" and value not in JOIN_POLICIES):
                return None
            values[name] = value
            i += 2
        elif not arg:
            return None
        else:
            parts.append(arg)
            i += 1
    if not parts or "output" not in values:
        return None
    return _Args(parts, values)


def parse_part(arg: str, index: int):
    """``FILE[@START-END][@GAINdB]`` -> PartInput; a file whose name really has the suffix wins."""
    from chalicelib.engine.types import PartInput
    from chalicelib.options import PartOptions

    name, data = split_part(arg, index, lambda a: Path(a).exists())
    path = Path(name)
    if not data:
        return PartInput(path, name=path.name)
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
    """Entry point for ``audio-stitch stitch``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = _quick_args(argv) or _parser().parse_intermixed_args(argv)
    bar = _Bar() if sys.stderr.isatty() else None
    try:
        from chalicelib.engine import stitch
        from chalicelib.options import Options

        output, fmt = resolve_output(args.output, args.format)
        data = {**option_values(args), **({"format": fmt} if fmt else {})}
        try:
            options = Options.from_dict(data)
        except StitchError as exc:
            flag = FIELD_TO_FLAG.get(exc.field or "")
            raise CliError(f"{flag}: {exc.message}" if flag else exc.message) from None
        parts = [parse_part(a, i) for i, a in enumerate(args.parts)]
        result = stitch(parts, output, options, progress=bar)
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
