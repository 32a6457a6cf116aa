"""The worker's deno layer, proved offline: the binary's glibc needs against the runtime's, that
it runs the way Lambda would start it, and that yt-dlp finds it and the ejs solver scripts."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import deno_layer  # noqa: E402
import deploy  # noqa: E402

import infra  # noqa: E402
from infra import definitions  # noqa: E402


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """The layer zip `make vendor` builds, unpacked as Lambda does (under /opt: here a tmp dir)."""
    zip_path = deno_layer.build()
    opt = tmp_path_factory.mktemp("opt")
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(deno_layer.LAYER_BINARY)
        zf.extract(info, opt)
        os.chmod(opt / info.filename, (info.external_attr >> 16) & 0o777)
    return zip_path, opt


def test_layer_holds_only_an_executable_bin_deno(layer):
    zip_path, opt = layer
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == ["bin/deno"]
    assert os.access(opt / "bin" / "deno", os.X_OK)


def test_deno_needs_no_newer_glibc_than_the_pinned_runtime(layer):
    _, opt = layer
    needed = deno_layer.glibc_requirement(opt / "bin" / "deno")
    assert needed == (2, 27)  # manylinux_2_27, as the wheel is tagged
    assert needed <= definitions.RUNTIME_GLIBC
    # Amazon Linux 2 (python3.11 and older) has glibc 2.26: that is why the runtime is pinned.
    assert needed > (2, 26)
    assert infra.LAMBDA_RUNTIME in ("python3.12", "python3.13")


def test_glibc_reader_agrees_with_binutils(layer):
    objdump = Path("/usr/bin/objdump")
    if not objdump.exists():
        pytest.skip("no objdump to compare with")
    _, opt = layer
    out = subprocess.run([str(objdump), "-T", str(opt / "bin" / "deno")], capture_output=True, text=True).stdout
    import re

    versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", out)}
    assert max(versions) == deno_layer.glibc_requirement(opt / "bin" / "deno")


def test_layer_check_reports_a_binary_too_new_for_the_runtime(layer, monkeypatch, tmp_path):
    zip_path, _ = layer
    function = tmp_path / "f.zip"
    with zipfile.ZipFile(function, "w") as zf:
        zf.writestr("app.py", "")
    assert deploy.check_layer(zip_path, function) == []
    monkeypatch.setattr(definitions, "RUNTIME_GLIBC", (2, 26))
    assert any("needs GLIBC_2.27" in p for p in deploy.check_layer(zip_path, function))


def _lambda_like_env(opt: Path, home: Path) -> dict:
    # Lambda: /opt/bin on PATH, a read-only home, only /tmp writable.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DENO", "XDG"))}
    env.update(PATH=f"{opt / 'bin'}:/usr/bin:/bin", HOME=str(home))
    return env


def test_deno_runs_with_a_read_only_home(layer, tmp_path):
    _, opt = layer
    home = tmp_path / "home"
    home.mkdir(mode=0o555)
    proc = subprocess.run(["deno", "eval", "console.log(6 * 7)"], env=_lambda_like_env(opt, home),
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "42"), proc.stderr


def test_yt_dlp_finds_the_layer_runtime_and_the_ejs_scripts(layer, tmp_path):
    _, opt = layer
    # As on Lambda: the base interpreter (its scripts dir has no deno, unlike this venv's), no
    # site-packages, and only the two packages the zip carries on the path.
    import sysconfig

    site = tmp_path / "task"
    site.mkdir()
    for name in ("yt_dlp", "yt_dlp_ejs"):
        (site / name).symlink_to(Path(sysconfig.get_paths()["purelib"]) / name)
    probe = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import json, yt_dlp\n"
        "from yt_dlp.dependencies import yt_dlp_ejs\n"
        "ydl = yt_dlp.YoutubeDL({'quiet': True})\n"
        "rt = ydl._js_runtimes['deno']\n"
        "info = rt.info\n"
        "import shutil\n"
        "print(json.dumps({'path': info and shutil.which(info.path), 'version': info and info.version,"
        " 'supported': info and info.supported, 'ejs': bool(yt_dlp_ejs)}))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run([sys._base_executable, "-S", "-c", probe], env=_lambda_like_env(opt, home), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["path"] == str(opt / "bin" / "deno")
    assert found["version"].startswith("2.9") and found["supported"] is True
    assert found["ejs"] is True
