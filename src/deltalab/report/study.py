"""The study the report reads: which ablations answer which question (found by their structure in
params, never by name) and the evaluations, pairs metrics and pair tables, loaded once. Shared by the
report stage (deltalab.stages.report) and the analyses (deltalab.report.analyses).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from deltalab import verdicts
from deltalab.config import DIMENSIONS, Ablation, Params
from deltalab.errors import UserError
from deltalab.report import SPLITS
from deltalab.stats import MIN_EFFECT, matrix

DELTA_COLUMNS = [f"delta_{d}" for d in (*DIMENSIONS, "aggregate")]


def _family(a: Ablation) -> tuple:
    """What makes two ablations differ only in their selection."""
    return (a.chosen, a.rejected, a.pick, a.pick_seed, a.pairs_per_prompt, tuple(a.directions or ()), a.algorithm,
            json.dumps(a.train, sort_keys=True))


def all_pairs_dpo(a: Ablation) -> bool:
    """DPO on all of a generator pair's pairs: no selection, no direction filter, no training overrides."""
    return a.algorithm == "dpo" and a.selection.method == "all" and not a.directions and not a.train


def axis_family(params: Params) -> str | None:
    """The family of most all-pairs DPO ablations' chosen generators (ties: the first seen): the scale
    axis is within it, and the other families are the family axis (deltalab.report.analyses)."""
    families = [params.generators[a.chosen].family for a in params.ablations.values() if all_pairs_dpo(a)]
    return max(dict.fromkeys(families), key=families.count) if families else None


def generator_axis(params: Params) -> list[str]:
    """The largest group of all-pairs DPO ablations that share a rejected generator, their chosen
    generators of the axis family (so a second family does not enter the scale slope)."""
    family = axis_family(params)
    groups: dict[str, list[str]] = {}
    for name, a in params.ablations.items():
        if all_pairs_dpo(a) and params.generators[a.chosen].family == family:
            groups.setdefault(a.rejected, []).append(name)
    return max(groups.values(), key=len) if groups else []


def sample_axis(params: Params) -> list[dict]:
    """One row per top_k ablation: its random_k draws (every random_k ablation of its family and size,
    in params order; they differ only in selection.seed) and its all-pairs ablation (if defined)."""
    abl = params.ablations
    rows = []
    for name, a in abl.items():
        s = a.selection
        if s.method != "top_k":
            continue
        size = (s.fraction, s.count)
        draws = [n for n, b in abl.items() if b.selection.method == "random_k" and _family(b) == _family(a)
                 and (b.selection.fraction, b.selection.count) == size]
        full = next((n for n, b in abl.items() if b.selection.method == "all" and _family(b) == _family(a)), None)
        rows.append({"top": name, "by": s.by, "fraction": s.fraction, "count": s.count, "random": draws, "all": full})
    return rows


class Study:
    """Everything the report reads, loaded once."""

    def __init__(self, params: Params, eval_dir: Path, eval_metrics: Path, pairs_dir: Path, pairs_metrics: Path):
        self.params = params
        names = ["base", *params.ablations]
        missing = [n for n in names if not (eval_dir / f"{n}.parquet").exists() or not (eval_metrics / f"{n}.json").exists()]
        if missing:
            raise UserError(f"{eval_dir}: no evaluation of {missing[0]!r} (run `deltalab evaluate {missing[0]}` first)")
        self.items = {n: pl.read_parquet(eval_dir / f"{n}.parquet") for n in names}
        self.metrics = {n: json.loads((eval_metrics / f"{n}.json").read_text()) for n in names}
        self.pairs_metrics = {}
        for n in params.ablations:
            path = pairs_metrics / f"{n}.json"
            self.pairs_metrics[n] = json.loads(path.read_text()) if path.exists() else {}
        self.pairs_dir = pairs_dir
        self.splits = [s for s in SPLITS if s in self.metrics["base"]]

    def m(self, name: str, split: str):
        return matrix(self.items[name].filter(pl.col("split") == split))

    def pooled(self, names: list[str], split: str) -> np.ndarray:
        """The (draw, seed) x prompts matrix of several ablations, draw-major: every draw must have
        the same number of seeds, so the draws are equal blocks (Resampler.means `groups`)."""
        blocks = [self.m(n, split) for n in names]
        if len({b.shape[0] for b in blocks}) > 1:
            seeds = ", ".join(f"{n} {b.shape[0]}" for n, b in zip(names, blocks))
            raise UserError(f"ablations {', '.join(names)}: random-k draws of one size need the same number of "
                            f"evaluated seeds to be pooled ({split}: {seeds})")
        return np.vstack(blocks)

    def delta(self, name: str) -> float:
        return float(self.pairs_metrics[name].get("generator_delta", float("nan")))


def unit_gain_slope(study: Study, names: list[str], split: str) -> dict:
    """The slope of the gain over base on measured generator-level delta with the ablations as the units
    (seeds averaged; verdicts.unit_slope), labelled against one point of accuracy over the delta range,
    with its detectable slope: Q1's test, and the rejected axis's."""
    ev = study.params.evaluate
    deltas = [study.delta(n) for n in names]
    margin = verdicts.slope_margin(MIN_EFFECT, max(deltas) - min(deltas))
    base = study.metrics["base"][split]["accuracy"]
    points = [(study.delta(n), acc - base, n) for n in names
              for _, acc in sorted(study.metrics[n][split]["per_seed"].items())]
    fit = verdicts.unit_slope(*zip(*points), confidence=ev.confidence)
    return {**fit, "margin": margin, "label": verdicts.label(*fit["ci"], margin),
            "mde": verdicts.mde(fit["se"], alpha=1 - ev.confidence, df=fit["df"])}
