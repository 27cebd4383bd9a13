"""generator_metrics: the measured capability of every generator, from its verified traces.

This is the generator-level axis of the study as a number: accuracy on the same training prompts
(mean over samples and greedy), per-step accuracy, and format/length statistics.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from deltalab.config import Params
from deltalab.errors import UserError
from deltalab.io import write_json
from deltalab.progress import summary


def _stats(df: pl.DataFrame) -> dict:
    if df.height == 0:
        return {}
    step = df["step_accuracy"].drop_nulls()
    fmt = df["format_ok"].drop_nulls()
    return {
        "accuracy": round(float(df["correct"].mean()), 4),
        "step_accuracy": round(float(step.mean()), 4) if step.len() else None,
        "format_ok": round(float(fmt.mean()), 4) if fmt.len() else None,
        "mean_completion_tokens": round(float(df["completion_tokens"].mean()), 2),
        "truncated": round(float((df["finish_reason"] == "length").mean()), 4),
    }


def measure(name: str, params: Params, sampled: pl.DataFrame, greedy: pl.DataFrame) -> dict:
    gen = params.generators[name]
    s, g = _stats(sampled), _stats(greedy)
    return {
        "model": gen.model_path,
        "scale": gen.scale,
        "family": gen.family,
        "prompts": sampled["prompt_id"].n_unique(),
        "n": gen.n,
        "traces": sampled.height,
        "accuracy_mean": s.get("accuracy"),
        "accuracy_greedy": g.get("accuracy"),
        "step_accuracy_mean": s.get("step_accuracy"),
        "step_accuracy_greedy": g.get("step_accuracy"),
        "format_ok_mean": s.get("format_ok"),
        "mean_completion_tokens": s.get("mean_completion_tokens"),
        "truncated_mean": s.get("truncated"),
    }


def run(params: Params, traces_dir: Path, out: Path) -> dict:
    result = {}
    for name in params.generators:
        path = traces_dir / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{path}: traces of generator {name!r} not found (run the generate stage first)")
        result[name] = measure(name, params, pl.read_parquet(path), pl.read_parquet(traces_dir / f"{name}.greedy.parquet"))
    key = "accuracy_greedy" if all(m["accuracy_greedy"] is not None for m in result.values()) else "accuracy_mean"
    ladder = sorted(result, key=lambda n: (result[n][key], n))
    values = [result[n][key] for n in params.generators]  # params order = intended order of scale
    write_json(
        {
            "generators": result,
            "ladder": ladder,
            "ladder_by": key,
            "spread": round(max(values) - min(values), 4),
            "increasing_in_params_order": all(a < b for a, b in zip(values, values[1:])),
        },
        out,
    )
    summary(f"generator_metrics: wrote {out} ({len(result)} generators; {key}: "
            + ", ".join(f"{n} {result[n][key]:.3f}" for n in ladder) + ")")
    return result
