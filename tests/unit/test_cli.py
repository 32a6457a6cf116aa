"""The stitch CLI: JSON on stdout, one-line errors naming the option or part, a bar only on a tty."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audio_stitch.stitch import main, parse_part
from tests.audio import decoded_duration, make_tone
from tests.tty import run_on_tty

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "notes.txt").write_text("not audio\n")
    return {"a": make_tone(d / "a.mp3", 1.0), "b": make_tone(d / "b.wav", 1.5, rate=22050, channels=1),
            "txt": d / "notes.txt"}


def test_stitch_prints_result_json(files, tmp_path, capsys):
    out = tmp_path / "o.ogg"
    code = main([str(files["a"]), f"{files['b']}@0.5-1.25", "-o", str(out), "--format", "ogg",
                 "--gap-ms", "250", "--sample-rate", "22050"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    result = json.loads(captured.out)
    assert result["mode"] == "encode" and result["format"] == "ogg"
    assert result["parts"][1]["start_s"] == pytest.approx(1.25, abs=0.01)
    assert result["duration_s"] == pytest.approx(2.0, abs=0.02)
    assert decoded_duration(out) == pytest.approx(2.0, abs=0.03)
    assert result["size_bytes"] == out.stat().st_size


@pytest.mark.parametrize("join, expected", [("copy", "copy"), ("exact", "exact"), (None, "exact")])
def test_join_policy_from_cli(files, tmp_path, capsys, join, expected):
    # auto copies only parts of about 4.5 s and longer, so these 1 s parts are joined exactly.
    out = tmp_path / "o.mp3"
    assert main([str(files["a"]), str(files["a"]), "-o", str(out), *(["--join", join] if join else [])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["join"] == expected
    if expected == "exact":
        assert result["added_silence_ms"] == 0
        assert decoded_duration(out) == pytest.approx(2 * decoded_duration(files["a"]), abs=0.002)
    else:
        assert result["added_silence_ms"] > 0


def test_bad_join_policy_is_refused(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(files["a"]), "-o", str(tmp_path / "o.mp3"), "--join", "fast"])
    assert exit_.value.code == 2 and "--join: invalid choice: 'fast'" in capsys.readouterr().err


def test_part_suffix_syntax(tmp_path):
    p = parse_part("x/a.mp3@1.5-3@-6dB", 0)
    assert (p.path, p.options.start_s, p.options.end_s, p.options.gain_db) == (Path("x/a.mp3"), 1.5, 3.0, -6.0)
    assert parse_part("a.mp3@-2", 0).options.end_s == 2.0
    assert parse_part("a.mp3@@+2.5dB", 0).options.gain_db == 2.5
    weird = tmp_path / "take@1-2"  # a real file with such a name is taken as it is
    weird.write_bytes(b"x")
    assert parse_part(str(weird), 0).path == weird and parse_part(str(weird), 0).options.is_identity


@pytest.mark.parametrize("extra, message", [
    (["--gap-ms", "-5"], "error: --gap-ms: gap_ms must be between 0 and 60000, got -5"),
    (["--format", "aiff"], "error: --format: format must be one of"),
    (["--gap-ms", "100", "--crossfade-ms", "100"], "error: --crossfade-ms: crossfade_ms and gap_ms"),
    (["--crossfade-ms", "1200"], "error: crossfade_ms (1200) is longer than part 0 (a.mp3) (1.0 s)"),
])
def test_bad_options_exit_2_with_the_option_named(files, tmp_path, capsys, extra, message):
    code = main([str(files["a"]), str(files["a"]), "-o", str(tmp_path / "o.mp3"), *extra])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_bad_part_exit_2(files, tmp_path, capsys):
    assert main([str(files["a"]), str(files["txt"]), "-o", str(tmp_path / "o.mp3")]) == 2
    assert capsys.readouterr().err == "error: part 1 (notes.txt): no audio stream\n"
    assert main([str(tmp_path / "nope.mp3"), "-o", str(tmp_path / "o.mp3")]) == 2
    assert capsys.readouterr().err == "error: part 0 (nope.mp3): file not found\n"
    assert main([f"{files['a']}@2-1", "-o", str(tmp_path / "o.mp3")]) == 2
    assert "end_s (1) must be after start_s (2)" in capsys.readouterr().err


def run_cli(args, tty: bool):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "audio_stitch", "stitch", *args]
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT)
        return proc.returncode, proc.stdout, proc.stderr
    return run_on_tty(cmd, cwd=ROOT, env=env)


def test_progress_bar_only_on_a_tty(files, tmp_path):
    args = [str(files["b"]), str(files["b"]), "--gap-ms", "50", "--format", "wav"]
    code, out, err = run_cli([*args, "-o", str(tmp_path / "quiet.wav")], tty=False)
    assert code == 0 and err == b"" and json.loads(out)["mode"] == "encode"
    code, out, err = run_cli([*args, "-o", str(tmp_path / "bar.wav")], tty=True)
    assert code == 0 and json.loads(out)["mode"] == "encode"
    assert b"%|" in err  # tqdm drew a bar on the terminal


def test_error_has_no_traceback(files, tmp_path):
    code, out, err = run_cli([str(files["txt"]), "-o", str(tmp_path / "o.mp3")], tty=False)
    assert code == 2 and out == b""
    assert err == b"error: part 0 (notes.txt): no audio stream\n"


def test_format_follows_the_output_extension(files, tmp_path, capsys):
    out = tmp_path / "o.ogg"
    assert main([str(files["a"]), "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "ogg"
    assert out.read_bytes()[:4] == b"OggS"  # not MP3 bytes under an .ogg name


@pytest.mark.parametrize("output, extra, message", [
    ("o.ogg", ["--format", "mp3"], "error: --format mp3 does not match -o o.ogg (.ogg is ogg)"),
    ("o.xyz", [], "error: -o: cannot tell the format from '.xyz'"),
])
def test_output_name_and_format_must_agree(files, tmp_path, capsys, output, extra, message):
    assert main([str(files["a"]), "-o", str(tmp_path / output), *extra]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_is_fine_with_an_explicit_format(files, tmp_path, capsys):
    out = tmp_path / "o.audio"
    assert main([str(files["a"]), "-o", str(out), "--format", "wav"]) == 0
    assert out.read_bytes()[:4] == b"RIFF"


def test_output_that_is_a_directory_is_a_clear_error(files, tmp_path, capsys):
    assert main([str(files["a"]), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: -o: {tmp_path} is a directory") and "Traceback" not in err


def test_bad_trim_suffix_is_named(files, tmp_path, capsys):
    assert main([f"{files['a']}@abc", "-o", str(tmp_path / "o.mp3")]) == 2
    assert capsys.readouterr().err.startswith("error: part 0 (a.mp3): bad trim/gain suffix '@abc'")


@pytest.mark.parametrize("argv", [
    ["a.mp3", "b.mp3", "-o", "o.mp3"],
    ["a.mp3", "-o", "o.mp3", "b.mp3", "--join", "copy"],
    ["--join", "exact", "a.mp3", "--output", "o.wav", "--format", "wav"],
    ["a.mp3@1-2@-3dB", "-o", "o.mp3", "--join", "auto"],
])
def test_quick_parse_reads_what_argparse_reads(argv):
    from audio_stitch.args import option_values
    from audio_stitch.stitch import _parser, _quick_args

    quick, full = _quick_args(argv), _parser().parse_intermixed_args(argv)
    assert quick is not None
    assert (quick.parts, quick.output, quick.format, quick.join) == (full.parts, full.output, full.format, full.join)
    assert option_values(quick) == option_values(full)


@pytest.mark.parametrize("argv", [
    ["a.mp3", "-o", "o.mp3", "--gap-ms", "5"],  # a flag it does not know
    ["a.mp3", "-o"], ["a.mp3"], ["-o", "o.mp3"], [],  # argparse words what is missing
    ["a.mp3", "-o", "o.mp3", "-o", "p.mp3"], ["a.mp3", "--output=o.mp3"], ["a.mp3", "-oo.mp3"],
    ["a.mp3", "-o", "o.mp3", "--join", "fast"], ["a.mp3", "-o", "o.mp3", "--jo", "copy"],
    ["-h"], ["a.mp3", "-o", "o.mp3", "--", "-b.mp3"], ["a.mp3", "-o", "-x.mp3"], ["", "-o", "o.mp3"],
])
def test_anything_else_is_left_to_argparse(argv):
    from audio_stitch.stitch import _quick_args

    assert _quick_args(argv) is None


def test_copy_join_cli_imports_only_what_copying_needs(files, tmp_path):
    """`audio-stitch stitch A B -o OUT --join copy` starts next to `cat` in the copy-join target:
    argparse, dataclasses (inspect, ast, dis), typing, subprocess and the exact path's modules
    are not imported (each costs milliseconds of a budget of a few dozen)."""
    out = tmp_path / "o.mp3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "audio_stitch", "stitch", str(files["a"]),
                           str(files["a"]), "-o", str(out), "--join", "copy"], capture_output=True, env=env, cwd=ROOT,
                          text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["join"] == "copy"
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "chalicelib.engine.mp3.walk" in imported  # the listing is real
    heavy = {"argparse", "dataclasses", "inspect", "typing", "subprocess", "tqdm", "mutagen", "numpy",
             "chalicelib.engine.encode", "chalicelib.engine.graph", "chalicelib.engine.segment", "chalicelib.ffmpeg"}
    assert sorted(imported & heavy) == []


def test_cli_run_in_process_does_not_freeze_the_heap(files, tmp_path, capsys):
    """Only the program freezes the heap before it exits (gc.freeze); a caller's process goes on."""
    import gc

    from audio_stitch import cli

    before = gc.get_freeze_count()
    assert cli.main(["stitch", str(files["a"]), str(files["a"]), "-o", str(tmp_path / "o.mp3"), "--join", "copy"]) == 0
    assert json.loads(capsys.readouterr().out)["join"] == "copy"
    assert gc.get_freeze_count() == before


def test_a_failing_write_is_one_line_and_leaves_nothing(files, tmp_path):
    """A write that fails during a copy join (here: the file-size limit, as a full disk would)
    ends the CLI with one line and status 1, and neither the output nor its temp file is left."""
    import resource

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    parts = [str(files["a"])] * 3  # about 48 KB of frames

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    # -B: under the limit the interpreter would write truncated .pyc files into the checkout.
    proc = subprocess.run([sys.executable, "-B", "-m", "audio_stitch", "stitch", *parts, "-o", str(out_dir / "o.mp3"),
                           "--join", "copy"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=small_files)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "error: OSError: [Errno 27] File too large\n"
    assert list(out_dir.iterdir()) == []
