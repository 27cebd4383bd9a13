"""judge: rate every trace of every generator on the five dimensions.

The judge is `judge.backend`'s (deltalab.judge.backends): the verifier (default) scores micro-world
step traces exactly; the openai judge asks an LLM through a server (`judge/llm.py`: cached, retried);
the transformers judge runs one in-process (`judge/local.py`). Where a trace is step-checkable, its
verifier scores are kept beside an LLM's (`verifier_<dim>` columns), and `metrics/judge_audit.json`
reports their per-dimension Spearman agreement. A served judge's metrics also count the retries by
kind (`retry_reasons`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from deltalab import chat
from deltalab.config import DIMENSIONS, Params
from deltalab.io import atomic_dir, write_json, write_parquet
from deltalab.judge import Backend, spearman
from deltalab.judge.runner import judge_all
from deltalab.progress import summary


def audit(tables: list[pl.DataFrame], judge: Backend) -> dict:
    df = pl.concat(tables).filter(pl.col("status") == "ok")
    if not judge.audited:
        return {"available": False, "reason": "the verifier is the judge; nothing to compare"}
    if df.select(pl.col("verifier_factuality").is_not_null().sum()).item() < 3:
        return {"available": False, "reason": "fewer than 3 judged traces have verifier scores"}
    # Probability scoring: the expected score, the judge's finer-grained answer.
    score = lambda d: df[f"{d}_expected"].fill_null(df[d].cast(pl.Float64)) if f"{d}_expected" in df.columns else df[d]
    return {
        "available": True,
        "traces": df.height,
        "spearman": {d: spearman(score(d).cast(pl.Float64), df[f"verifier_{d}"].cast(pl.Float64)) for d in DIMENSIONS},
    }


def distribution(table: pl.DataFrame) -> dict:
    """An LLM judge's scores: counts of each integer score per dimension, and with probability scoring
    the mean expected score and the mean probability mass on score tokens."""
    ok = table.filter(pl.col("status") == "ok")
    out = {"scoring": table["scoring"][0] if table.height else None,
           "counts": {d: {str(k): int((ok[d] == k).sum()) for k in range(1, 6)} for d in DIMENSIONS}}
    if ok.height and ok["score_mass"].null_count() < ok.height:
        out["expected_mean"] = {d: round(float(ok[f"{d}_expected"].mean()), 4) for d in DIMENSIONS}
        out["score_mass_mean"] = round(float(ok["score_mass"].mean()), 4)
    return out


def run(params: Params, prompts_path: Path, traces_dir: Path, out_dir: Path, metrics_path: Path, audit_path: Path) -> None:
    tables, judge = judge_all(params, prompts_path, traces_dir)
    per_gen = {}
    stats = judge.stats
    stats["failures"] = sum(int((t["status"] != "ok").sum()) for t in tables)
    # One directory output, replaced whole: a kill never leaves some generators' judgments new and others old.
    with atomic_dir(out_dir) as tmp:
        for name, table in zip(params.generators, tables):
            write_parquet(table, tmp / f"{name}.parquet")
    for name, table in zip(params.generators, tables):
        per_gen[name] = {
            "traces": table.height,
            "status": dict(sorted(table["status"].value_counts().iter_rows())),
            "mean": {d: round(float(table[d].mean()), 4) if table[d].null_count() < table.height else None for d in DIMENSIONS},
        }
        if "scoring" in table.columns:  # LLM judges (the verifier's metrics keep their shape)
            per_gen[name]["scores"] = distribution(table)
    write_json({"judge": judge.label, **stats, "generators": per_gen}, metrics_path)
    write_json(audit(tables, judge), audit_path)
    ok = sum(int((t["status"] == "ok").sum()) for t in tables)
    total = sum(t.height for t in tables)
    # A served judge's counts as generate and evaluate print theirs (with the retries by kind).
    served = "retry_reasons" in stats
    requests = "" if served else f"{stats['requests']} requests, "
    summary(f"judge ({judge.label}): wrote {out_dir} ({total} judgments, {ok} ok, {requests}{stats['cache_hits']} "
            f"cache hits) and {metrics_path}{chat.summary(stats) if served else ''}")
