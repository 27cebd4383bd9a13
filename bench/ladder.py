"""Benchmark: wall time of training the whole micro-model ladder of a params file (goal: <= 10 min
on 2 cores). Trains every model in `micro_models.models` with the real CLI in a temporary directory
and prints one row per model and the total.

    .venv/bin/python bench/ladder.py [params.yaml]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

GOAL_S = 600.0


def main(params_path: str = "params.yaml") -> None:
    params = Path(params_path).resolve()
    models = yaml.safe_load(params.read_text())["micro_models"]["models"]
    cli = str(Path(sys.executable).parent / "deltalab")
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="bench-ladder-"))
    try:
        shutil.copy(params, work / "params.yaml")
        subprocess.run([cli, "prompts"], cwd=work, env=env, check=True, capture_output=True)
        total = 0.0
        print(f"{'model':<10} {'seconds':>8}")
        for name in models:
            start = time.perf_counter()
            subprocess.run(
                [cli, "micro-models", name, "--exclude", "data/prompts/eval_id.parquet",
                 "--exclude", "data/prompts/eval_ood.parquet"],
                cwd=work, env=env, check=True, capture_output=True,
            )
            took = time.perf_counter() - start
            total += took
            print(f"{name:<10} {took:8.1f}", flush=True)
        verdict = "meets" if total <= GOAL_S else "misses"
        print(f"{'total':<10} {total:8.1f}   ({verdict} the goal of {GOAL_S:.0f} s; {os.cpu_count()} cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
