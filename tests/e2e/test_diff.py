"""`deltalab diff` on two commits of a temporary DVC repo where a selection parameter changed, and on
the uncommitted workspace."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT, TINY, deltalab

pytestmark = pytest.mark.e2e


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """Commit 1: the tiny study; commit 2: ablation `top` keeps 100% instead of 50% of its pairs;
    workspace (uncommitted): back to 50%, reproduced, so data/pairs/top.parquet on disk is commit 1's."""
    repo = tmp_path_factory.mktemp("diff") / "repo"
    repo.mkdir()
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", repo / "data" / ".gitignore")
    shutil.copy(TINY, repo / "params.yaml")
    deltalab("dvc-yaml", cwd=repo)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)
    # Up to the pairs only: the diff is about pair sets (training is covered by test_orchestration).
    subprocess.run([str(BIN / "dvc"), "repro", "-q", "--glob", "pairs@*"], cwd=repo, check=True, capture_output=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("method: top_k, fraction: 0.5,", "method: top_k, fraction: 1.0,"))
    # Up to the pairs only: the diff is about pair sets (training is covered by test_orchestration).
    subprocess.run([str(BIN / "dvc"), "repro", "-q", "--glob", "pairs@*"], cwd=repo, check=True, capture_output=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v2: keep all pairs of top")
    params.write_text(params.read_text().replace("method: top_k, fraction: 1.0,", "method: top_k, fraction: 0.5,"))
    subprocess.run([str(BIN / "dvc"), "repro", "-q", "pairs@top"], cwd=repo, check=True, capture_output=True)
    return repo


def test_diff_reports_added_rows_and_delta_shift(versioned):
    proc = deltalab("diff", "HEAD~1", "HEAD", "data/pairs/top.parquet", "--json", cwd=versioned)
    report = json.loads(proc.stdout)
    assert report["id"] == "pair_id"
    assert report["removed"] == 0 and report["changed"] == 0
    assert report["rows"]["b"] == report["rows"]["a"] + report["added"] and report["added"] > 0
    assert set(report["deltas"]) >= {"delta_aggregate", "delta_step_coherence"}
    assert sum(report["generators"]["b"].values()) == report["rows"]["b"]
    text = deltalab("diff", "HEAD~1", "HEAD", "data/pairs/top.parquet", cwd=versioned).stdout
    assert f"{report['added']} added, 0 removed, 0 changed" in text and "| delta_aggregate |" in text


def test_diff_of_an_unchanged_file(versioned):
    report = json.loads(deltalab("diff", "HEAD~1", "HEAD", "data/traces/weak.parquet", "--json", cwd=versioned).stdout)
    assert (report["added"], report["removed"], report["changed"]) == (0, 0, 0) and report["id"] == "trace_id"


def test_one_revision_is_compared_with_the_workspace(versioned):
    committed = json.loads(deltalab("diff", "HEAD~1", "HEAD", "data/pairs/top.parquet", "--json", cwd=versioned).stdout)
    # As `git diff`: one revision -> that revision vs the workspace; none -> HEAD vs the workspace.
    for args in (["HEAD"], [], ["HEAD", "workspace"]):
        report = json.loads(deltalab("diff", *args, "data/pairs/top.parquet", "--json", cwd=versioned).stdout)
        assert report["rows"] == {"a": committed["rows"]["b"], "b": committed["rows"]["a"]}
        assert (report["added"], report["removed"], report["changed"]) == (0, committed["added"], 0)
    assert "## data/pairs/top.parquet: HEAD → workspace" in deltalab("diff", "HEAD", "data/pairs/top.parquet",
                                                                   cwd=versioned).stdout


def test_workspace_by_name(versioned):
    same = json.loads(deltalab("diff", "HEAD~1", "workspace", "data/pairs/top.parquet", "--json", cwd=versioned).stdout)
    assert (same["added"], same["removed"], same["changed"]) == (0, 0, 0)
    back = json.loads(deltalab("diff", "workspace", "HEAD", "data/pairs/top.parquet", "--json", cwd=versioned).stdout)
    assert back["added"] > 0 and back["removed"] == 0
    # `--` ends the options, as in `git diff REV -- PATH`.
    after_dashes = json.loads(deltalab("diff", "--json", "HEAD~1", "--", "data/pairs/top.parquet", cwd=versioned).stdout)
    assert after_dashes == same


@pytest.mark.parametrize(
    "args, words",
    [(["nope", "HEAD", "data/pairs/top.parquet"], "unknown Git revision 'nope'"),
     (["nope", "data/pairs/top.parquet"], "unknown Git revision 'nope'"),
     (["HEAD~1", "HEAD", "data/pairs/ghost.parquet"], "data/pairs/ghost.parquet@HEAD~1"),
     (["workspace", "HEAD", "data/pairs/ghost.parquet"], "data/pairs/ghost.parquet@workspace: not found"),
     (["workspace", "workspace", "params.yaml"], "params.yaml@workspace: not a parquet file"),
     (["HEAD~1", "HEAD", "workspace", "data/pairs/top.parquet"], "[REV_A [REV_B]] PATH, got 4 arguments")],
)
def test_diff_errors_are_one_line(versioned, args, words):
    proc = deltalab("diff", *args, cwd=versioned, check=False)
    assert proc.returncode == 2 and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
