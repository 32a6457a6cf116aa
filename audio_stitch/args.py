"""What `stitch` and `remote` share on the command line: option flags, the part suffix, the output.

Standard library only: `remote` must not import the engine.
"""
from __future__ import annotations

import re
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # the parser is built by the caller: a quick `stitch` never imports argparse
    import argparse

# (flag, option field, type, help): the flag is what the user typed, the field what errors name.
OPTION_FLAGS = (
    ("--format", "format", str, "mp3, m4a, ogg, wav or flac; default: from the -o extension, else mp3"),
    ("--bitrate", "bitrate", str, "e.g. 128k (lossy formats)"),
    ("--sample-rate", "sample_rate", int, "Hz; default: the highest input rate"),
    ("--channels", "channels", int, "1 or 2; default: the most any input has"),
    ("--gap-ms", "gap_ms", int, "silence between parts"),
    ("--crossfade-ms", "crossfade_ms", int, "overlap consecutive parts with a crossfade"),
    ("--fade-in-ms", "fade_in_ms", int, "fade in at the start of the output"),
    ("--fade-out-ms", "fade_out_ms", int, "fade out at the end of the output"),
    ("--loudness-lufs", "loudness_lufs", float, "bring every part to this integrated loudness, e.g. -16"),
)
JOIN_POLICIES = ("auto", "exact", "copy")
FIELD_TO_FLAG = {f: flag for flag, f, _, _ in OPTION_FLAGS} | {"join": "--join"}
# The extensions a format is written under; what `-o` implies when --format is not given.
EXTENSIONS = {".mp3": "mp3", ".m4a": "m4a", ".mp4": "m4a", ".aac": "m4a", ".ogg": "ogg", ".oga": "ogg",
              ".wav": "wav", ".flac": "flac"}

_NUM = r"\d+(?:\.\d*)?|\.\d+"
# a.mp3@1.5-3  a.mp3@1.5-  a.mp3@-3  a.mp3@1.5-3@-6dB  a.mp3@@+3dB
_SUFFIX = re.compile(rf"@(?:(?P<start>{_NUM})?-(?P<end>{_NUM})?)?(?:@(?P<gain>[+-]?(?:{_NUM}))dB)?$", re.I)

PART_SYNTAX = """\
part syntax:
  FILE                 the whole file
  FILE@START-END       trimmed to START..END seconds of the source (either may be left out)
  FILE@START-END@GdB   trimmed, then gain G dB (e.g. a.mp3@0-30@-3dB, b.wav@@+2.5dB)
"""


class CliError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    for flag, name, kind, text in OPTION_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(), help=text)
    parser.add_argument("--join", dest="join", choices=JOIN_POLICIES, default=None,
                        help="exact: decode so the output is the parts' exact lengths; copy: join MP3 "
                             "frames as they are (fast, keeps encoder padding); auto (default): copy "
                             "only where the padding cannot be heard")


def option_values(args: argparse.Namespace) -> dict:
    """The option fields the user gave, by their request/Options name."""
    names = [name for _, name, _, _ in OPTION_FLAGS] + ["join"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def split_part(arg: str, index: int, exists) -> tuple[str, dict]:
    """``NAME[@START-END][@GAINdB]`` -> (NAME, part options); ``exists(arg)`` true means no suffix.

    A name that really ends in something like ``@1-2`` wins when it exists. A suffix that does not
    parse (``intro.mp3@abc``) is a CliError naming it, not a missing file.
    """
    if exists(arg):
        return arg, {}
    m = _SUFFIX.search(arg)
    base = arg.rsplit("/", 1)[-1]
    if not m or m.start() == 0:
        at = base.find("@")
        if at > 0:
            raise CliError(f"part {index} ({base[:at]}): bad trim/gain suffix {base[at:]!r}: expected @START-END, @START-END@GAINdB "
                           "or @@GAINdB (seconds, e.g. @1.5-3@-6dB)")
        return arg, {}
    data = {}
    if m.group("start"):
        data["start_s"] = float(m.group("start"))
    if m.group("end"):
        data["end_s"] = float(m.group("end"))
    if m.group("gain"):
        data["gain_db"] = float(m.group("gain"))
    return arg[: m.start()], data


def resolve_output(output: str, fmt: str | None) -> tuple[Path, str | None]:
    """Check ``-o`` and settle the format: from ``--format``, else from the extension.

    A known extension that contradicts ``--format`` is refused (it would write, say, MP3 bytes into
    x.ogg); an unknown one needs ``--format``. Returns (path, format or None for the default).
    """
    path = Path(output)
    if path.is_dir():
        raise CliError(f"-o: {output} is a directory; give a file name, e.g. {path / ('out.' + (fmt or 'mp3'))}")
    implied = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        if path.suffix and implied is None:
            known = ", ".join(sorted(EXTENSIONS))
            raise CliError(f"-o: cannot tell the format from {path.suffix!r} (known: {known}); pass --format")
        return path, implied
    if implied is not None and fmt.lower() in EXTENSIONS.values() and implied != fmt.lower():
        raise CliError(f"--format {fmt} does not match -o {path.name} ({path.suffix} is {implied}); "
                       "change one of them")
    return path, fmt
