"""Shared artifacts through a DVC remote (a local directory here; S3, GCS and SSH work the same way).

One clone runs the pipeline with `dvc repro` up to the pairs (training and evaluation are the same
DVC mechanics, and slow) and pushes to the remote. In a fresh `git clone`:
- `dvc pull` restores every artifact byte for byte and `dvc status` is clean;
- Snakemake would still rerun jobs (pulled files get new mtimes), until `deltalab sync`;
- `deltalab sync` refuses data that does not match dvc.lock (one line, exit 2);
- `deltalab sync --pull` does the pull too.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, TINY, deltalab, tree_hashes

pytestmark = pytest.mark.e2e

ABLATIONS = list(yaml.safe_load(TINY.read_text())["ablations"])
# The same subset for every tool: dvc stages to reproduce, and the files they write for Snakemake
# (rule `all` without the report).
STAGES = ["generator_metrics", *(f"pairs@{a}" for a in ABLATIONS)]
TARGETS = ["metrics/generators.json", "metrics/judge.json", *(f"data/pairs/{a}.parquet" for a in ABLATIONS)]


def sh(repo, *args, check=True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / args[0]) if (BIN / args[0]).exists() else args[0], *args[1:]]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def snakemake_jobs(repo) -> dict[str, int]:
    out = sh(repo, "snakemake", "-n", "-c1", *TARGETS).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def dvc_clean(repo) -> bool:
    return "Data and pipelines are up to date" in sh(repo, "dvc", "status", "--with-deps", *STAGES).stdout


def lock_outs(repo) -> list[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return sorted(out["path"] for stage in lock.values() for out in stage.get("outs", []))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """(source repo after `dvc repro` + `dvc push`, a fresh clone after `dvc pull`, the remote URL)."""
    base = tmp_path_factory.mktemp("remote")
    src, remote = base / "src", base / "store"
    src.mkdir()
    for name in ("Snakefile", ".dvcignore", ".gitignore", "constraints.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "workflow", src / "workflow")
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (src / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", src / "data" / ".gitignore")
    shutil.copy(TINY, src / "params.yaml")
    deltalab("dvc-yaml", cwd=src)
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                 ["git", "config", "user.name", "t"], ["dvc", "init", "-q"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        sh(src, *args)
    sh(src, "dvc", "repro", *STAGES)
    sh(src, "dvc", "remote", "add", "-d", "store", str(remote))
    sh(src, "dvc", "push")
    # dvc.lock, the remote in .dvc/config, and the uncached metrics travel through git.
    sh(src, "git", "add", "-A")
    sh(src, "git", "commit", "-qm", "tiny study up to the pairs")
    clone = base / "clone"
    sh(base, "git", "clone", "-q", str(src), str(clone))
    sh(clone, "dvc", "pull", "--with-deps", *STAGES)  # (the stages not run have nothing to pull)
    return src, clone, remote


def test_pull_restores_every_artifact_byte_for_byte(shared):
    src, clone, remote = shared
    assert any(path.is_file() for path in remote.rglob("*"))  # the clone pulled from here
    a, b = tree_hashes(src, "data", "metrics"), tree_hashes(clone, "data", "metrics")
    assert a == b
    outs = lock_outs(clone)
    # every output dvc.lock records is there (a directory output by its files)
    for out in outs:
        assert out in b or any(path.startswith(out + "/") for path in b), out
    for kind in ("models/weak", "models/strong", "traces", "judgments", "pairs"):
        assert any(out.startswith(f"data/{kind}") for out in outs), kind
    assert {f"data/pairs/{a}.parquet" for a in ABLATIONS} <= set(b)
    assert "data/models/weak/model.safetensors" in b and "data/judgments/strong.parquet" in b
    assert dvc_clean(clone)


def test_without_sync_snakemake_would_rerun_pulled_jobs(shared):
    _, clone, _ = shared
    jobs = snakemake_jobs(clone)
    # Files from git are older than the pulled data, so at least these rerun; micro_models and
    # generate too when the pull happened to write their inputs after their outputs.
    assert {"generator_metrics": 1, "judge": 1, "pairs": len(ABLATIONS)}.items() <= jobs.items()


def test_sync_makes_snakemake_agree_without_changing_data(shared):
    src, clone, _ = shared
    # (--configfile: the params file Snakemake runs with; here the default one, named explicitly)
    out = deltalab("sync", "--configfile", "params.yaml", *TARGETS, cwd=clone).stdout.strip()
    assert len(out.splitlines()) == 1 and out.endswith("nothing to be done")
    assert int(re.search(r"marked (\d+) job", out)[1]) >= 2 + len(ABLATIONS)
    assert snakemake_jobs(clone) == {}
    assert dvc_clean(clone)
    assert tree_hashes(clone, "data", "metrics") == tree_hashes(src, "data", "metrics")


def test_sync_refuses_data_that_does_not_match_the_lock(shared):
    _, clone, _ = shared
    traces = clone / "data" / "traces" / "weak.parquet"
    good = traces.read_bytes()
    traces.write_bytes(good + b"edited")
    try:
        proc = deltalab("sync", *TARGETS, cwd=clone, check=False)
    finally:
        traces.write_bytes(good)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: dvc status: ")
    assert "generate@weak (data/traces/weak.parquet modified)" in proc.stderr


def test_sync_pull_in_a_fresh_clone(shared, tmp_path):
    src, _, _ = shared
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(src), str(clone))
    proc = deltalab("sync", *TARGETS, cwd=clone, check=False)  # nothing pulled yet
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "do not match dvc.lock" in proc.stderr and "pairs@delta" in proc.stderr
    deltalab("sync", "--pull", *TARGETS, cwd=clone)
    assert snakemake_jobs(clone) == {}
    assert tree_hashes(clone, "data", "metrics") == tree_hashes(src, "data", "metrics")
