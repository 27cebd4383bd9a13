"""Benchmark: reference log-probabilities reused across the sample-level ablations vs recomputed.

The top-k and random-k ablations train on subsets of one pair set (e.g. delta_l's pairs). Three ways
to give DPO its reference log-probs, each timed over the same runs (all pairs, then top/random at
10/30/50%, `--seeds` seeds each), in one process, with the default study's student and pairs
(run `make run` first, or point `--pairs-dir` elsewhere):

- `reuse`       deltalab: one ReferenceCache (SQLite, per sequence); every sequence is computed once.
- `precompute`  TRL `precompute_ref_log_probs=True` per run: each run does its own reference pass.
- `on-the-fly`  TRL default: a reference forward pass at every training step.

Printed: reference-pass seconds per mode (trainer construction, where the precompute happens) and
total seconds (construction + training), and the ratio to `reuse`.

    .venv/bin/python bench/reference.py [--pairs-dir data/pairs] [--base delta_l] [--seeds 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from deltalab.config import load_params  # noqa: E402
from deltalab.backends import model_revision  # noqa: E402
from deltalab.training.reference import ReferenceCache  # noqa: E402
from deltalab.training.trainers import build_trainer, common_args, quiet  # noqa: E402


def subsets(pairs: pl.DataFrame) -> dict[str, pl.DataFrame]:
    out = {"all": pairs}
    ranked = pairs.sort(["delta_aggregate", "pair_id"], descending=[True, False])
    for frac in (0.1, 0.3, 0.5):
        k = round(frac * pairs.height)
        out[f"top{int(frac * 100)}"] = ranked.head(k)
        out[f"random{int(frac * 100)}"] = pairs.sample(k, seed=0)
    return out


def run(mode: str, sets: dict[str, pl.DataFrame], params, student: str, seeds: int, cache_dir: Path) -> tuple[float, float]:
    cfg = params.train
    ref_seconds = total = 0.0
    cache = None
    if mode == "reuse":
        cache = ReferenceCache(cache_dir / "reference.sqlite", model_revision(student), cfg.max_length)
    for name, pairs in sets.items():
        for seed in range(seeds):
            model = AutoModelForCausalLM.from_pretrained(student)
            tok = AutoTokenizer.from_pretrained(student)
            with tempfile.TemporaryDirectory() as scratch:
                args = common_args(cfg, seed, Path(scratch), "cpu")
                t0 = time.perf_counter()
                if mode == "reuse":
                    trainer = build_trainer("dpo", cfg, model, tok, pairs, pairs, args, cache, 64)
                else:
                    from trl import DPOConfig, DPOTrainer
                    import datasets

                    ds = datasets.Dataset.from_polars(pairs.select("prompt", "chosen", "rejected"))
                    config = DPOConfig(**args, beta=cfg.beta, loss_type=cfg.loss_type, loss_weights=cfg.loss_weights,
                                       precompute_ref_log_probs=mode == "precompute", precompute_ref_batch_size=64)
                    trainer = quiet(DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok))
                t1 = time.perf_counter()
                trainer.train()
                t2 = time.perf_counter()
            ref_seconds += t1 - t0
            total += t2 - t0
            print(f"  {mode:11s} {name:9s} seed {seed}: construct {t1 - t0:5.1f} s, train {t2 - t1:5.1f} s", flush=True)
    return ref_seconds, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs-dir", default="data/pairs")
    ap.add_argument("--base", default="delta_l")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--modes", default="reuse,precompute,on-the-fly")
    a = ap.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    params = load_params("params.yaml")
    student = params.student.model_path
    pairs = pl.read_parquet(Path(a.pairs_dir) / f"{a.base}.parquet")
    sets = subsets(pairs)
    print(f"{len(sets)} pair sets from {a.base} ({pairs.height} pairs) x {a.seeds} seed(s); student {student}")
    results = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for mode in a.modes.split(","):
            results[mode] = run(mode, sets, params, student, a.seeds, Path(cache_dir))
    ref0, tot0 = results.get("reuse", next(iter(results.values())))
    print(f"\n{'mode':11s} {'reference pass s':>17s} {'total s':>8s} {'total / reuse':>14s}")
    for mode, (ref, tot) in results.items():
        print(f"{mode:11s} {ref:17.1f} {tot:8.1f} {tot / tot0:14.2f}")


if __name__ == "__main__":
    main()
