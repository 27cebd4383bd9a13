"""prompts: build the train, in-domain eval and out-of-domain eval prompt tables.

Eval splits are drawn first and every train prompt whose `prompt_id` (a hash of the question) appears
in an eval split is skipped, so train and eval never overlap.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from deltalab.config import Params
from deltalab.errors import UserError
from deltalab import paths
from deltalab.io import derive_seed, write_json, write_parquet
from deltalab.tasks import candidates, prompt_id

SPLITS = ("eval_ood", "eval_far", "eval_id", "train")  # drawing order: eval first, train excludes them
SCHEMA = {
    "prompt_id": pl.String,
    "split": pl.String,
    "family": pl.String,
    "source": pl.String,
    "source_index": pl.Int64,
    "question": pl.String,
    "answer": pl.String,
    "metadata": pl.String,
    "verifier": pl.String,
}


def build(params: Params, base: Path = Path(".")) -> dict[str, pl.DataFrame]:
    seen: set[str] = set()
    tables = {}
    for split in SPLITS:
        rows = []
        for family, want in getattr(params.prompts, split).items():
            task = params.tasks[family]
            got = 0
            for row in candidates(family, task, derive_seed(params.prompts.seed, split, family), want, base):
                pid = prompt_id(row["question"])
                if pid in seen:
                    continue
                seen.add(pid)
                rows.append(dict(prompt_id=pid, split=split, family=family, verifier=task.verifier_name, **row))
                got += 1
                if got == want:
                    break
            if got < want:
                raise UserError(f"prompts.{split}.{family}: asked for {want} prompts, only {got} distinct ones available")
        tables[split] = pl.DataFrame(rows, schema=SCHEMA)
    return tables


def run(params: Params, out_dir: Path, metrics_path: Path | None = None) -> dict[str, pl.DataFrame]:
    tables = build(params)
    for split, df in tables.items():
        write_parquet(df, out_dir / f"{split}.parquet")
    ids = {split: set(df["prompt_id"]) for split, df in tables.items()}
    summary = {
        "rows": {split: df.height for split, df in tables.items()},
        "families": {split: dict(sorted(df["family"].value_counts().iter_rows())) for split, df in tables.items()},
        **{f"overlap_train_{s}": len(ids["train"] & ids[s]) for s in paths.EVAL_SPLITS},
    }
    if metrics_path:
        write_json(summary, metrics_path)
    return tables
