"""Judges: rate every trace on five reasoning-quality dimensions, integers 1-5.

- `verifier.py`: deterministic scores from step checks (micro-world default, no model).
- `llm.py`: an LLM judge through any OpenAI-compatible API, cached by request content.
- `local.py`: an LLM judge in-process (transformers), cached the same way.
LLM judges score as JSON or with probability-weighted scores (`scores.py`).

Each is a `Backend` (below); `judge/backends.py` maps `judge.backend` to it. A new judge is one module
with such a class, its name in that mapping and in the `backend` literal of config.Judge.
"""

from __future__ import annotations

from typing import Protocol

import polars as pl

from deltalab.config import DIMENSIONS

JUDGMENT_SCHEMA = {
    "trace_id": pl.String,
    "prompt_id": pl.String,
    "generator": pl.String,
    "judge": pl.String,  # "verifier" or "openai:<model>"
    "template_version": pl.String,  # rubric template name + content hash; "verifier-v1" for the verifier
    "status": pl.String,  # ok | parse_error | request_error
    "reason": pl.String,  # why a row is not ok (null when ok)
    **{dim: pl.Int8 for dim in DIMENSIONS},  # 1-5, null unless ok
    "rationale": pl.String,
    "raw_response": pl.String,  # the judge's raw text (null for the verifier)
    "cache_key": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    **{f"verifier_{dim}": pl.Int8 for dim in DIMENSIONS},  # verifier scores where the task is checkable
}
LLM_COLUMNS = {
    "scoring": pl.String,  # json | probability
    **{f"{dim}_expected": pl.Float64 for dim in DIMENSIONS},  # probability scoring: expected score in [1, 5]
    "score_mass": pl.Float64,  # probability scoring: the least probability any dimension put on a score token
}
"""Added after JUDGMENT_SCHEMA by LLM judges (the verifier's judgments keep JUDGMENT_SCHEMA)."""

STATS = ("requests", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens")
"""What every judge reports in metrics/judge.json (zero where it does not apply); a served judge adds
`retry_reasons`."""


class Backend(Protocol):
    """Traces in, judgment rows out."""

    label: str
    """Its name in metrics/judge.json: "verifier", "openai:<model>", "transformers:<model>"."""
    schema: dict
    """Its rows' columns: JUDGMENT_SCHEMA, and LLM_COLUMNS after them for LLM judges."""
    audited: bool
    """Whether the verifier's scores are a second opinion on it (metrics/judge_audit.json)."""
    stats: dict
    """Counts over all `judge` calls: STATS (and more)."""

    def judge(self, generator: str, traces: pl.DataFrame, steps: bool) -> list[dict]:
        """One dict per row of `traces` (same order) holding the judgment's columns of `schema`, all
        but trace_id, prompt_id, generator and verifier_*. `traces` carry the prompt's `question`,
        `gold_answer` and `expression`, and the verifier's scores (`verifier_<dim>`, null where the
        trace has no step checks). `steps`: the generator writes micro-world step traces."""
        ...


def spearman(a: pl.Series, b: pl.Series) -> float | None:
    """Spearman's rho of two judges' scores (average ranks for ties, null pairs dropped), rounded; None
    where it is undefined: fewer than 3 pairs or a constant side."""
    df = pl.DataFrame({"a": a, "b": b}).drop_nulls()
    if df.height < 3 or df["a"].n_unique() < 2 or df["b"].n_unique() < 2:
        return None
    return round(float(df.select(pl.corr("a", "b", method="spearman")).item()), 4)
