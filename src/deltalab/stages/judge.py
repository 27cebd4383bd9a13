"""judge: rate every trace of every generator on the five dimensions.

The verifier judge (default) scores micro-world step traces exactly; the openai judge asks an LLM
through the cached, retrying client in `judge/llm.py`. Where a trace is step-checkable, its verifier
scores are kept beside the LLM's (`verifier_<dim>` columns), and `metrics/judge_audit.json` reports
their per-dimension Spearman agreement.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.io import atomic_dir, content_id, write_json, write_parquet
from deltalab.judge import JUDGMENT_SCHEMA, LLM_COLUMNS
from deltalab.judge import verifier
from deltalab.micro.traces import step_expression
from deltalab.progress import summary


def _expression(metadata: str) -> str | None:
    return step_expression(json.loads(metadata))


def verifier_scores(rows: pl.DataFrame, steps: bool) -> list[dict | None]:
    """Verifier scores per row, None where the trace has no step checks (a task without them, or a
    free-form trace: only micro-world models write step traces)."""
    return [verifier.score_trace(e, c) if steps and e is not None else None for e, c in zip(rows["expression"], rows["completion"])]


def judge_generator(name: str, params: Params, traces: pl.DataFrame, stats: dict) -> pl.DataFrame:
    steps = params.generators[name].micro_model is not None
    checked = verifier_scores(traces, steps)
    base = [
        {"trace_id": t, "prompt_id": p, "generator": name, **{f"verifier_{d}": (v or {}).get(d) for d in DIMENSIONS}}
        for t, p, v in zip(traces["trace_id"], traces["prompt_id"], checked)
    ]
    backend = params.judge.backend
    if backend == "verifier":
        if any(v is None for v in checked):
            why = "some of its tasks have no step checks" if steps else "it is not a micro model (free-form traces)"
            raise UserError(f"judge.backend: the verifier judge cannot score generator {name!r}: {why} "
                            "(use an LLM judge: openai or transformers)")
        rows = [
            b | {"judge": "verifier", "template_version": verifier.VERSION, "status": "ok", "reason": None,
                 **v, "rationale": None, "raw_response": None,
                 "cache_key": content_id("verifier", verifier.VERSION, b["trace_id"]),
                 "prompt_tokens": 0, "completion_tokens": 0}
            for b, v in zip(base, checked)
        ]
        return pl.DataFrame(rows, schema=JUDGMENT_SCHEMA)
    if backend == "transformers":
        from deltalab.judge import local

        judged = local.judge_traces(traces, params.judge, params.runtime, stats)
    else:
        from deltalab.judge import llm

        judged = llm.judge_traces(traces, params.judge, params.runtime.judge, stats)
    return pl.DataFrame([b | j for b, j in zip(base, judged)], schema=JUDGMENT_SCHEMA | LLM_COLUMNS)


def spearman(a: pl.Series, b: pl.Series) -> float | None:
    df = pl.DataFrame({"a": a, "b": b}).drop_nulls()
    if df.height < 3 or df["a"].n_unique() < 2 or df["b"].n_unique() < 2:
        return None
    return round(float(df.select(pl.corr("a", "b", method="spearman")).item()), 4)


def audit(tables: list[pl.DataFrame], backend: str) -> dict:
    df = pl.concat(tables).filter(pl.col("status") == "ok")
    if backend == "verifier":
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


@contextmanager
def served(params: Params) -> Iterator[Params]:
    """The params, with the judge's `base_url` pointing at its managed server (`serve:`) during the block."""
    judge = params.judge
    if judge.serve is None:
        yield params
        return
    from deltalab.serve import serving

    with serving(judge.serve, judge.model, "judge", judge.seed, batching=True) as url:
        yield params.model_copy(update={"judge": judge.model_copy(update={"base_url": url, "serve": None})})


def run(params: Params, prompts_path: Path, traces_dir: Path, out_dir: Path, metrics_path: Path, audit_path: Path) -> None:
    # Traces have their own `answer` (the one extracted from the trace): name the gold one apart.
    prompts = pl.read_parquet(prompts_path, columns=["prompt_id", "question", "answer", "metadata"])
    prompts = prompts.rename({"answer": "gold_answer"}).with_columns(
        pl.col("metadata").map_elements(_expression, return_dtype=pl.String).alias("expression")
    )
    stats: dict = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0}
    tables, per_gen = [], {}
    for name in params.generators:
        path = traces_dir / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{path}: traces of generator {name!r} not found (run the generate stage first)")
    where = "judge.serve" if params.judge.serve else "judge.base_url"
    with served(params) as params:
        for name in params.generators:
            traces = pl.read_parquet(traces_dir / f"{name}.parquet").join(prompts, on="prompt_id", how="left")
            tables.append(judge_generator(name, params, traces, stats))
    # Failed rows are kept with their reason, but when not one request got through (server down, wrong
    # URL or key) the judgments would be all failures: stop instead.
    if params.judge.backend == "openai" and all(t.height and (t["status"] == "request_error").all() for t in tables):
        reason = next(t["reason"][0] for t in tables if t.height)
        raise UserError(f"{where}: no request to {params.judge.base_url} succeeded ({reason}); nothing written")
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
    judge = "verifier" if params.judge.backend == "verifier" else f"{params.judge.backend}:{params.judge.model}"
    write_json({"judge": judge, **stats, "generators": per_gen}, metrics_path)
    write_json(audit(tables, params.judge.backend), audit_path)
    ok = sum(int((t["status"] == "ok").sum()) for t in tables)
    total = sum(t.height for t in tables)
    summary(f"judge ({judge}): wrote {out_dir} ({total} judgments, {ok} ok, {stats['requests']} requests, "
            f"{stats['cache_hits']} cache hits) and {metrics_path}")
