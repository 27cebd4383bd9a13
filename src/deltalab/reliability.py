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
from deltalab.stats import interval
from deltalab.verdicts import quantile_se

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


def _joined(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Both judges' scores (b's suffixed `_b`), the aggregates and the exact-agreement flags, per trace
    both judged ok, in trace_id order."""
    joined = scores(a).join(scores(b), on="trace_id", how="inner", suffix="_b").sort("trace_id")
    return joined.with_columns(
        pl.mean_horizontal(DIMENSIONS).alias(AGGREGATE),
        pl.mean_horizontal([f"{d}_b" for d in DIMENSIONS]).alias(f"{AGGREGATE}_b"),
        *[(_half_up(pl.col(d)) == _half_up(pl.col(f"{d}_b"))).alias(f"{d}_exact") for d in DIMENSIONS],
    ).with_columns(pl.all_horizontal([f"{d}_exact" for d in DIMENSIONS]).alias(f"{AGGREGATE}_exact"))


def agreement(a: pl.DataFrame, b: pl.DataFrame) -> dict:
    """Agreement of two judgment tables over the traces both judged ok (joined on trace_id).

    Per dimension and for the aggregate (the mean of the five scores of a trace): `spearman` (None
    where undefined), `mad` (mean absolute difference of the scores as given, floats unrounded) and
    `exact`, the share of traces on which the two agree exactly after rounding each score to the
    nearest integer (half up; integer scores are unchanged). For the aggregate, `exact` is the share of
    traces on which all five rounded dimensions agree. `n`: the traces compared. Floats are rounded to
    4 decimals, keys sorted, so equal inputs give byte-equal JSON."""
    joined = _joined(a, b)
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


def noise_model(sd: float, seed: int) -> str:
    """noisy_judge's model in words, for the report."""
    return (f"the first judge's scores plus independent Gaussian noise (SD {sd:g} score points per trace and "
            f"dimension, seed {seed}), rounded half up to an integer and clipped to 1-5")


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


# --- bootstrap CIs ------------------------------------------------------------------------------------


def _interval(draws: list[float], confidence: float) -> dict | None:
    """The percentile CI of the defined draws (as stats.py takes it), with the Monte Carlo SE of each
    bound (verdicts.quantile_se), rounded; None without a draw."""
    x = np.array([d for d in draws if d is not None and math.isfinite(d)])
    if not x.size:
        return None
    q = ((1 - confidence) / 2, (1 + confidence) / 2)
    lo, hi = interval(x, confidence)
    return {"ci": [round(float(lo), 4), round(float(hi), 4)],
            "se": [round(quantile_se(x, q[0]), 4), round(quantile_se(x, q[1]), 4)], "draws": int(x.size)}


def _codes(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's index among the sorted distinct values, and their count (ranks are per value)."""
    values, inv = np.unique(v, return_inverse=True)
    return inv, values.size


def _weighted_spearman(x, y, w: np.ndarray) -> float | None:
    """Spearman's rho of the sample holding trace i w[i] times (average ranks for ties), without
    materialising the copies: a value's average rank is its cumulative weight less half its ties.
    x, y: the scores, or their _codes (computed once for many weightings)."""
    def ranks(v):
        inv, size = v if isinstance(v, tuple) else _codes(v)
        counts = np.bincount(inv, weights=w, minlength=size)
        return (np.cumsum(counts) - (counts - 1) / 2)[inv]

    rx, ry = ranks(x), ranks(y)
    total = w.sum()
    dx, dy = rx - (w * rx).sum() / total, ry - (w * ry).sum() / total
    vx, vy = (w * dx * dx).sum(), (w * dy * dy).sum()
    if vx <= 1e-12 * total or vy <= 1e-12 * total:  # a constant side: undefined, as judge.spearman
        return None
    return float((w * dx * dy).sum() / math.sqrt(vx * vy))


def agreement_ci(a: pl.DataFrame, b: pl.DataFrame, resamples: int, confidence: float, seed: int) -> dict:
    """Bootstrap CIs of `spearman` and `exact` per dimension and for the aggregate, over the traces
    both judges scored ok (resampled with replacement, the same draws for every dimension; numpy's
    default_rng seeded with derive_seed(seed, "agreement")). {dimension: {"spearman": CI, "exact": CI}}
    with CI as _interval gives it (None where undefined)."""
    joined = _joined(a, b)
    n = joined.height
    out = {}
    if n < 3:
        return {d: {"exact": None, "spearman": None} for d in sorted((*DIMENSIONS, AGGREGATE))}
    rng = np.random.default_rng(derive_seed(seed, "agreement"))
    cols = {d: (_codes(joined[d].to_numpy()), _codes(joined[f"{d}_b"].to_numpy()),
                joined[f"{d}_exact"].to_numpy().astype(float))
            for d in (*DIMENSIONS, AGGREGATE)}
    rho = {d: [] for d in cols}
    exact = {d: [] for d in cols}
    for _ in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        for d, (x, y, e) in cols.items():
            rho[d].append(_weighted_spearman(x, y, w))
            exact[d].append(float((w * e).sum() / n))
    for d in sorted(cols):
        out[d] = {"exact": _interval(exact[d], confidence), "spearman": _interval(rho[d], confidence)}
    return out


def rescore(pairs: pl.DataFrame, judged: pl.DataFrame) -> pl.DataFrame:
    """The pairs (pair_id, chosen_trace_id, rejected_trace_id) with their deltas from another judge's
    judgment table (scores() of it): delta_<dimension> = chosen - rejected and delta_aggregate their
    mean, rounded to 4 decimals as pairing rounds expected scores. Pairs of which that judge did not
    score both traces ok are dropped. In pair_id order."""
    s = scores(judged)
    side = lambda prefix: s.rename({"trace_id": f"{prefix}_trace_id", **{d: f"{prefix}_{d}" for d in DIMENSIONS}})
    deltas = [(pl.col(f"chosen_{d}") - pl.col(f"rejected_{d}")).round(4).alias(f"delta_{d}") for d in DIMENSIONS]
    return (
        pairs.select("pair_id", "chosen_trace_id", "rejected_trace_id")
        .join(side("chosen"), on="chosen_trace_id", how="inner")
        .join(side("rejected"), on="rejected_trace_id", how="inner")
        .with_columns(deltas)
        .with_columns((pl.sum_horizontal(f"delta_{d}" for d in DIMENSIONS) / len(DIMENSIONS)).round(4)
                      .alias(f"delta_{AGGREGATE}"))
        .select("pair_id", *(f"delta_{d}" for d in (*DIMENSIONS, AGGREGATE)))
        .sort("pair_id")
    )


def _kept(delta: np.ndarray, k: int, top: bool) -> np.ndarray:
    """Mask of the k rows pairing.select keeps, for rows in pair_id order: by delta (descending for
    top_k), ties to the earlier row."""
    order = np.lexsort((np.arange(delta.size), -delta if top else delta))
    mask = np.zeros(delta.size, dtype=bool)
    mask[order[:k]] = True
    return mask


def _jaccard(a: np.ndarray, b: np.ndarray) -> float | None:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else None


def overlap_ci(pairs_a: pl.DataFrame, pairs_b: pl.DataFrame, sel: Selection, resamples: int, confidence: float,
               seed: int, key: str) -> dict | None:
    """Bootstrap CI of selection_overlap's Jaccard for a ranked selection (Selection.ranked): the
    candidate pairs are resampled with replacement (numpy's default_rng seeded with derive_seed(seed,
    "overlap", key); key: the ablation), both judges select k = pairing.sample_size(sel, n) of the resample as
    pairing.select would (copies of a pair sit together in pair_id order), and the Jaccard of the two
    selections (as multisets of resampled rows) is a draw. None for an unranked selection."""
    if not sel.ranked or pairs_a.height == 0:
        return None
    a, b = pairs_a.sort("pair_id"), pairs_b.sort("pair_id")
    if not a["pair_id"].equals(b["pair_id"]):
        raise ValueError("overlap_ci: the two pair tables must hold the same pair ids")
    col, top = f"delta_{sel.by}", sel.method == "top_k"
    da, db = a[col].cast(pl.Float64).to_numpy(), b[col].cast(pl.Float64).to_numpy()
    n = da.size
    k = pairing.sample_size(sel, n)
    rng = np.random.default_rng(derive_seed(seed, "overlap", key))
    draws = []
    for _ in range(resamples):
        idx = np.sort(rng.integers(0, n, n))
        draws.append(_jaccard(_kept(da[idx], k, top), _kept(db[idx], k, top)))
    return _interval(draws, confidence)
