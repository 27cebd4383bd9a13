"""Determinism: two cold `dvc repro` runs of the tiny profile, in two fresh git repos, write
byte-identical artifacts (every file under data/, metrics/ and reports/, and dvc.lock), and a
`dvc repro` right after a run runs no stage and changes no file.

test_orchestration.py already compares a Snakemake run with a DVC run byte for byte; this adds two
cold runs of the same orchestrator and the no-op rerun. Same trimmed profile (no KTO/SFT ablations,
which tests/test_train.py covers); the two runs go side by side, one per core.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT, deltalab, tree_hashes
from test_orchestration import e2e_params, sh

# The two cold runs may take up to their own 900 s limit (121 s quiet).
pytestmark = [pytest.mark.e2e, pytest.mark.determinism, pytest.mark.timeout(1200)]


def cold_repo(dst):
    """A fresh git + DVC repo holding the pipeline and the trimmed tiny params, nothing built."""
    dst.mkdir(parents=True)
    for name in ("Snakefile", ".dvcignore", ".gitignore", "constraints.txt"):
        shutil.copy(ROOT / name, dst / name)
    shutil.copytree(ROOT / "workflow", dst / "workflow")
    shutil.copytree(ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dst / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", dst / "data" / ".gitignore")
    (dst / "params.yaml").write_text(e2e_params())
    deltalab("dvc-yaml", cwd=dst)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], [str(BIN / "dvc"), "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def artifacts(repo) -> dict[str, str]:
    hashes = tree_hashes(repo, "data", "metrics", "reports")
    hashes["dvc.lock"] = hashlib.sha256((repo / "dvc.lock").read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    repos = [cold_repo(tmp_path_factory.mktemp(f"cold{i}") / "repo") for i in (1, 2)]
    procs = [subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=r, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in repos]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return repos


def test_two_cold_runs_write_identical_artifacts(two_runs):
    a, b = (artifacts(r) for r in two_runs)
    assert len(a) > 30 and any(k.startswith("data/checkpoints/") for k in a) and "reports/summary.md" in a
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_repro_right_after_a_run_does_nothing(two_runs):
    repo = two_runs[0]
    before = artifacts(repo)
    out = sh(repo, "dvc", "repro").stdout
    assert "Data and pipelines are up to date" in out and "Running stage" not in out, out[-3000:]
    assert artifacts(repo) == before
