"""The CI workflow: zizmor and actionlint clean (as `make check` runs them), every action pinned to
a commit, and the deploy job using the artifact the test job built."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import deploy  # noqa: E402

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflows_pass_zizmor_and_actionlint():
    assert deploy.check_workflows() == []


def test_the_linters_report_an_unpinned_cached_workflow(tmp_path):
    # Control: the check above can fail.
    (tmp_path / "bad.yml").write_text(
        "on: [push]\njobs:\n  t:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - run: echo ${{ github.event.head_commit.message }}\n"
    )
    problems = "\n".join(deploy.check_workflows(tmp_path))
    assert "unpinned-uses" in problems and "template-injection" in problems


def test_every_action_is_pinned_to_a_commit_with_its_tag_noted():
    uses = re.findall(r"^\s*-?\s*uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.M)
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), ref
        assert re.search(r"# v\d+\.\d+\.\d+", comment), ref


def test_deploy_uses_the_tested_artifact_and_caches_nothing():
    text = WORKFLOW.read_text()
    deploy_job = text[text.index("\n  deploy:"):]
    assert "actions/checkout" not in deploy_job and "make " not in deploy_job  # no rebuild
    assert "download-artifact" in deploy_job and "sha256sum --check" in deploy_job
    assert "cache:" not in text
