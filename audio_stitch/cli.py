"""`audio-stitch COMMAND ...` (or `python -m audio_stitch COMMAND ...`): the command line.

Commands:
  stitch     join local audio files into one (prints the result as JSON)
  remote     the same through the API (deployed or `make run`): uploads local files, polls, downloads
  run        the local stack: moto server + chalice local + SQS worker
  provision  create/update a stage's AWS resources (idempotent)

`audio-stitch COMMAND --help` describes each.
"""
from __future__ import annotations

import gc
import sys

COMMANDS = {
    "stitch": ("audio_stitch.stitch", "main"),
    "remote": ("audio_stitch.remote", "main"),
    "run": ("devstack.stack", "main"),
    "provision": ("infra", "main"),
}


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None: ``sys.argv``, and the process ends on return) or, given
    ``argv``, one command run in this process."""
    whole_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, func = COMMANDS[argv[0]]
    # Imported on demand: `stitch` should not pay for moto, `run` not for the engine, `remote` for neither.
    module = __import__(module_name, fromlist=[func])
    code = getattr(module, func)(argv[1:]) or 0
    if whole_process:
        # The interpreter exits next, and its last garbage collection walks every object still
        # alive (modules, functions, classes): about 4 ms, a twentieth of `cat`'s time for the
        # copy join target. Frozen objects are skipped; reference counting and the OS free them.
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
