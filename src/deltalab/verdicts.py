"""Verdicts the statistics can bear: the decision rule over a CI, its Monte Carlo safety, Holm-adjusted
p-values, minimum detectable effects and the slope of gain on delta with ablations as the units.

The rule the report prints (RULE), over a CI [lo, hi] and a minimum effect m > 0, first match wins:

1. *supported* — lo >= m: the whole CI clears the minimum effect.
2. *positive (minimum effect not cleared)* — 0 < lo < m: a real benefit, but the CI does not show
   it is as large as m (hi may lie either side of m).
3. *harmful* — hi < 0: the whole CI lies below zero.
4. *not supported* — lo <= 0 <= hi < m: a benefit of size m is ruled out, and harm is not shown.
5. *inconclusive* — lo <= 0 and hi >= m: the CI admits both no effect and a benefit of size m.

At the boundaries: lo == m is supported, lo == 0 is not positive, hi == 0 is not harmful, hi == m
is inconclusive (a benefit of exactly m is not ruled out). For a slope of gain on delta the margin
is an accuracy over the delta range: `slope_margin(m, range) = m / range`, so a slope clears it
when it implies at least m accuracy between the smallest and the largest delta.

Monte Carlo safety: a bound of a bootstrap percentile CI is itself estimated from finitely many draws.
Its MC standard error comes from the order statistics: the share of draws below the true q-quantile
is binomial, with SD sqrt(q(1-q)/B), so SE ~ (Q(q+s) - Q(q-s)) / 2 with s = sqrt(q(1-q)/B). A label is
*borderline* when moving a bound it depends on by BORDERLINE_SES of its SE crosses a threshold: lo
against 0 and m always; hi against 0 and m only when lo < 0 (otherwise lo alone decides). `decide`
raises the resamples until no label is borderline, or flags it. The bounds are mid-quantiles
(deltalab.stats.quantile), so on the lattice an accuracy difference lives on they move smoothly with
the draws and their SE is never 0 by accident of an atom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from deltalab.stats import interval, quantile

SUPPORTED = "supported"
POSITIVE = "positive (minimum effect not cleared)"
HARMFUL = "harmful"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
LABELS = (SUPPORTED, POSITIVE, HARMFUL, NOT_SUPPORTED, INCONCLUSIVE)
BORDERLINE_SES = 2.0  # a bound this many MC standard errors from a threshold leaves its label undecided
EARLY_SES = 4.0
"""Before the most resamples, a label is kept only when its bounds are this many MC SEs from every threshold:
a decision taken on fewer draws needs a wider margin (measured: a bound 2.2 SEs from m at 4x stopped the
resampling there at one bootstrap seed and was borderline at 8x at the others)."""
MAX_RESAMPLING = 32
"""The most resamples a label gets, as a multiple of `evaluate.bootstrap`."""

RULE = (f"**{SUPPORTED}** when the {{conf:.0%}} CI lies at or above the minimum effect m; "
        f"**{POSITIVE}** when it lies above 0 but starts below m; **{HARMFUL}** when it lies below 0; "
        f"**{NOT_SUPPORTED}** when it rules out a benefit of m (upper bound below m) without showing harm; "
        f"**{INCONCLUSIVE}** otherwise. m = {{m}}; for a slope, m accuracy over the delta range. "
        f"A label is flagged *borderline* when a CI bound lies within {BORDERLINE_SES:g} Monte Carlo standard "
        f"errors of 0 or m after {MAX_RESAMPLING}x the resamples.")


def label(lo: float, hi: float, min_effect: float) -> str:
    """The rule's label for the CI [lo, hi] (see the module docstring)."""
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"CI [{lo}, {hi}] is not a finite interval")
    if not min_effect > 0:
        raise ValueError(f"minimum effect {min_effect} is not > 0")
    if lo >= min_effect:
        return SUPPORTED
    if lo > 0:
        return POSITIVE
    if hi < 0:
        return HARMFUL
    if hi < min_effect:
        return NOT_SUPPORTED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    label: str
    lo: float
    hi: float
    se_lo: float  # Monte Carlo standard errors of the bounds
    se_hi: float
    borderline: bool


def quantile_se(draws: np.ndarray, q: float) -> float:
    """Monte Carlo SE of the q-quantile of draws, from the binomial spread of its order statistic."""
    s = math.sqrt(q * (1 - q) / len(draws))
    a, b = quantile(draws, [max(q - s, 0.0), min(q + s, 1.0)])
    return float(b - a) / 2


def stable_label(draws, confidence: float, min_effect: float, ses: float = BORDERLINE_SES) -> Verdict:
    """The label of the percentile CI of bootstrap draws, flagged borderline within `ses` MC SEs."""
    draws = np.asarray(draws, dtype=float)
    qlo, qhi = (1 - confidence) / 2, (1 + confidence) / 2
    lo, hi = interval(draws, confidence)
    se_lo, se_hi = quantile_se(draws, qlo), quantile_se(draws, qhi)

    def near(v: float, se: float) -> bool:  # a degenerate CI (identical models) is exact: never borderline
        return (se > 0 or lo != hi) and any(abs(v - t) <= ses * se for t in (0.0, min_effect))

    borderline = near(lo, se_lo) or (lo < 0 and near(hi, se_hi))
    return Verdict(label(lo, hi, min_effect), lo, hi, se_lo, se_hi, borderline)


def settled(v: Verdict) -> bool:
    """Whether a label may be kept at the current number of resamples: not borderline, and not a
    benefit label, whose one-sided p a Holm adjustment may still compare with alpha (so its p is
    taken from the most resamples, where its Monte Carlo error is smallest)."""
    return not v.borderline and v.label not in (SUPPORTED, POSITIVE)


def decide(draws_for, rounds: int, confidence: float, min_effect: float) -> tuple[Verdict, np.ndarray, int]:
    """The label of bootstrap draws `draws_for(n)`, starting at `rounds` and doubling up to MAX_RESAMPLING
    times it until the label is settled: before the cap a label must clear EARLY_SES SEs, at the cap
    it is flagged borderline within BORDERLINE_SES. Returns the verdict, its draws and their number."""
    n = rounds
    while True:
        draws = np.asarray(draws_for(n), dtype=float)
        final = n >= MAX_RESAMPLING * rounds
        v = stable_label(draws, confidence, min_effect, BORDERLINE_SES if final else EARLY_SES)
        if final or settled(v):
            return v, draws, n
        n *= 2


def entry(v: Verdict, draws: np.ndarray, rounds: int, confidence: float) -> dict:
    """A labelled comparison as the report records it: the CI, the resamples, the label (inconclusive
    while a bound is still inside Monte Carlo error, with the rule's label beside it), the one-sided p
    and the minimum detectable effect."""
    return {"ci": [v.lo, v.hi], "resamples": rounds, "label": INCONCLUSIVE if v.borderline else v.label,
            "borderline": v.borderline, **({"label_within_mc_error": v.label} if v.borderline else {}),
            "p": p_greater(draws), "mde": mde(float(draws.std()), alpha=1 - confidence)}


def adjust(tests: list[dict], confidence: float) -> None:
    """Holm over one family of tests (each a dict with `p` and `label`), in place: adds `p_holm` and
    `tests`, and a benefit label whose adjusted p does not clear 1 - confidence reads inconclusive."""
    for i, p_holm in holm({i: t["p"] for i, t in enumerate(tests)}).items():
        t = tests[i]
        t["p_holm"], t["tests"] = p_holm, len(tests)
        if t["label"] in (SUPPORTED, POSITIVE) and p_holm >= 1 - confidence:
            t["label_before_holm"], t["label"] = t["label"], INCONCLUSIVE


def p_greater(draws, threshold: float = 0.0) -> float:
    """One-sided bootstrap p-value for effect > threshold: (1 + #draws <= threshold) / (1 + B)."""
    draws = np.asarray(draws, dtype=float)
    return float((1 + np.count_nonzero(draws <= threshold)) / (1 + len(draws)))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values over one family of tests (monotone, capped at 1), in input order."""
    if any(not 0 <= p <= 1 for p in pvalues.values()):
        raise ValueError(f"p-values must lie in [0, 1]: {pvalues}")
    order = sorted(pvalues, key=pvalues.get)
    n, running, adjusted = len(order), 0.0, {}
    for i, name in enumerate(order):
        running = max(running, min(1.0, (n - i) * pvalues[name]))  # never below a smaller p's adjusted value
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}


def mde(se: float, alpha: float = 0.05, power: float = 0.8, one_sided: bool = True, df: float | None = None) -> float:
    """Smallest true effect a test at level alpha detects with the given power, from its standard error
    (normal quantiles; t quantiles with `df` degrees of freedom when given). One-sided by default, as
    the study's tests are (is the effect > 0?)."""
    dist = sps.norm if df is None else sps.t(df)
    return float((dist.ppf(1 - (alpha if one_sided else alpha / 2)) + dist.ppf(power)) * se)


def slope_margin(min_effect: float, delta_range: float) -> float:
    """The slope that implies min_effect accuracy over the whole delta range."""
    if not delta_range > 0:
        raise ValueError(f"delta range {delta_range} is not > 0")
    return min_effect / delta_range


def unit_slope(x, y, units, confidence: float = 0.95) -> dict:
    """OLS slope of y on x with the ablations as the units, and its t CI and one-sided p (slope > 0).

    One point per (ablation, seed); `units` names each point's ablation, whose x is the same for all
    its seeds. The points are averaged within each ablation and the line is fitted over the G
    ablation means, df = G - 2. Why not df = n - 2 over all points: x varies only between ablations,
    so the seeds of one ablation share its scatter around the line, and counting them as independent
    understates the SE (the reviewer's finding); a cluster-robust SE is unreliable with a handful of
    clusters. With the same seeds in every ablation the slope equals OLS over all points, and the
    averaged fit is the exact between-ablation analysis of a random-intercept model. On today's Q1-ID
    evaluations this gives +0.145 [-0.145, +0.434], p = 0.08 one-sided (the review's 0.16 is two-sided).
    """
    x, y, units = np.asarray(x, float), np.asarray(y, float), np.asarray(units)
    names = list(dict.fromkeys(units.tolist()))
    xs = np.array([x[units == u][0] for u in names])
    if any(np.ptp(x[units == u]) > 0 for u in names):
        raise ValueError("x must be the same for every point of one unit")
    ys = np.array([y[units == u].mean() for u in names])
    n, df = len(names), len(names) - 2
    if df < 1 or np.ptp(xs) == 0:
        raise ValueError(f"need at least 3 units with different x, got {n}")
    xc = xs - xs.mean()
    slope = float(xc @ (ys - ys.mean()) / (xc @ xc))
    resid = ys - ys.mean() - slope * xc
    se = float(math.sqrt(resid @ resid / df / (xc @ xc)))
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * se
    p = float(sps.t.sf(slope / se, df)) if se > 0 else float(slope <= 0)
    return {"slope": slope, "ci": [slope - half, slope + half], "se": se, "p": p, "n": n, "df": df,
            "points": len(y)}
