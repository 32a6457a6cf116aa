"""`audio-stitch remote` and audio_stitch.client against the real local stack (uploads go to moto's S3)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audio_stitch.client import ApiError, Client, JobFailed, StitchResult, Ticket, UploadSlot
from tests import openapi
from tests.audio import decoded_duration, make_tone
from tests.tty import run_on_tty

from .conftest import http

pytestmark = pytest.mark.usefixtures("show_log_on_failure")

COMMAND = Path(sys.executable).parent / "audio-stitch"


def run_in_pty(cmd: list[str], cwd: Path) -> tuple[int, bytes, bytes]:
    """Run with stderr on a terminal (so progress bars are drawn); returns (status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AUDIO_STITCH_API")}
    return run_on_tty(cmd, cwd=cwd, env=env, columns=120)


@pytest.fixture
def inputs(tmp_path):
    return make_tone(tmp_path / "a.mp3", 1.0), make_tone(tmp_path / "b.wav", 1.5, fmt="wav", freq=660)


@pytest.mark.skipif(not COMMAND.exists(), reason=f"{COMMAND} is missing: run `make install`")
def test_remote_command_from_outside_the_checkout(stack, inputs, tmp_path):
    status, out, err = run_in_pty([str(COMMAND), "remote", "a.mp3", "b.wav", "-o", "out.mp3", "--api", stack.api],
                                  cwd=tmp_path)
    assert status == 0, err.decode(errors="replace")
    assert b"upload a.mp3" in err and b"upload b.wav" in err and b"%|" in err  # tqdm drew its bars
    result = json.loads(out)
    expected = decoded_duration(inputs[0]) + decoded_duration(inputs[1])
    assert result["duration_s"] == pytest.approx(expected, abs=0.03)
    assert decoded_duration(tmp_path / "out.mp3") == pytest.approx(expected, abs=0.06)
    assert result["size_bytes"] == (tmp_path / "out.mp3").stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_client_queued_job_reports_progress_and_downloads(stack, inputs, tmp_path):
    client = Client(stack.api)
    keys = [client.upload(inputs[1]), "samples/intro.mp3"]
    seen = []
    ticket = client.submit(keys, format="wav", gap_ms=100, async_=True)
    assert isinstance(ticket, Ticket) and ticket.status == "queued"
    result = client.wait(ticket.job_id, progress=seen.append)
    assert isinstance(result, StitchResult) and result.format == "wav" and not result.cached
    job = http("GET", f"{stack.api}/jobs/{ticket.job_id}")
    openapi.check("/jobs/{job_id}", "GET", job.status, job.json())  # a worker's result, as documented
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)
    assert [p.index for p in result.parts] == [0, 1]
    assert result.parts[1].start_s == pytest.approx(1.6, abs=0.01)
    out = client.download(result, tmp_path / "o.wav")
    assert decoded_duration(out) == pytest.approx(result.duration_s, abs=0.03)


def test_client_errors_are_typed(stack, tmp_path):
    client = Client(stack.api)
    with pytest.raises(ApiError) as bad:
        client.submit(["samples/intro.mp3"], gap_ms=-5)
    assert (bad.value.status, bad.value.code, bad.value.field) == (400, "bad_request", "gap_ms")
    with pytest.raises(ApiError) as missing:
        client.submit(["samples/intro.mp3", "no/such.mp3"])
    assert (missing.value.code, missing.value.part) == ("part_not_found", 1)
    with pytest.raises(ApiError) as unknown:
        client.job("0" * 64)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    text = tmp_path / "notes.txt"
    text.write_text("not audio\n")
    with pytest.raises(JobFailed) as failed:
        client.stitch([client.upload(text), "samples/intro.mp3"], async_=True, timeout=60)
    assert (failed.value.code, failed.value.part) == ("unsupported_audio", 0)


def test_remote_errors_are_one_line(stack, inputs, tmp_path):
    cmd = [sys.executable, "-m", "audio_stitch", "remote", str(inputs[0]), "--api", stack.api]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cases = [
        (["-o", str(tmp_path / "o.mp3"), "--gap-ms", "-5"], 2, "error: --gap-ms: gap_ms must be between 0 and 60000"),
        (["missing/key.mp3", "-o", str(tmp_path / "o.mp3")], 2, "error: part 1 (missing/key.mp3): no such key"),
        (["-o", str(tmp_path / "o.ogg"), "--format", "wav"], 2, "error: --format wav does not match -o o.ogg"),
        ([f"{inputs[1]}@abc", "-o", str(tmp_path / "o.mp3")], 2, "error: part 1 (b.wav): bad trim/gain suffix"),
    ]
    for extra, code, message in cases:
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env, timeout=60)
        assert (proc.returncode, proc.stdout) == (code, ""), proc.stderr
        assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    down = subprocess.run([*cmd[:-1], "http://127.0.0.1:9", "-o", str(tmp_path / "o.mp3")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert down.returncode == 1 and down.stderr.startswith("error: POST /uploads: cannot reach"), down.stderr
    assert not (tmp_path / "o.mp3").exists()


def test_client_sends_a_presigned_post_form(stack, inputs):
    # The POST form of an upload slot (fields + url), as S3 answers boto3's generate_presigned_post.
    key = "uploads/presigned-post/b.wav"
    form = stack.boto("s3").generate_presigned_post(
        "audio-stitch-input-dev", key, Conditions=[["content-length-range", 1, 50 * 2**20]], ExpiresIn=600)
    slot = UploadSlot.from_dict({"key": key, **form, "expires_at": None})
    assert slot.method == "POST" and slot.fields["key"] == key
    sent = []
    Client(stack.api).send_file(slot, inputs[1], progress=sent.append)
    head = stack.boto("s3").head_object(Bucket="audio-stitch-input-dev", Key=key)
    assert head["ContentLength"] == inputs[1].stat().st_size == sent[-1]
    result = Client(stack.api).stitch([key], format="wav")
    assert result.duration_s == pytest.approx(decoded_duration(inputs[1]), abs=0.01)
