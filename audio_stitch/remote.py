"""`audio-stitch remote PART... -o OUT --api URL`: stitch through the API (deployed or `make run`).

Each PART is a local file (uploaded through POST /uploads), an http(s) URL, or a key in the
input bucket, with the same @START-END@GAINdB suffix as `stitch`. Prints the result as JSON;
progress bars (upload, job, download) go to stderr when it is a terminal. Bad input exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from audio_stitch.args import (
    FIELD_TO_FLAG,
    PART_SYNTAX,
    CliError,
    add_option_flags,
    option_values,
    resolve_output,
    split_part,
)
from audio_stitch.client import ApiError, Client, ClientError, JobFailed

EPILOG = PART_SYNTAX + """  URL or KEY instead of FILE: an http(s) link, or a key already in the input bucket

examples:
  export AUDIO_STITCH_API=http://127.0.0.1:8000       # `make run`; a deployed stage also needs
  export AUDIO_STITCH_API_KEY=...                     # its API key
  audio-stitch remote intro.mp3 talk.wav@12-300 samples/outro.mp3 -o show.mp3 --gap-ms 250
  audio-stitch remote https://example.com/a.mp3 b.wav -o mix.m4a --crossfade-ms 2000
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audio-stitch remote", description="Stitch through the audio-stitch API.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", metavar="PART", help="files, URLs or bucket keys in output order")
    p.add_argument("-o", "--output", required=True, help="where the result is downloaded (written atomically)")
    p.add_argument("--api", default=os.environ.get("AUDIO_STITCH_API"),
                   help="the API's base URL (env AUDIO_STITCH_API), e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", default=os.environ.get("AUDIO_STITCH_API_KEY"),
                   help="x-api-key for a deployed stage (env AUDIO_STITCH_API_KEY)")
    p.add_argument("--async", dest="async_", action="store_true", help="queue the job even if it is small")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for a queued job (default 1800)")
    add_option_flags(p)
    return p


def parse_part(arg: str, index: int) -> tuple[dict, Path | None]:
    """A part of the request body, and the local file to upload for it (None for URLs and keys)."""
    name, options = split_part(arg, index, lambda a: Path(a).is_file())
    if name.lower().startswith(("http://", "https://")):
        return {"url": name, **options}, None
    path = Path(name)
    if path.is_file():
        return {"key": None, **options}, path
    if path.is_dir():
        raise CliError(f"part {index} ({name}): is a directory")
    return {"key": name, **options}, None


class _Bars:
    """tqdm bars on stderr, one per phase; nothing at all when stderr is not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def open(self, desc: str, total: float | None, unit: str, **kwargs):
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, **kwargs)

    def to(self, value: float) -> None:
        if self.bar is not None:
            self.bar.update(value - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace, bars: _Bars) -> dict:
    if not args.api:
        raise CliError("--api is required (or set AUDIO_STITCH_API), e.g. --api http://127.0.0.1:8000")
    output, fmt = resolve_output(args.output, args.format)
    options = {**option_values(args), **({"format": fmt} if fmt else {})}
    if args.async_:
        options["async"] = True
    parts = [parse_part(a, i) for i, a in enumerate(args.parts)]
    client = Client(args.api, args.api_key)
    body = []
    for index, (part, path) in enumerate(parts):
        if path is not None:
            bars.open(f"upload {path.name}", path.stat().st_size, "B", unit_scale=True, unit_divisor=1024)
            try:
                part = {**part, "key": client.upload(path, progress=bars.to)}
            except ApiError as exc:
                raise ApiError(exc.status, exc.code, f"part {index} ({path.name}): {exc.message}",
                               field=exc.field, part=index) from None
        body.append(part["key"] if set(part) == {"key"} else part)
    bars.open("stitch", 100, "%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
    result = client.stitch(body, progress=lambda f: bars.to(round(f * 100, 1)), timeout=args.timeout, **options)
    bars.open(f"download {output.name}", result.size_bytes or None, "B", unit_scale=True, unit_divisor=1024)
    client.download(result, output, progress=lambda done, total: bars.to(done))
    bars.close()
    return result.raw


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``audio-stitch remote``; returns the exit status."""
    args = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    bars = _Bars(sys.stderr.isatty())
    try:
        result = run(args, bars)
    except CliError as exc:
        return _fail(bars, str(exc), 2)
    except JobFailed as exc:
        return _fail(bars, f"the job failed: {exc.message}", 2 if exc.code != "transient" else 1)
    except ApiError as exc:
        flag = FIELD_TO_FLAG.get(exc.field or "")
        message = f"{flag}: {exc.message}" if flag else exc.message
        return _fail(bars, f"{message} ({exc.code})", 2 if 400 <= exc.status < 500 else 1)
    except ClientError as exc:
        return _fail(bars, str(exc), 1)
    except KeyboardInterrupt:
        return _fail(bars, "interrupted", 130)
    except OSError as exc:  # reading a part, writing -o: one line, not a traceback
        return _fail(bars, f"{type(exc).__name__}: {exc}", 1)
    print(json.dumps(result, indent=2))
    return 0


def _fail(bars: _Bars, message: str, code: int) -> int:
    bars.close()
    print(f"error: {message}", file=sys.stderr)
    return code
