"""Benchmark-style check of issue 14's OOD headroom: greedy accuracy of every micro model (the generators
and the untrained student) on the study's own evaluation prompts, per split and family, with the bounds
printed (tier-1 OOD: the strongest generator >= 0.30, the student <= 0.15, rising with scale).

Run after a study run, in its root (reads data/models and data/prompts; writes nothing):

    .venv/bin/python bench/ood_headroom.py [params.yaml]
"""

from __future__ import annotations

import sys

import polars as pl
import torch

from deltalab import paths
from deltalab.config import load_params
from deltalab.stages import evaluate

GEN_MIN, STUDENT_MAX = 0.30, 0.15


def accuracy(params, model_dir: str, prompts: pl.DataFrame) -> dict[tuple[str, str], float]:
    """Greedy accuracy per (split, family), answered and scored exactly as the evaluate stage does."""
    rows = pl.DataFrame(evaluate.answers(params, -1, model_dir, prompts, model_dir, {}))
    per = rows.group_by("split", "family").agg(pl.col("correct").mean())
    return {(r["split"], r["family"]): r["correct"] for r in per.iter_rows(named=True)}


def main(params_path: str = "params.yaml") -> int:
    torch.set_num_threads(1)
    params = load_params(params_path)
    prompts = pl.concat([pl.read_parquet(paths.PROMPTS[s]) for s in paths.EVAL_SPLITS])
    models = params.micro_models.models
    rows = {name: accuracy(params, paths.at(paths.MODEL, name), prompts) for name in models}
    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (paths.EVAL_SPLITS.index(k[0]), k[1]))
    print("| model | " + " | ".join(f"{s} {f}" for s, f in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys) + " |")
    tier1 = [k for k in keys if k[0] == "eval_ood"]
    family = params.generators[next(iter(params.generators))].family  # the ladder's family (the Q1 axis)
    generators = [n for n, m in models.items()
                  if m.role == "generator" and n in params.generators and params.generators[n].family == family]
    student = next(n for n, m in models.items() if m.role == "student")
    ok = True
    for k in tier1:
        ladder = [rows[n][k] for n in generators]
        rising = all(a <= b for a, b in zip(ladder, ladder[1:]))
        best, stud = max(ladder), rows[student][k]
        verdict_ = best >= GEN_MIN and stud <= STUDENT_MAX and rising
        ok &= verdict_
        print(f"{k[1]}: strongest generator {best:.3f} (>= {GEN_MIN}), student {stud:.3f} (<= {STUDENT_MAX}), "
              f"rising with scale {'yes' if rising else 'no'} ({' < '.join(f'{v:.3f}' for v in ladder)}) "
              f"-> {'meets' if verdict_ else 'misses'} the bounds")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
