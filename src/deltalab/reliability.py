"""Judge reliability: how far two judges agree on the same traces, how stable a top-k selection is
when its pairs are re-scored by another judge, and the micro-world's noisy second judge. Pure
functions over polars frames (judgment tables as the judge stage writes them, pair tables as
deltalab.pairing builds them); nothing here reads or writes files.

Rounding to an integer is half up (floor(x + 0.5)) everywhere here: scores are in 1..5, so there is
no sign to worry about, and the rule does not depend on a library's default rounding mode.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from deltalab import pairing
from deltalab.config import DIMENSIONS, Selection
from deltalab.io import derive_seed
from deltalab.judge import spearman
from deltalab.pairing import cutoff_ties, select

AGGREGATE = "aggregate"
TIE_BREAK = ("pair_id ascending: among the pairs whose delta equals the cut-off delta, pairing.select keeps "
             "the ones with the smallest pair_id (a content hash, so arbitrary but deterministic)")


def _half_up(x: pl.Expr) -> pl.Expr:
    return (x + 0.5).floor()


def scores(table: pl.DataFrame) -> pl.DataFrame:
    """(trace_id, <dimension>...) as Float64 for the traces judged ok with all five scores. A
    probability-scoring judge's expected scores (`<dimension>_expected`) are its scores, as in
    pairing.light; otherwise the integer scores."""
    expected = pairing.probability_scored(table)
    cols = [pl.col(f"{d}_expected" if expected else d).cast(pl.Float64).alias(d) for d in DIMENSIONS]
    return table.filter(pl.col("status") == "ok").select("trace_id", *cols).drop_nulls()


def agreement(a: pl.DataFrame, b: pl.DataFrame) -> dict:
    """Agreement of two judgment tables over the traces both judged ok (joined on trace_id).

    Per dimension and for the aggregate (the mean of the five scores of a trace): `spearman` (None
    where undefined), `mad` (mean absolute difference of the scores as given, floats unrounded) and
    `exact`, the share of traces on which the two agree exactly after rounding each score to the
    nearest integer (half up; integer scores are unchanged). For the aggregate, `exact` is the share of
    traces on which all five rounded dimensions agree. `n`: the traces compared. Floats are rounded to
    4 decimals, keys sorted, so equal inputs give byte-equal JSON."""
    joined = scores(a).join(scores(b), on="trace_id", how="inner", suffix="_b")
    joined = joined.with_columns(
        pl.mean_horizontal(DIMENSIONS).alias(AGGREGATE),
        pl.mean_horizontal([f"{d}_b" for d in DIMENSIONS]).alias(f"{AGGREGATE}_b"),
        *[(_half_up(pl.col(d)) == _half_up(pl.col(f"{d}_b"))).alias(f"{d}_exact") for d in DIMENSIONS],
    ).with_columns(pl.all_horizontal([f"{d}_exact" for d in DIMENSIONS]).alias(f"{AGGREGATE}_exact"))
    n = joined.height
    out = {}
    for d in (*DIMENSIONS, AGGREGATE):
        x, y = joined[d].to_numpy(), joined[f"{d}_b"].to_numpy()
        out[d] = {
            "exact": round(float(joined[f"{d}_exact"].mean()), 4) if n else None,
            "mad": round(float(np.abs(x - y).mean()), 4) if n else None,
            "n": n,
            "spearman": spearman(joined[d], joined[f"{d}_b"]),
        }
    return {"n": n, "scores": dict(sorted(out.items()))}


def selection_overlap(pairs_a: pl.DataFrame, pairs_b: pl.DataFrame, sel: Selection) -> dict:
    """Stability of one selection under a second judge: `pairs_a` and `pairs_b` are the same pairs (the
    same pair_id set) with their delta columns from judge A and judge B. Both are selected with
    pairing.select under `sel`; the result gives the Jaccard overlap of the two selected pair-id sets
    (|A ∩ B| / |A ∪ B|; None when both are empty), their sizes, and per judge the ties at the cut-off
    (pairing.cutoff_ties; None for selections without a cut-off) and how they were broken."""
    ids_a, ids_b = pairs_a["pair_id"], pairs_b["pair_id"]
    if ids_a.n_unique() != ids_a.len() or ids_b.n_unique() != ids_b.len() or set(ids_a) != set(ids_b):
        raise ValueError("selection_overlap: the two pair tables must hold the same, unique pair ids")
    pairs_a, pairs_b = pairs_a.sort("pair_id"), pairs_b.sort("pair_id")  # select expects pair_id order
    kept_a, kept_b = select(pairs_a, sel), select(pairs_b, sel)
    set_a, set_b = set(kept_a["pair_id"]), set(kept_b["pair_id"])
    union = len(set_a | set_b)
    return {
        "candidates": pairs_a.height,
        "selected_a": len(set_a),
        "selected_b": len(set_b),
        "intersection": len(set_a & set_b),
        "union": union,
        "jaccard": round(len(set_a & set_b) / union, 4) if union else None,
        "ties_a": cutoff_ties(pairs_a, sel, kept_a),
        "ties_b": cutoff_ties(pairs_b, sel, kept_b),
        "tie_break": TIE_BREAK if sel.method in ("top_k", "bottom_k") else None,
    }


def noisy_judge(judgments: pl.DataFrame, sd: float, seed: int) -> pl.DataFrame:
    """A second judge for the micro-world: the first judge's scores plus Gaussian noise.

    Model: for each trace t and dimension d, score'(t, d) = clip(round(score(t, d) + e(t, d)), 1, 5),
    e(t, d) ~ Normal(0, sd), independent across traces and dimensions; round is to the nearest integer,
    half up. The five e(t, ·) of a trace are drawn in DIMENSIONS order from numpy's default_rng seeded
    with derive_seed(seed, "noisy_judge", trace_id), so a trace's noisy scores do not depend on the row
    order or on the other rows. Rows not judged ok, and null scores, are left as they are. The scores
    are Int8 (as the judge writes them); a probability-scoring judge's expected scores are the input
    when present, and the `<dimension>_expected` columns are dropped (the noisy judge gives integers).
    With sd = 0 an integer-scored table comes back unchanged."""
    if not (sd >= 0 and math.isfinite(sd)):
        raise ValueError(f"noisy_judge: sd must be a finite number >= 0, not {sd}")
    noise = np.array([np.random.default_rng(derive_seed(seed, "noisy_judge", t)).normal(0.0, sd, len(DIMENSIONS))
                      for t in judgments["trace_id"].to_list()]).reshape(judgments.height, len(DIMENSIONS))
    expected = all(f"{d}_expected" in judgments.columns for d in DIMENSIONS)
    ok = pl.col("status") == "ok"
    out = judgments.with_columns(
        pl.when(ok).then(_half_up(pl.col(f"{d}_expected" if expected else d).cast(pl.Float64).fill_null(
            pl.col(d).cast(pl.Float64)) + pl.Series(noise[:, i])).clip(1, 5)).otherwise(pl.col(d))
        .cast(pl.Int8).alias(d)
        for i, d in enumerate(DIMENSIONS)
    )
    return out.drop([f"{d}_expected" for d in DIMENSIONS]) if expected else out
