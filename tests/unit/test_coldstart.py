"""Cold start: importing app.py (what API Gateway's Lambda does first) stays free of audio code.

Checked in a fresh interpreter on sys.modules, not by timing (timings flake on a shared machine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pydub", "yt_dlp", "chalicelib.engine", "chalicelib.sources", "chalicelib.service",
         "chalicelib.bootstrap", "mutagen", "imageio_ffmpeg", "boto3", "moto")


def _import_app(extra_env: dict | None = None, code: str = "") -> dict:
    script = (
        "import json, sys\n"
        "import app\n"
        f"{code}\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'out': globals().get('out')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QUEUE_NAME", "REQUIRE_API_KEY")}
    env.update(extra_env or {})
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_app_pulls_in_no_audio_engine_fetcher_or_aws_sdk():
    modules = set(_import_app()["modules"])
    assert "chalice" in modules and "app" in modules
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []


def test_post_routes_require_an_api_key_only_when_configured():
    code = "out = {p: r['POST'].api_key_required for p, r in app.app.routes.items() if 'POST' in r}"
    assert _import_app(code=code)["out"] == {"/stitch": False, "/uploads": False}
    assert _import_app({"REQUIRE_API_KEY": "true"}, code)["out"] == {"/stitch": True, "/uploads": True}
    assert _import_app({"REQUIRE_API_KEY": "1"}, code)["out"] == {"/stitch": True, "/uploads": True}


def test_sqs_handler_binds_the_configured_queue():
    code = ("from chalice.app import SQSEventConfig\n"
            "out = [(c.name, c.queue, c.batch_size) for c in app.app.event_sources if isinstance(c, SQSEventConfig)]")
    from chalicelib.config import Settings

    assert _import_app(code=code)["out"] == [["process_job", Settings.queue_name, 1]]
    assert _import_app({"QUEUE_NAME": "other.fifo"}, code)["out"] == [["process_job", "other.fifo", 1]]
