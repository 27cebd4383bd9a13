"""configs/paper.yaml: valid under the same loader, and `snakemake -n` through the SLURM profile
renders the whole paper-scale DAG with GPUs requested by every GPU rule."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT, deltalab
from deltalab.config import load_params

PAPER = ROOT / "configs" / "paper.yaml"
GPU_RULES = {"generate", "judge", "train", "evaluate", "evaluate_base"}


def test_paper_config_is_valid():
    p = load_params(PAPER)
    assert p.student.model and p.judge.model == "openai/gpt-oss-120b" and p.judge.serve is not None
    assert {g.family for g in p.generators.values()} >= {"qwen", "llama", "r1-distill"}
    assert {a.algorithm for a in p.ablations.values()} >= {"dpo", "kto"}
    assert all(t.revision for t in p.tasks.values()), "every dataset names its revision"


@pytest.mark.integration
def test_deltalab_validate_accepts_it():
    proc = deltalab("validate", str(PAPER), cwd=ROOT)
    assert proc.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    """`snakemake -n` on the paper config through the SLURM profile, in a copy with no outputs."""
    work = tmp_path_factory.mktemp("paper")
    for name in ("Snakefile", "workflow", "configs"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--profile", "workflow/profiles/slurm",
                           "--configfile", "configs/paper.yaml"], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def jobs(out: str) -> list[dict]:
    """One dict per job block: rule, wildcards, resources."""
    found = []
    for block in re.split(r"\n(?=\s*\[[^\]]+\]\n\s*(?:local)?rule )", out):
        rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        wild = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        found.append({
            "rule": rule[1],
            "wildcards": dict(kv.split("=", 1) for kv in wild[1].split(", ")) if wild else {},
            "resources": dict(kv.split("=", 1) for kv in res[1].split(", ")) if res else {},
        })
    return found


@pytest.mark.integration
def test_dry_run_renders_the_whole_dag(dry_run):
    p = load_params(PAPER)
    counts: dict[str, int] = {}
    for job in jobs(dry_run):
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    n = len(p.ablations)
    assert counts == {"prompts": 1, "generate": len(p.generators), "generator_metrics": 1, "judge": 1,
                      "pairs": n, "train": n, "evaluate": n, "evaluate_base": 1, "report": 1, "all": 1}
    assert sum(counts.values()) >= 150
    # Pair building takes seconds per ablation: the profile submits it in batches (group jobs).
    assert "Group job pairs" in dry_run


@pytest.mark.integration
def test_every_gpu_rule_requests_gpus(dry_run):
    p = load_params(PAPER)
    for job in jobs(dry_run):
        gpus = int(job["resources"].get("gpu", 0))
        if job["rule"] == "generate":
            assert gpus == p.generators[job["wildcards"]["generator"]].serve.tp, job
        elif job["rule"] in GPU_RULES:
            assert gpus >= 1, job
        else:
            assert gpus == 0, job
        if job["rule"] != "all":
            assert job["resources"]["slurm_partition"] == ("gpu" if job["rule"] in GPU_RULES else "cpu"), job
