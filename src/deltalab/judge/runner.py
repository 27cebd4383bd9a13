"""Judging every generator's traces with `params.judge`: the judge stage's work, shared with the
reliability stage (whose LLM second judge runs through it with `judge` replaced, and the same cache)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.judge import Backend, verifier
from deltalab.judge.backends import BACKENDS
from deltalab.micro.traces import step_expression
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
