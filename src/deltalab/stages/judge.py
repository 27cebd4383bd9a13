"""judge: rate every trace of every generator on the five dimensions.

The judge is `judge.backend`'s (deltalab.judge.backends): the verifier (default) scores micro-world
step traces exactly; the openai judge asks an LLM through a server (`judge/llm.py`: cached, retried);
the transformers judge runs one in-process (`judge/local.py`). Where a trace is step-checkable, its
verifier scores are kept beside an LLM's (`verifier_<dim>` columns), and `metrics/judge_audit.json`
reports their per-dimension Spearman agreement. A served judge's metrics also count the retries by
kind (`retry_reasons`).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from deltalab import chat
from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.io import atomic_dir, write_json, write_parquet
from deltalab.judge import Backend, spearman, verifier
from deltalab.judge.backends import BACKENDS
from deltalab.micro.traces import step_expression
from deltalab.progress import summary
from deltalab.serve import endpoint


def _expression(metadata: str) -> str | None:
    return step_expression(json.loads(metadata))


def judge_generator(name: str, params: Params, judge: Backend, traces: pl.DataFrame) -> pl.DataFrame:
    steps = params.generators[name].micro_model is not None
    # The verifier's scores where the trace is step-checkable, beside any judge's (the audit compares
    # them); the judge gets them with the traces (the verifier judge's scores are these).
    checked = verifier.scores(traces, steps)
    base = [
        {"trace_id": t, "prompt_id": p, "generator": name, **{f"verifier_{d}": (v or {}).get(d) for d in DIMENSIONS}}
        for t, p, v in zip(traces["trace_id"], traces["prompt_id"], checked)
    ]
    traces = traces.with_columns(pl.Series(f"verifier_{d}", [b[f"verifier_{d}"] for b in base], dtype=pl.Int8)
                                 for d in DIMENSIONS)
    judged = judge.judge(name, traces, steps)
    return pl.DataFrame([b | j for b, j in zip(base, judged, strict=True)], schema=judge.schema)


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


def read_prompts(prompts_path: Path) -> pl.DataFrame:
    """The prompt columns a judge reads, joined to the traces by prompt_id."""
    # Traces have their own `answer` (the one extracted from the trace): name the gold one apart.
    prompts = pl.read_parquet(prompts_path, columns=["prompt_id", "question", "answer", "metadata"])
    return prompts.rename({"answer": "gold_answer"}).with_columns(
        pl.col("metadata").map_elements(_expression, return_dtype=pl.String).alias("expression")
    )


def judge_all(params: Params, prompts_path: Path, traces_dir: Path, section: str = "judge") -> tuple[list[pl.DataFrame], Backend]:
    """Every generator's judgments by `params.judge` (in params.generators order) and the judge. `section`
    names the params section the judge came from, in errors (the reliability stage's second judge)."""
    prompts = read_prompts(prompts_path)
    tables = []
    for name in params.generators:
        path = traces_dir / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{path}: traces of generator {name!r} not found (run the generate stage first)")
    cfg = params.judge
    where = f"{section}.serve" if cfg.serve else f"{section}.base_url"
    with endpoint(cfg.base_url, cfg.serve, cfg.model, "judge", cfg.seed, batching=True) as url:
        judge = BACKENDS[cfg.backend](params, url)
        for name in params.generators:
            traces = pl.read_parquet(traces_dir / f"{name}.parquet").join(prompts, on="prompt_id", how="left")
            tables.append(judge_generator(name, params, judge, traces))
    # Failed rows are kept with their reason, but when not one request got through (server down, wrong
    # URL or key) the judgments would be all failures: stop instead.
    if any(t.height for t in tables) and all(t.height and (t["status"] == "request_error").all() for t in tables):
        reason = next(t["reason"][0] for t in tables if t.height)
        raise UserError(f"{where}: no request to {url} succeeded ({reason}); nothing written")
    return tables, judge


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
