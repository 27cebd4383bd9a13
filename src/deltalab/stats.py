"""Bootstrap statistics over evaluation items: accuracy CIs (evaluate) and the study's two questions
(report).

Every comparison resamples the evaluation prompts once per round (the same prompts for every model
in it, so differences are paired) and, for each model, its training seeds with replacement. The
CI is the percentile interval at `evaluate.confidence`, its bounds taken as mid-quantiles (`quantile`).

The labels the report puts on these intervals, and the slope with ablations as the units, are in
deltalab.verdicts; MIN_EFFECT is the minimum effect both use.
"""

from __future__ import annotations

import numpy as np
import polars as pl

MIN_EFFECT = 0.01
"""The smallest accuracy difference worth a claim: one point."""


def matrix(rows: pl.DataFrame) -> np.ndarray:
    """seeds x prompts correctness of evaluation rows (seeds ascending, prompts by prompt_id)."""
    seeds = sorted(rows["seed"].unique().to_list())
    return np.stack([rows.filter(pl.col("seed") == s).sort("prompt_id")["correct"].to_numpy().astype(float) for s in seeds])


class Resampler:
    def __init__(self, n_items: int, rounds: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.items = self.rng.integers(0, n_items, size=(rounds, n_items))
        self.rounds = rounds

    def means(self, m: np.ndarray, groups: int = 1) -> np.ndarray:
        """Per round: mean over resampled seeds of the mean over the round's prompts.

        With groups > 1 the rows are that many equal blocks, block-major (e.g. the random-k draws of
        one size, each with its training seeds), resampled in two stages: blocks with replacement, then
        rows within each drawn block. So the spread between blocks enters the draws once per block, not
        once per row as it would if the rows were resampled as if independent."""
        per_seed = np.stack([m[s][self.items].mean(axis=1) for s in range(m.shape[0])], axis=1)
        if groups == 1:
            seeds = self.rng.integers(0, m.shape[0], size=(self.rounds, m.shape[0]))
        else:
            size, rest = divmod(m.shape[0], groups)
            if rest or not size:
                raise ValueError(f"{m.shape[0]} rows do not split into {groups} equal blocks")
            blocks = self.rng.integers(0, groups, size=(self.rounds, groups, 1))
            seeds = (blocks * size + self.rng.integers(0, size, size=(self.rounds, groups, size))).reshape(self.rounds, -1)
        return np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)


def quantile(draws, q):
    """The mid-quantile of bootstrap draws at level(s) q, along the first axis.

    Why not np.quantile: an accuracy's bootstrap distribution is discrete (steps of 1/(prompts x seeds)),
    so a plain percentile sits on an atom and jumps a whole step when the share of draws below the atom
    crosses q, which another bootstrap seed makes happen (measured: a CI bound went from -1/600 to 0 and
    its label changed). The mid-quantile (Parzen) inverts the distribution function interpolated through
    each distinct value's mid-point F(v-) + P(v)/2, so a bound moves with the draws' shares by a small
    fraction of a step. Without ties it is np.quantile's `hazen` method. Draws are rounded to 12 decimals
    first, so float noise in a mean does not split one atom.
    """
    x = np.asarray(draws, dtype=float)
    if x.ndim > 1:
        flat = x.reshape(x.shape[0], -1)
        cols = np.stack([quantile(flat[:, i], q) for i in range(flat.shape[1])], axis=-1)
        return cols.reshape(np.shape(q) + x.shape[1:])
    if not x.size:
        raise ValueError("no draws to take a quantile of")
    values, counts = np.unique(np.round(x, 12), return_counts=True)
    mid = (np.cumsum(counts) - counts / 2) / x.size
    return np.interp(q, mid, values)


def interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile CI of bootstrap draws (mid-quantiles)."""
    lo, hi = quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (y may be rounds x points)."""
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def gain_slope(deltas: list[float], models: list[np.ndarray], base: np.ndarray, rounds: int, confidence: float,
               seed: int) -> dict:
    """Slope of the gain over base against generator-level delta, with its bootstrap CI over prompts
    and seeds (the ablations held fixed: evaluation noise only)."""
    x = np.asarray(deltas, dtype=float)
    point = slope(x, np.array([m.mean() - base.mean() for m in models]))
    r = Resampler(base.shape[1], rounds, seed)
    b = r.means(base)
    gains = np.stack([r.means(m) - b for m in models], axis=1)  # rounds x points
    return {"slope": float(point), "ci": list(interval(slope(x, gains), confidence))}


def difference_draws(a: np.ndarray, b: np.ndarray, rounds: int, seed: int, b_groups: int = 1) -> np.ndarray:
    """Bootstrap draws of accuracy of a minus accuracy of b (paired prompts, seeds resampled; b's rows
    in `b_groups` blocks resampled in two stages, see Resampler.means)."""
    r = Resampler(a.shape[1], rounds, seed)
    return r.means(a) - r.means(b, b_groups)


def difference(a: np.ndarray, b: np.ndarray, rounds: int, confidence: float, seed: int) -> dict:
    """Accuracy of a minus accuracy of b (paired prompts), with its bootstrap CI."""
    ci = interval(difference_draws(a, b, rounds, seed), confidence)
    return {"difference": float(a.mean() - b.mean()), "ci": list(ci)}
