"""The verdict rule, its Monte Carlo safety, Holm, MDE and the slope with ablations as units (deltalab.verdicts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deltalab.stats import difference_draws, quantile
from deltalab.verdicts import (BORDERLINE_SES, EARLY_SES, HARMFUL, INCONCLUSIVE, LABELS, MAX_RESAMPLING, NOT_SUPPORTED,
                               POSITIVE, RULE, SUPPORTED, decide, holm, label, mde, p_greater, quantile_se, settled,
                               slope_margin, stable_label, unit_slope)

M = 0.01


@pytest.mark.parametrize("lo, hi, expected", [
    # supported: the whole CI clears m
    (0.02, 0.05, SUPPORTED), (M, 0.05, SUPPORTED), (M, M, SUPPORTED),
    # positive, minimum effect not cleared: 0 < lo < m, hi either side of m
    (0.005, 0.008, POSITIVE), (0.005, 0.05, POSITIVE), (1e-9, M, POSITIVE),
    # harmful: hi < 0
    (-0.05, -0.02, HARMFUL), (-0.05, -1e-9, HARMFUL),
    # not supported: lo <= 0 <= hi < m
    (-0.05, 0.0, NOT_SUPPORTED), (0.0, 0.0, NOT_SUPPORTED), (0.0, 0.005, NOT_SUPPORTED), (-0.02, 0.009, NOT_SUPPORTED),
    # inconclusive: lo <= 0 and hi >= m
    (-0.02, M, INCONCLUSIVE), (0.0, M, INCONCLUSIVE), (-0.02, 0.05, INCONCLUSIVE),
])
def test_label_rule_and_boundaries(lo, hi, expected):
    assert label(lo, hi, M) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    # one float step either side of each boundary: the rule's inequalities are exactly where it says
    (np.nextafter(M, 0), 0.05, POSITIVE), (np.nextafter(0.0, 1), 0.05, POSITIVE),
    (np.nextafter(0.0, -1), 0.05, INCONCLUSIVE),
    (-0.05, np.nextafter(0.0, -1), HARMFUL), (-0.05, np.nextafter(0.0, 1), NOT_SUPPORTED),
    (-0.05, np.nextafter(M, 0), NOT_SUPPORTED), (-0.05, np.nextafter(M, 1), INCONCLUSIVE),
])
def test_label_one_step_from_each_boundary(lo, hi, expected):
    assert label(float(lo), float(hi), M) == expected


def test_every_label_is_reachable_and_named_in_the_rule():
    text = RULE.format(conf=0.95, m=M)
    assert all(f"**{name}**" in text for name in LABELS)
    assert {label(lo, hi, M) for lo in np.linspace(-0.03, 0.03, 13) for hi in np.linspace(-0.03, 0.03, 13)
            if lo <= hi} == set(LABELS)


@pytest.mark.parametrize("lo, hi, m", [(0.1, 0.0, M), (math.nan, 0.1, M), (0.0, 0.1, 0.0), (0.0, 0.1, -M)])
def test_label_rejects_bad_input(lo, hi, m):
    with pytest.raises(ValueError):
        label(lo, hi, m)


def test_slope_margin_is_min_effect_over_the_delta_range():
    assert slope_margin(0.01, 0.5) == pytest.approx(0.02)
    # a slope at the margin implies exactly m accuracy between the smallest and the largest delta
    assert slope_margin(0.03, 2.0) * 2.0 == pytest.approx(0.03)
    with pytest.raises(ValueError):
        slope_margin(0.01, 0.0)


def shifted(lo_target: float, n: int = 4000, seed: int = 0) -> np.ndarray:
    """Normal draws shifted so their 2.5% quantile is exactly lo_target."""
    d = np.random.default_rng(seed).normal(0, 0.01, n)
    return d - quantile(d, 0.025) + lo_target


def test_stable_label_flags_a_bound_on_a_threshold():
    on_m = stable_label(shifted(M), 0.95, M)
    assert on_m.lo == pytest.approx(M) and on_m.label == SUPPORTED and on_m.borderline
    on_zero = stable_label(shifted(0.0), 0.95, M)
    assert on_zero.borderline


def test_stable_label_leaves_clear_labels_alone():
    d = shifted(0.0)
    se = quantile_se(d, 0.025)
    assert 0 < se < 0.002  # about sd * sqrt(q(1-q)/B) / density: ~0.0006 here
    clear = stable_label(d + 3 * se + M, 0.95, M)  # lo 3 SEs above m: decided at the cap
    assert clear.label == SUPPORTED and not clear.borderline
    # before the cap a label needs EARLY_SES SEs
    assert stable_label(d + 3 * se + M, 0.95, M, EARLY_SES).borderline
    # lo clearly in (0, m): hi does not matter, even when it sits on m
    mid = stable_label(np.concatenate([np.full(100, 0.005), np.linspace(0.005, M, 3900)]), 0.95, M)
    assert mid.label == POSITIVE and not mid.borderline


def test_stable_label_checks_hi_when_lo_is_below_zero():
    d = np.random.default_rng(1).normal(0, 0.01, 4000)
    hi_on_m = d - quantile(d, 0.975) + M + 1e-12  # lo ~ -0.029: far from 0 and m
    v = stable_label(hi_on_m, 0.95, M)
    assert v.lo < -0.02 and v.label == INCONCLUSIVE and v.borderline
    v = stable_label(d - quantile(d, 0.975) - 0.02, 0.95, M)
    assert v.label == HARMFUL and not v.borderline


def test_stable_label_flags_hi_on_zero_between_harmful_and_not_supported():
    d = np.random.default_rng(4).normal(0, 0.01, 4000)
    v = stable_label(d - quantile(d, 0.975) + 1e-6, 0.95, M)  # hi a hair above 0: not harmful, undecided
    assert v.label == NOT_SUPPORTED and v.borderline
    v = stable_label(d - quantile(d, 0.975) - 1e-6, 0.95, M)  # a hair below: harmful, undecided
    assert v.label == HARMFUL and v.borderline
    v = stable_label(d - quantile(d, 0.975) + 0.005, 0.95, M)  # hi midway between 0 and m
    assert v.label == NOT_SUPPORTED and not v.borderline


def test_stable_label_flags_lo_just_inside_positive():
    v = stable_label(shifted(1e-4), 0.95, M)  # lo a hair above 0: positive by the rule, undecided
    assert v.label == POSITIVE and v.borderline
    v = stable_label(shifted(M / 2), 0.95, M)  # lo midway between 0 and m
    assert v.label == POSITIVE and not v.borderline


def test_quantile_se_matches_the_spread_over_independent_draw_sets():
    rng = np.random.default_rng(3)
    spread = np.std([np.quantile(rng.normal(0, 1, 2000), 0.025) for _ in range(500)])
    estimate = np.mean([quantile_se(rng.normal(0, 1, 2000), 0.025) for _ in range(100)])
    assert estimate == pytest.approx(spread, rel=0.2)  # measured: 0.061 vs 0.059


def test_stable_label_se_shrinks_with_more_draws():
    rng = np.random.default_rng(2)
    small, big = (quantile_se(rng.normal(0, 1, n), 0.025) for n in (1000, 100_000))
    assert big < small / 5


def test_p_greater():
    assert p_greater(np.array([-1.0, 0.0, 1.0, 2.0])) == pytest.approx(3 / 5)  # 2 draws <= 0, plus one
    assert p_greater(np.arange(1.0, 100.0)) == pytest.approx(1 / 100)
    assert p_greater(np.array([0.5, 1.5]), threshold=1.0) == pytest.approx(2 / 3)


def test_holm_by_hand():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # sorted d .005, a .01, c .03, b .04 -> x4, x3, x2, x1 = .02, .03, .06, .04 -> running max .02 .03 .06 .06
    assert holm(p) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert list(holm(p)) == list(p)
    assert holm({"x": 0.4, "y": 0.5}) == pytest.approx({"x": 0.8, "y": 0.8})
    assert holm({"x": 0.7, "y": 0.9}) == {"x": 1.0, "y": 1.0}
    assert holm({"x": 0.2, "y": 0.2}) == pytest.approx({"x": 0.4, "y": 0.4})
    assert holm({}) == {}
    with pytest.raises(ValueError):
        holm({"x": 1.5})


def test_holm_matches_the_reviewers_q2_family():
    # one test at p = 0.04 among 12: adjusted 12 * 0.04 = 0.48 (the review: Holm p 0.47 for its raw p)
    p = {f"t{i}": 0.5 for i in range(11)} | {"top50": 0.04}
    assert holm(p)["top50"] == pytest.approx(0.48)


def test_mde_known_values():
    # z(0.95) + z(0.80) = 1.644854 + 0.841621; two-sided z(0.975) = 1.959964
    assert mde(1.0) == pytest.approx(2.486475, abs=1e-6)
    assert mde(0.02, one_sided=False) == pytest.approx(0.02 * 2.801585, abs=1e-7)
    # t with 2 df, quantile in closed form (2p-1)/sqrt(2p(1-p)): t(0.95) = 2.919986, t(0.80) = 1.060660
    t2 = lambda p: (2 * p - 1) / math.sqrt(2 * p * (1 - p))  # noqa: E731
    assert mde(1.0, df=2) == pytest.approx(t2(0.95) + t2(0.80)) == pytest.approx(3.980646, abs=1e-6)


def test_unit_slope_by_hand():
    # ablation means y = 0, 1, 1, 3 at x = 0..3, two seeds each (+-0.3 around the mean)
    x = np.repeat([0.0, 1.0, 2.0, 3.0], 2)
    y = np.repeat([0.0, 1.0, 1.0, 3.0], 2) + np.tile([0.3, -0.3], 4)
    units = np.repeat(["a", "b", "c", "d"], 2)
    r = unit_slope(x, y, units)
    # Sxx = 5, Sxy = 4.5 -> slope 0.9; residuals .1 .2 -.7 .4 -> SSR 0.7, s^2 = 0.35, se = sqrt(0.07)
    assert r["slope"] == pytest.approx(0.9) == pytest.approx(np.polyfit(x, y, 1)[0])
    assert r["se"] == pytest.approx(math.sqrt(0.07))
    assert (r["n"], r["df"], r["points"]) == (4, 2, 8)
    # t with 2 df in closed form: quantile (2p-1)/sqrt(2p(1-p)), survival 1/2 - t/(2 sqrt(2 + t^2))
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert r["ci"] == pytest.approx([0.9 - t975 * math.sqrt(0.07), 0.9 + t975 * math.sqrt(0.07)])
    t = 0.9 / math.sqrt(0.07)
    assert r["p"] == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)))


def test_unit_slope_seeds_do_not_add_degrees_of_freedom():
    # the same ablation means with more seeds: same slope, same df, same CI
    x = np.repeat([0.0, 1.0, 2.0, 3.0], 5)
    y = np.repeat([0.0, 1.0, 1.0, 3.0], 5) + np.tile([0.2, -0.2, 0.1, -0.1, 0.0], 4)
    r = unit_slope(x, y, np.repeat(list("abcd"), 5))
    assert r["slope"] == pytest.approx(0.9) and r["df"] == 2 and r["se"] == pytest.approx(math.sqrt(0.07))


def test_unit_slope_rejects_bad_units():
    with pytest.raises(ValueError):
        unit_slope([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], ["a", "a", "b"])  # x differs inside unit a
    with pytest.raises(ValueError):
        unit_slope([0.0, 1.0], [0.0, 1.0], ["a", "b"])  # 2 units: no df left


def test_an_exact_ci_is_never_borderline():
    # identical models: every draw is 0, so the CI [0, 0] carries no Monte Carlo error
    v = stable_label(np.zeros(2000), 0.95, 0.01)
    assert (v.lo, v.hi, v.borderline) == (0.0, 0.0, False) and v.label == NOT_SUPPORTED


def test_benefit_labels_are_never_settled_early():
    # a clear benefit is resampled to the most rounds (Holm may compare its p with alpha); clear harm is not
    assert not settled(stable_label(np.linspace(0.05, 0.10, 2000), 0.95, 0.01))
    assert settled(stable_label(np.linspace(-0.10, -0.05, 2000), 0.95, 0.01))
    assert not settled(stable_label(np.linspace(0.0, 0.02, 2000), 0.95, 0.01))  # lo on 0: borderline


# --- mid-quantiles: bounds that move smoothly on an accuracy's lattice -----------------------------------

def test_quantile_without_ties_is_the_hazen_quantile():
    d = np.random.default_rng(5).normal(0, 1, 999)
    assert quantile(d, [0.025, 0.5, 0.975]) == pytest.approx(np.quantile(d, [0.025, 0.5, 0.975], method="hazen"))


def lattice(share_below: float, n: int = 4000, step: float = 1 / 600) -> np.ndarray:
    """Draws on a lattice of `step`: `share_below` of them one step below 0, the rest at 0 and above."""
    below = round(share_below * n)
    return np.concatenate([np.full(below, -step), np.zeros(n // 2 - below), np.full(n - n // 2, step)])


def test_quantile_moves_a_fraction_of_a_step_when_shares_cross_the_level():
    # the share below the atom at 0 crosses 2.5%: a plain percentile jumps a whole step, the mid-quantile doesn't
    a, b = lattice(0.024), lattice(0.026)
    assert np.quantile(a, 0.025) - np.quantile(b, 0.025) == pytest.approx(1 / 600)
    assert 0 < quantile(a, 0.025) - quantile(b, 0.025) < 0.2 / 600
    assert quantile_se(a, 0.025) > 0  # the order statistics sit on one atom, the SE does not vanish


def test_quantile_float_noise_does_not_split_an_atom():
    d = lattice(0.02)
    noisy = d + np.random.default_rng(0).choice([0.0, 1e-17, -1e-17], d.size)
    assert quantile(noisy, 0.025) == pytest.approx(quantile(d, 0.025), abs=1e-15)


def test_quantile_along_the_first_axis():
    d = np.random.default_rng(6).normal(0, 1, (500, 2, 3))
    out = quantile(d, [0.1, 0.9])
    assert out.shape == (2, 2, 3) and out[1, 1, 2] == pytest.approx(quantile(d[:, 1, 2], 0.9))


# --- decide: how many resamples a label gets -------------------------------------------------------------

def counted(make):
    """draws_for that records each number of rounds it was asked for."""
    asked = []

    def draws_for(n):
        asked.append(n)
        return make(n)
    return draws_for, asked


def test_decide_stops_at_once_on_clear_harm_and_takes_benefits_to_the_cap():
    f, asked = counted(lambda n: np.random.default_rng(n).normal(-0.05, 0.005, n))
    v, draws, n = decide(f, 1000, 0.95, M)
    assert v.label == HARMFUL and n == 1000 and asked == [1000] and draws.size == 1000
    f, asked = counted(lambda n: np.random.default_rng(n).normal(0.05, 0.005, n))
    v, _, n = decide(f, 1000, 0.95, M)
    assert v.label == SUPPORTED and n == MAX_RESAMPLING * 1000 and asked == [1000 * 2 ** i for i in range(6)]


def test_decide_needs_early_ses_before_the_cap_and_flags_at_the_cap():
    def make(n):  # lo between BORDERLINE_SES and EARLY_SES of its SE at the first rounds below m
        d = np.random.default_rng(n).normal(0, 0.01, n)
        return d - quantile(d, 0.025) + M - 3 * quantile_se(shifted(0.0, 1000), 0.025)
    v, _, n = decide(make, 1000, 0.95, M)
    assert n > 1000 and v.label == POSITIVE  # not kept at 1000 draws, 3 SEs from m there
    f, _ = counted(lambda n: shifted(M, n, seed=n))  # lo on m: flagged, only at the cap
    v, _, n = decide(f, 500, 0.95, M)
    assert n == MAX_RESAMPLING * 500 and v.borderline and BORDERLINE_SES < EARLY_SES


def test_a_label_on_a_lattice_threshold_is_the_same_at_every_bootstrap_seed():
    # the measured case: a difference over 300 prompts x 2 seeds whose upper bound is about -0.0001 (at
    # 200000 draws), a fraction of the 1/600 step below 0: every seed flags it at the cap, none decides it
    a, b = np.zeros((2, 300)), np.zeros((2, 300))
    a[0, :3] = a[1, 200:203] = 1
    b[1, 100:114] = b[0, 250:257] = 1
    shown = set()
    for seed in range(6):
        v, _, n = decide(lambda n: difference_draws(a, b, n, seed), 500, 0.95, M)
        assert abs(v.hi) < 1e-3 and n == MAX_RESAMPLING * 500
        shown.add(INCONCLUSIVE if v.borderline else v.label)
    assert shown == {INCONCLUSIVE}
