"""Deployment tasks behind `make package`, `make deploy` and `make check`.

  render   write .chalice/resources-<stage>.json and .chalice/policy-<stage>-<function>.json for
           every stage from infra (the single definition); `--check` only reports drift
  package  `chalice package --merge-template` into --out (SAM template + deployment.zip), plus the
           deno layer zip the template refers to
  deploy   provision the stage's resources, publish the deno layer, `chalice deploy`, then set
           WEBHOOK_SECRET, /tmp size, the worker's layer and log retention; ensure an API key +
           usage plan; print the API URL
  check    package the stage, then cfn-lint, parliament, checkov, zizmor, actionlint, the zip's
           contents and Lambda's size limits (offline)

The bare `chalice deploy` / `chalice package` refuse to run (infra/chalice_guard.py); the chalice
runs made here carry the marker that lets them through.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deno_layer  # noqa: E402 - scripts/ is sys.path[0] when this file runs
import vendor_ffmpeg  # noqa: E402

import infra  # noqa: E402
from infra.chalice_guard import DEPLOY_STEP_ENV, WORKER_LAYERS_ENV  # noqa: E402

CHALICE_DIR = ROOT / ".chalice"
VENV_BIN = Path(sys.executable).parent
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
PARLIAMENT_SEVERITIES_ALLOWED = {"LOW", "INFO", "MUTE"}


def stages() -> list[str]:
    return sorted(json.loads((CHALICE_DIR / "config.json").read_text())["stages"])


def stage_config(stage: str) -> dict:
    return json.loads((CHALICE_DIR / "config.json").read_text())["stages"][stage]


def resources_path(stage: str) -> Path:
    return CHALICE_DIR / f"resources-{stage}.json"


def policy_path(stage: str, handler: str = infra.WORKER_FUNCTION) -> Path:
    return CHALICE_DIR / infra.policy_file(stage, handler)


def policy_paths() -> list[Path]:
    return sorted(CHALICE_DIR / infra.policy_file(stage, handler)
                  for stage in stages() for handler in infra.FUNCTIONS)


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def rendered_files() -> dict[Path, str]:
    """Every generated file under .chalice with the content infra renders for it."""
    out = {}
    for stage in stages():
        settings = infra.stage_settings(stage)
        template = infra.cloudformation_template(
            settings,
            log_retention_days=stage_config(stage).get("log_retention_in_days"),
            api_key=settings.require_api_key,
        )
        out[resources_path(stage)] = _dump(template)
        for handler, policy in infra.iam_policies(settings).items():
            out[policy_path(stage, handler)] = _dump(policy)
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


# ---------------------------------------------------------------------------------------------
# package


class CheckFailed(SystemExit):
    pass


def _chalice_env(step: str | None = None) -> dict:
    env = dict(os.environ)
    if step:
        env[DEPLOY_STEP_ENV] = step
    # app.py imports infra's guard under the Chalice CLI; a staged project has no infra/ of its own.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # `chalice package` insists on a region although the template it writes is region-neutral;
    # botocore reads AWS_DEFAULT_REGION only.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION") or "us-east-1")
    return env


def _chalice(*args: str, capture: bool = False, project_dir: Path = ROOT, step: str | None = None,
             ) -> subprocess.CompletedProcess:
    """Run the chalice CLI; ``step`` ("deploy:prod") is the marker the guard in app.py wants."""
    cmd = [str(VENV_BIN / "chalice"), "--project-dir", str(project_dir), *args]
    print("+ chalice " + " ".join(args), flush=True)
    return subprocess.run(cmd, env=_chalice_env(step), text=True, capture_output=capture, cwd=project_dir)


def _staged_project(dest: Path) -> Path:
    """What Chalice packages (app.py, chalicelib/, vendor/, requirements.txt, .chalice/*.json),
    copied to ``dest``. Packaging there keeps Chalice's ~60 MB per-build cache out of the shared
    tree and lets concurrent runs (two test sessions, CI matrix) not race on it."""
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    shutil.copy2(ROOT / "requirements.txt", dest / "requirements.txt")
    shutil.copytree(ROOT / "chalicelib", dest / "chalicelib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / ".chalice").mkdir()
    for path in CHALICE_DIR.glob("*.json"):
        shutil.copy2(path, dest / ".chalice" / path.name)
    # Chalice follows links in vendor/ and zips the target with its mode bits: no 80 MB copy.
    (dest / "vendor").symlink_to(ROOT / "vendor", target_is_directory=True)
    return dest


def package(stage: str, out: Path) -> Path:
    """`chalice package --merge-template` into ``out``; returns the SAM template's path."""
    if render(check_only=True):
        raise CheckFailed("package: generated .chalice files are stale; run `python scripts/deploy.py render`")
    if not (ROOT / "vendor" / "bin" / "ffmpeg").exists():
        raise CheckFailed("package: vendor/bin/ffmpeg missing; run `make vendor`")
    if not deno_layer.LAYER_ZIP.exists():
        raise CheckFailed(f"package: {deno_layer.LAYER_ZIP.relative_to(ROOT)} missing; run `make vendor`")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="audio-stitch-package-") as tmp:
        project = _staged_project(Path(tmp))
        proc = _chalice("package", "--stage", stage, "--merge-template",
                        str(project / ".chalice" / f"resources-{stage}.json"), str(out),
                        capture=True, project_dir=project, step=f"package:{stage}")
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    # Chalice only warns (and carries on) when a dependency has no Lambda-compatible wheel.
    if proc.returncode != 0 or "Could not install dependencies" in proc.stdout + proc.stderr:
        raise CheckFailed(f"package: chalice package failed ({proc.returncode})")
    # The template's DenoLayer ContentUri is this file, relative to sam.json.
    shutil.copy2(deno_layer.LAYER_ZIP, out / Path(infra.cloudformation.DENO_LAYER_ZIP).name)
    template = out / "sam.json"
    print(f"package: {template}, {out / 'deployment.zip'} and {out / 'deno-layer.zip'}")
    return template


# ---------------------------------------------------------------------------------------------
# offline checks (each returns a list of problems; empty = pass)


def check_cfn_lint(template: Path) -> list[str]:
    """cfn-lint on the merged template; errors are problems (warnings are printed only)."""
    proc = subprocess.run([str(VENV_BIN / "cfn-lint"), "--format", "parseable", str(template)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    for line in lines:
        print(f"cfn-lint: {line}")
    # Exit status is a bit mask: 2 errors, 4 warnings, 8 informational, 1 crash.
    if proc.returncode & 1:
        return [f"cfn-lint crashed: {proc.stderr[-2000:]}"]
    return [f"cfn-lint: {ln}" for ln in lines if re.search(r":E\d{4}:", ln)]


def _privileges() -> dict[str, list[str]]:
    from parliament import iam_definition

    return {
        f"{service['prefix']}:{p['privilege']}".lower(): [r["resource_type"] for r in p["resource_types"]]
        for service in iam_definition
        for p in service["privileges"]
    }


def check_policy(text: str, name: str = "policy") -> list[str]:
    """parliament findings above LOW, and "*" resources on actions that support narrower ones."""
    from parliament import analyze_policy_string, enhance_finding

    problems = []
    policy = analyze_policy_string(text, include_community_auditors=True)
    for finding in policy.findings:
        finding = enhance_finding(finding)
        if finding.severity.upper() not in PARLIAMENT_SEVERITIES_ALLOWED:
            problems.append(f"parliament {name}: {finding.severity} {finding.issue} {finding.detail}")
    privileges = _privileges()
    for st in json.loads(text).get("Statement", []):
        resources = st.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if "*" not in resources:
            continue
        for action in actions:
            types = privileges.get(action.lower())
            if types is None or any(types):
                problems.append(f"{name}: {action} on Resource '*' although it supports specific resources")
    return problems


def check_policies() -> list[str]:
    problems = []
    for path in policy_paths():
        problems += check_policy(path.read_text(), path.name)
    return problems


def runtime_requirements() -> dict[str, str]:
    """{distribution name (normalised): version} from requirements.txt."""
    reqs = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            reqs[re.sub(r"[-_.]+", "_", name).lower()] = version
    return reqs


def runtime_modules() -> list[str]:
    """Import names of the runtime requirements (for ours, the normalised distribution name)."""
    return sorted(runtime_requirements())


def _dist_infos(names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        m = re.match(r"^([^/]+)-([^-/]+)\.dist-info/WHEEL$", n)
        if m:
            out[re.sub(r"[-_.]+", "_", m.group(1)).lower()] = m.group(2)
    return out


def check_zip(zip_path: Path) -> list[str]:
    """bin/ffmpeg mode 755 and runnable here, each runtime dependency present as a wheel built for
    Lambda (not from source on this machine), and Lambda's size limits."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        ffmpeg = infos.get("bin/ffmpeg")
        if ffmpeg is None:
            problems.append("zip: bin/ffmpeg missing (run `make vendor`)")
        else:
            mode = (ffmpeg.external_attr >> 16) & 0o777
            if mode != 0o755:
                problems.append(f"zip: bin/ffmpeg has mode {mode:o}, want 755")
            with tempfile.TemporaryDirectory() as tmp:
                exe = Path(zf.extract(ffmpeg, tmp))
                # zipfile drops mode bits on extract; apply the ones stored in the zip.
                os.chmod(exe, mode)
                try:
                    vendor_ffmpeg.verify(exe)
                except SystemExit as exc:
                    problems.append(f"zip: bin/ffmpeg: {str(exc).removeprefix('vendor: ')}")
        if SNDFILE_IN_ZIP not in infos:
            problems.append(f"zip: {SNDFILE_IN_ZIP} missing (run `make vendor`)")
        dists = _dist_infos(list(infos))
        for dist, version in runtime_requirements().items():
            if dist not in dists:
                problems.append(f"zip: dependency {dist}=={version} missing")
            elif dists[dist] != version:
                problems.append(f"zip: dependency {dist} is {dists[dist]}, requirements.txt pins {version}")
        for name in infos:
            if name.endswith(".dist-info/WHEEL"):
                tags = re.findall(r"^Tag: (\S+)$", zf.read(name).decode(), re.M)
                if not any(t.endswith("-any") or "manylinux" in t for t in tags):
                    problems.append(f"zip: {name.split('/')[0]} was built here ({tags}), not a Lambda wheel")
        for module in runtime_modules():
            if not (any(n.startswith(f"{module}/__init__.py") or n == f"{module}.py" for n in infos)
                    or _extension_modules(infos, module)):
                problems.append(f"zip: import package {module} missing")
        unzipped = sum(i.file_size for i in infos.values())
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        problems.append(f"zip: {unzipped / 2**20:.0f} MiB unzipped exceeds Lambda's 250 MiB")
    return problems


# Where `make vendor`'s libsndfile lands in the zip (Chalice puts vendor/ at its root).
SNDFILE_IN_ZIP = f"lib/{vendor_ffmpeg.SNDFILE}"


def _extension_modules(names, module: str) -> list[str]:
    """The zip's top-level compiled modules of ``module`` (``module.*.so``)."""
    return [n for n in names if n.startswith(f"{module}.") and n.endswith(".so") and "/" not in n]


# What Lambda's Python runtime provides besides the standard library.
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")

_IMPORT_PROBE = r"""
import importlib, json, sys
task, runtime, modules = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path[:0] = [task, runtime]
out = {"errors": {}, "outside": []}
for name in modules:
    try:
        module = importlib.import_module(name)
        if not getattr(module, "__file__", "").startswith((task, runtime)):
            out["outside"].append(name)
    except Exception as exc:
        out["errors"][name] = repr(exc)
try:
    from chalicelib.ffmpeg import ffmpeg_binary
    out["ffmpeg"] = ffmpeg_binary()
except Exception as exc:
    out["ffmpeg"] = repr(exc)
try:  # the parallel MP3 encoder: LAME from the zip's lameenc, loaded as the worker loads it
    from chalicelib.engine import lame
    out["lame"] = getattr(lame.library(), "_name", None)
except Exception as exc:
    out["lame"] = repr(exc)
try:  # the in-process MP3 decoder: the zip's lib/libsndfile
    from chalicelib.engine import sndfile
    out["sndfile"] = getattr(sndfile.library(), "_name", None)
except Exception as exc:
    out["sndfile"] = repr(exc)
print(json.dumps(out))
"""


def runtime_python() -> str | None:
    """A Python of ``infra.LAMBDA_RUNTIME``'s version on this machine (PATH, then pyenv's), for
    checks that load the zip's compiled modules, which are built for that version only."""
    version = infra.LAMBDA_RUNTIME.removeprefix("python")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")), reverse=True)
    for exe in filter(None, candidates):
        probe = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
    return None


def check_lambda_imports(zip_path: Path, stage: str = "prod") -> list[str]:
    """Unzip as Lambda does and import the app, every chalicelib module the functions can reach
    and each runtime dependency, with only the zip and the runtime's own packages on the path
    (`python -S`: no site-packages). ffmpeg must resolve to the zip's bin/ffmpeg."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory() as tmp:
        task, runtime = Path(tmp) / "task", Path(tmp) / "runtime"
        runtime.mkdir()
        for name in LAMBDA_RUNTIME_PACKAGES:
            if (site / name).exists():
                (runtime / name).symlink_to(site / name)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(task)
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(task / info.filename, mode)
            names = zf.namelist()
        modules = ["app"] + sorted(
            n[:-3].replace("/", ".").removesuffix(".__init__")
            for n in names
            if n.startswith("chalicelib/") and n.endswith(".py")
        ) + runtime_modules()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT", "PYTHON"))}
        env.update(infra.stage_environment(stage))
        env.setdefault("AWS_REGION", "us-east-1")
        env.pop("FFMPEG_BINARY", None)
        python = runtime_python()
        skipped = []
        if python is None:
            # Only this Python: compiled modules built for the runtime's cannot load in it.
            python = sys.executable
            skipped = [m for m in modules if _extension_modules(names, m)]
            modules = [m for m in modules if m not in skipped]
            print(f"lambda imports: no {infra.LAMBDA_RUNTIME} here; not imported: {', '.join(skipped)}")
        proc = subprocess.run([python, "-S", "-c", _IMPORT_PROBE, str(task), str(runtime), ",".join(modules)],
                              capture_output=True, text=True, cwd=task, env=env, timeout=120)
        if proc.returncode != 0:
            return [f"lambda imports: probe failed: {proc.stderr[-2000:]}"]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        problems = [f"lambda imports: {m}: {err}" for m, err in result["errors"].items()]
        problems += [f"lambda imports: {m} imported from outside the package" for m in result["outside"]]
        if result["ffmpeg"] != str(task / "bin" / "ffmpeg"):
            problems.append(f"lambda imports: ffmpeg resolves to {result['ffmpeg']}, not the package's bin/ffmpeg")
        lame_so = _extension_modules(names, "lameenc")
        if lame_so and "lameenc" not in skipped and result["lame"] != str(task / lame_so[0]):
            problems.append(f"lambda imports: LAME loads from {result['lame']}, not the package's {lame_so[0]}")
        if SNDFILE_IN_ZIP in names and result["sndfile"] != str(task / SNDFILE_IN_ZIP):
            problems.append(f"lambda imports: libsndfile loads from {result['sndfile']}, not the package's lib/")
    return problems


def check_direct_upload(zip_path: Path) -> list[str]:
    """`chalice deploy` uploads the zip in the API call, which Lambda caps at 50 MB."""
    size = Path(zip_path).stat().st_size
    if size <= LAMBDA_DIRECT_UPLOAD_LIMIT:
        return []
    dup = ""
    with zipfile.ZipFile(zip_path) as zf:
        if any(n.startswith("imageio_ffmpeg/binaries/ffmpeg") for n in zf.namelist()):
            dup = (" imageio-ffmpeg's own ffmpeg copy is in the zip next to bin/ffmpeg: move imageio-ffmpeg "
                   "from requirements.txt to requirements-dev.txt (vendor/bin/ffmpeg is the Lambda copy).")
    return [f"zip: {size / 2**20:.1f} MiB exceeds the 50 MiB `chalice deploy` upload limit.{dup}"]


def check_layer(layer_zip: Path, function_zip: Path) -> list[str]:
    """The deno layer: bin/deno 0755, glibc within the runtime's, under 50 MB zipped, and the
    function plus its layer under Lambda's 250 MB unzipped."""
    problems = []
    with zipfile.ZipFile(layer_zip) as zf:
        info = zf.getinfo(deno_layer.LAYER_BINARY) if deno_layer.LAYER_BINARY in zf.namelist() else None
        if info is None:
            return [f"layer: {deno_layer.LAYER_BINARY} missing from {layer_zip.name}"]
        if (info.external_attr >> 16) & 0o777 != 0o755:
            problems.append(f"layer: {info.filename} is not mode 755")
        with zf.open(info) as f:
            needed = deno_layer.glibc_requirement(f.read())
        layer_unzipped = sum(i.file_size for i in zf.infolist())
    if needed > infra.definitions.RUNTIME_GLIBC:
        have = ".".join(map(str, infra.definitions.RUNTIME_GLIBC))
        problems.append(f"layer: deno needs GLIBC_{'.'.join(map(str, needed))}, {infra.LAMBDA_RUNTIME} has {have}")
    if layer_zip.stat().st_size > LAMBDA_DIRECT_UPLOAD_LIMIT:
        problems.append(f"layer: {layer_zip.stat().st_size / 2**20:.1f} MiB zipped exceeds the 50 MiB upload limit")
    with zipfile.ZipFile(function_zip) as zf:
        function_unzipped = sum(i.file_size for i in zf.infolist())
    if function_unzipped + layer_unzipped > LAMBDA_UNZIPPED_LIMIT:
        problems.append(f"worker: {(function_unzipped + layer_unzipped) / 2**20:.0f} MiB unzipped with its layer "
                        "exceeds Lambda's 250 MiB")
    return problems


def sizes(out: Path) -> dict[str, int]:
    """Bytes of each artifact in ``out``, zipped and unzipped (what docs/deploy.md quotes)."""
    result = {}
    for name in ("deployment.zip", "deno-layer.zip"):
        path = Path(out) / name
        with zipfile.ZipFile(path) as zf:
            result[name] = path.stat().st_size
            result[f"{name} unzipped"] = sum(i.file_size for i in zf.infolist())
    return result


def _tool(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = VENV_BIN / name
    if not exe.exists():
        raise CheckFailed(f"check: {exe} missing; run `make install`")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def check_workflows(workflows: Path = ROOT / ".github" / "workflows") -> list[str]:
    """zizmor (offline audits) and actionlint on .github/workflows; every finding is a problem."""
    problems = []
    files = sorted(str(p) for p in Path(workflows).glob("*.y*ml"))
    proc = _tool("zizmor", "--offline", "--format", "plain", "--no-progress", *files)
    if proc.returncode != 0:
        problems.append(f"zizmor: {(proc.stdout + proc.stderr).strip()[-3000:]}")
    proc = _tool("actionlint", "-no-color", *files)
    if proc.returncode != 0:
        problems += [f"actionlint: {ln}" for ln in proc.stdout.splitlines() if re.match(r"^\S+:\d+:\d+:", ln)] or [
            f"actionlint: {(proc.stdout + proc.stderr).strip()[-2000:]}"]
    return problems


CHECKOV = ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov"


def check_checkov(template: Path) -> list[str]:
    """checkov on the merged template with .checkov.yaml (skips explained in docs/deploy.md)."""
    if not CHECKOV.exists():
        return [f"checkov: {CHECKOV.relative_to(ROOT)} missing; `make check` installs it"]
    proc = subprocess.run([str(CHECKOV), "-f", str(template), "--config-file", str(ROOT / ".checkov.yaml"),
                           "-o", "json"], capture_output=True, text=True, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return [f"checkov crashed ({proc.returncode}): {proc.stderr[-2000:]}"]
    failed = report.get("results", {}).get("failed_checks", []) if isinstance(report, dict) else []
    print(f"checkov: {report.get('summary', {})}")
    return [f"checkov: {c['check_id']} {c['check_name']} ({c['resource']})" for c in failed]


def check(stage: str, out: Path) -> int:
    template = package(stage, out)
    out = Path(out).resolve()
    zip_path = out / "deployment.zip"
    problems = (check_cfn_lint(template) + check_policies() + check_zip(zip_path)
                + check_lambda_imports(zip_path, stage) + check_direct_upload(zip_path)
                + check_layer(out / "deno-layer.zip", zip_path) + check_checkov(template) + check_workflows())
    for name, size in sizes(out).items():
        print(f"check: {name}: {size / 2**20:.1f} MiB")
    for p in problems:
        print(f"PROBLEM {p}")
    print(f"check: {len(problems)} problem(s)")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------
# deploy (needs AWS credentials; not runnable offline)


def _deployed(stage: str, chalice_dir: Path = CHALICE_DIR) -> dict:
    """Chalice's record of what it deployed for ``stage``, by resource name."""
    path = chalice_dir / "deployed" / f"{stage}.json"
    return {r["name"]: r for r in json.loads(path.read_text()).get("resources", [])}


# Function settings Chalice's config cannot express (the SAM path gets them from the template).
EPHEMERAL_MB = {infra.WORKER_FUNCTION: infra.WORKER_EPHEMERAL_MB, infra.API_FUNCTION: infra.API_EPHEMERAL_MB}


def publish_layer(stage: str, layer_zip: Path = deno_layer.LAYER_ZIP, *, client=None) -> str:
    """Publish the deno layer unless its latest version has the same content; returns the version ARN."""
    import base64
    import hashlib

    if client is None:
        import boto3

        client = boto3.client("lambda")
    name = f"{infra.APP_NAME}-{stage}-deno"
    data = Path(layer_zip).read_bytes()
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    versions = client.list_layer_versions(LayerName=name).get("LayerVersions", [])
    for version in versions[:1]:
        latest = client.get_layer_version(LayerName=name, VersionNumber=version["Version"])
        if latest.get("Content", {}).get("CodeSha256") == digest:
            return version["LayerVersionArn"]
    published = client.publish_layer_version(
        LayerName=name, Content={"ZipFile": data}, CompatibleRuntimes=[infra.LAMBDA_RUNTIME],
        CompatibleArchitectures=["x86_64"], Description="deno for yt-dlp (bin/deno)")
    print(f"deploy: published {published['LayerVersionArn']}")
    return published["LayerVersionArn"]


def configure_functions(stage: str, secret: str, *, chalice_dir: Path = CHALICE_DIR, client=None) -> list[str]:
    """After `chalice deploy`: add WEBHOOK_SECRET (never in the committed config) to each function's
    environment and size its /tmp. Chalice replaces the environment on every deploy, so this runs
    every time. Returns the names of the functions updated."""
    if client is None:
        import boto3

        client = boto3.client("lambda")
    updated = []
    for name, resource in _deployed(stage, chalice_dir).items():
        if resource.get("resource_type") != "lambda_function":
            continue
        arn = resource["lambda_arn"]
        client.get_waiter("function_updated_v2").wait(FunctionName=arn)
        current = client.get_function_configuration(FunctionName=arn)
        env = current.get("Environment", {}).get("Variables", {})
        kwargs = {"FunctionName": arn, "EphemeralStorage": {"Size": EPHEMERAL_MB.get(name, infra.API_EPHEMERAL_MB)}}
        if secret:
            kwargs["Environment"] = {"Variables": {**env, "WEBHOOK_SECRET": secret}}
        client.update_function_configuration(**kwargs)
        updated.append(current["FunctionName"])
        print(f"deploy: configured {current['FunctionName']} (/tmp {kwargs['EphemeralStorage']['Size']} MB"
              f"{', WEBHOOK_SECRET' if secret else ''})")
    return updated


def set_log_retention(stage: str, days: int | None, *, client=None) -> list[str]:
    """Retention on the log groups the functions really write to. On this path Chalice sets it on
    /aws/lambda/<app>-<stage>-api_handler, while the REST function is named <app>-<stage>."""
    if not days:
        return []
    if client is None:
        import boto3

        client = boto3.client("logs")
    groups = [f"/aws/lambda/{infra.function_name(stage, h)}" for h in infra.FUNCTIONS]
    for group in groups:
        try:
            client.create_log_group(logGroupName=group)
        except client.exceptions.ResourceAlreadyExistsException:
            pass
        client.put_retention_policy(logGroupName=group, retentionInDays=days)
    print(f"deploy: log retention {days} days on {', '.join(groups)}")
    return groups


def ensure_api_key(stage: str, *, chalice_dir: Path = CHALICE_DIR, client=None) -> str | None:
    """Chalice marks routes api_key_required but creates no key or usage plan; without them every
    call is refused with 403. Creates (once) a usage plan and key named after the stage and
    returns the key's id."""
    rest = _deployed(stage, chalice_dir).get("rest_api")
    if not rest:
        return None
    api_id, api_stage = rest["rest_api_id"], stage_config(stage).get("api_gateway_stage", "api")
    if client is None:
        import boto3

        client = boto3.client("apigateway")
    apigw = client
    name = f"{infra.APP_NAME}-{stage}"
    plans = [p for p in apigw.get_usage_plans(limit=500)["items"] if p["name"] == name]
    plan = plans[0] if plans else apigw.create_usage_plan(
        name=name, apiStages=[{"apiId": api_id, "stage": api_stage}],
        throttle={"rateLimit": float(infra.definitions.API_RATE_LIMIT), "burstLimit": infra.definitions.API_BURST_LIMIT},
    )
    if not any(s["apiId"] == api_id and s["stage"] == api_stage for s in plan.get("apiStages", [])):
        apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=[
            {"op": "add", "path": "/apiStages", "value": f"{api_id}:{api_stage}"}])
    keys = apigw.get_api_keys(nameQuery=name, limit=500)["items"]
    key = next((k for k in keys if k["name"] == name), None) or apigw.create_api_key(name=name, enabled=True)
    attached = {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan["id"], limit=500)["items"]}
    if key["id"] not in attached:
        apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    return key["id"]


def deploy(stage: str) -> int:
    """provision -> deno layer -> chalice deploy -> secret, /tmp, layer, log retention -> API key -> URL."""
    try:
        region = infra.resolve_region()  # AWS_REGION, AWS_DEFAULT_REGION, then ~/.aws/config
    except infra.ProvisionError as exc:
        raise CheckFailed(f"deploy: {exc} (see docs/TROUBLESHOOTING.md)") from None
    # botocore (chalice deploy, the boto3 clients below) reads only AWS_DEFAULT_REGION, provision
    # AWS_REGION first: pin both, or an exported AWS_REGION would split the stack across regions.
    os.environ["AWS_REGION"] = os.environ["AWS_DEFAULT_REGION"] = region
    if render(check_only=True):
        raise CheckFailed("deploy: generated .chalice files are stale; run `python scripts/deploy.py render`")
    sender = infra.stage_settings(stage).sender_email
    if sender.lower().endswith(("@example.com", "@example.org", "@example.net")):
        # SES would wait forever for a verification click nobody can make.
        raise CheckFailed(f"deploy: SENDER_EMAIL for stage {stage} is {sender}; set an address you own in "
                          ".chalice/config.json, then `python scripts/deploy.py render` (docs/deploy.md)")
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret:
        print("deploy: WARNING: WEBHOOK_SECRET is not set; the stage refuses requests with webhook_url "
              "(docs/deploy.md, Secrets)")
    if infra.main(["--stage", stage]) != 0:
        return 1
    # Chalice attaches it itself (through the guard): it resets layers on every update.
    os.environ[WORKER_LAYERS_ENV] = publish_layer(stage)
    if _chalice("deploy", "--stage", stage, step=f"deploy:{stage}").returncode != 0:
        return 1
    configure_functions(stage, secret)
    set_log_retention(stage, stage_config(stage).get("log_retention_in_days"))
    if infra.stage_settings(stage).require_api_key:
        key_id = ensure_api_key(stage)
        print(f"deploy: API key id {key_id}; value: aws apigateway get-api-key --api-key {key_id} "
              "--include-value --query value --output text")
    url = _chalice("url", "--stage", stage, capture=True).stdout.strip()
    print(f"API URL: {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render")
    p.add_argument("--check", action="store_true")
    for name in ("package", "check", "deploy"):
        p = sub.add_parser(name)
        p.add_argument("--stage", required=True)
        if name != "deploy":
            p.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "render":
        return render(args.check)
    if args.command == "deploy":
        return deploy(args.stage)
    out = args.out or ROOT / "build" / args.stage
    if args.command == "package":
        package(args.stage, out)
        return 0
    return check(args.stage, out)


if __name__ == "__main__":
    sys.exit(main())
