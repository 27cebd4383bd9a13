"""The paper's analyses beyond Q1/Q2, as report sections: pure functions over the report's Study.

Which ablations answer which analysis is read from their structure (never their names):
- dimensions: the Q1 axis (report.study.generator_axis): mean sample-level delta per judge dimension
  against the measured generator-level delta. One bootstrap resamples the training prompts (shared by
  the axis's pair sets, so the slope is paired); a pair set is fixed given its prompts, so there are no
  seeds here. The slope is labelled against DIMENSION_EFFECT points over the delta range.
- directions: ablations with a single correctness direction on the largest-delta ablation's generators
  (and algorithm), each against base.
- family: all-pairs DPO ablations whose chosen generator is of another family than the axis', each
  against the Q1-axis ablation of the nearest measured generator-level delta.
- imitation: (a) each Q1-axis ablation minus its SFT twin (same pairs, algorithm sft): what the rejected
  side adds over imitating the chosen traces; (b) the rejected axis: all-pairs DPO ablations with the
  largest-delta ablation's chosen generator and different rejected ones. If the gain does not move with
  the rejected generator, the gain is imitation of the chosen traces, not preference.

Every label is the corrected rule's (deltalab.verdicts): bootstrap differences via `stable_label`, resampled
up to verdicts.MAX_RESAMPLING times while borderline (verdicts.decide); a section's tests are one Holm family, and a positive label
whose adjusted p does not clear 1 - confidence reads inconclusive (as Q2's).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from deltalab import verdicts
from deltalab.config import DIMENSIONS, Ablation
from deltalab.io import derive_seed
from deltalab.report import ANALYSIS_TABLES, SPLITS
from deltalab.report.study import (DELTA_COLUMNS, Study, all_pairs_dpo, axis_family, generator_axis,
                                   unit_gain_slope)
from deltalab.stats import MIN_EFFECT, difference_draws, quantile, slope

DIMENSION_EFFECT = 0.25
"""The smallest change of a mean sample-level delta worth a claim: a quarter point on the 1-5 judge
scale between the smallest and the largest generator-level delta (a slope of 0.25 / range)."""
DIMENSION_KEYS = [*DIMENSIONS, "aggregate"]
CHUNK = 500  # bootstrap rounds per block of prompt weights (bounds memory at rounds x prompts)

PAPER = {
    "dimensions": "the paper reports that a larger generator delta raises the sample-level delta on every judge "
                  "dimension (step coherence about 0.96 → 2.08).",
    "directions": "the paper reports that wrong→correct, correct→wrong and wrong→wrong pairs all beat the base "
                  "model: intrinsic reasoning quality, not correctness alone, drives the gains.",
    "family": "the paper varies the generator-level delta by scale and by family (Qwen, Llama, R1 distills) and "
              "reports gains roughly linear in the delta; it reports no family effect at matched delta.",
    "imitation": "the paper attributes the gains to the preference pairs' generator-level delta; it reports no "
                 "SFT-on-chosen control and no fixed-chosen, varied-rejected axis, so it does not separate the "
                 "preference signal from imitation of the chosen traces.",
}


# --- labelled comparisons ------------------------------------------------------------------------------

def decide(draws_for: Callable[[int], np.ndarray], study: Study, min_effect: float) -> dict:
    """The rule's label on bootstrap draws (draws_for(rounds)), resampled with 2x, 4x ... MAX_RESAMPLING
    times `evaluate.bootstrap` rounds while a CI bound is within Monte Carlo error of 0 or m, or while
    the label is a benefit that Holm may demote (verdicts.settled)."""
    ev = study.params.evaluate
    v, draws, rounds = verdicts.decide(draws_for, ev.bootstrap, ev.confidence, min_effect)
    return {**verdicts.entry(v, draws, rounds, ev.confidence), "min_effect": min_effect}


def compare(study: Study, a: str, b: str, split: str, *tag: str) -> dict:
    """Accuracy of a minus accuracy of b on split (paired prompts, seeds resampled), labelled against
    MIN_EFFECT; with b = base this is a's gain."""
    ma, mb = study.m(a, split), study.m(b, split)
    seed = derive_seed(study.params.evaluate.seed, *tag, a, b, split)
    out = {"difference": float(ma.mean() - mb.mean())}
    return out | decide(lambda rounds: difference_draws(ma, mb, rounds, seed), study, MIN_EFFECT)


def _largest(study: Study, names: list[str]) -> str | None:
    """The Q1-axis ablation of the largest measured delta (ties: two generators over one, then params order)."""
    abl = study.params.ablations
    return max(names, key=lambda n: (study.delta(n), abl[n].chosen != abl[n].rejected)) if names else None


# --- 1. sample-level delta per dimension ---------------------------------------------------------------

class PromptBootstrap:
    """Mean delta per ablation and dimension over resampled prompts, the same prompts for every pair set.

    A prompt's pairs go together (a cluster bootstrap): each round draws the union of prompts with
    replacement, and an ablation's mean is its pairs' deltas weighted by how often their prompt was drawn."""

    def __init__(self, frames: dict[str, pl.DataFrame]):
        self.prompts = sorted(set().union(*(f["prompt_id"].unique().to_list() for f in frames.values())))
        index = {p: i for i, p in enumerate(self.prompts)}
        self.sums, self.counts = [], []
        for f in frames.values():
            g = f.group_by("prompt_id").agg(pl.len().alias("n"), *(pl.col(c).cast(pl.Float64).sum() for c in DELTA_COLUMNS))
            rows = np.array([index[p] for p in g["prompt_id"]], dtype=int)
            sums, counts = np.zeros((len(self.prompts), len(DELTA_COLUMNS))), np.zeros(len(self.prompts))
            sums[rows], counts[rows] = g.select(DELTA_COLUMNS).to_numpy(), g["n"].to_numpy()
            self.sums.append(sums)
            self.counts.append(counts)

    def point(self) -> np.ndarray:
        """ablations x dimensions: the mean over all pairs."""
        return np.stack([s.sum(axis=0) / c.sum() for s, c in zip(self.sums, self.counts)])

    def draws(self, rounds: int, seed: int) -> np.ndarray:
        """rounds x ablations x dimensions."""
        rng, n, out = np.random.default_rng(seed), len(self.prompts), []
        for start in range(0, rounds, CHUNK):
            c = min(CHUNK, rounds - start)
            picks = rng.integers(0, n, size=(c, n)) + (np.arange(c) * n)[:, None]
            w = np.bincount(picks.ravel(), minlength=c * n).reshape(c, n).astype(float)
            out.append(np.stack([(w @ s) / np.maximum(w @ k, 1)[:, None] for s, k in zip(self.sums, self.counts)], axis=1))
        return np.concatenate(out)


def dimensions(study: Study) -> dict:
    names = generator_axis(study.params)
    out = {"ablations": names, "min_effect_points": DIMENSION_EFFECT, "rows": [], "slopes": {}}
    if not names:
        out["note"] = "no all-pairs DPO ablations of one family share a rejected generator"
        return out
    ev = study.params.evaluate
    frames = {n: pl.read_parquet(study.pairs_dir / f"{n}.parquet", columns=["prompt_id", *DELTA_COLUMNS]) for n in names}
    boot = PromptBootstrap(frames)
    seed = derive_seed(ev.seed, "dimensions")
    cache: dict[int, np.ndarray] = {}

    def draws(rounds: int) -> np.ndarray:
        if rounds not in cache:
            cache[rounds] = boot.draws(rounds, seed)
        return cache[rounds]

    point, base_draws = boot.point(), draws(ev.bootstrap)
    lo, hi = quantile(base_draws, [(1 - ev.confidence) / 2, (1 + ev.confidence) / 2])
    x = np.array([study.delta(n) for n in names])
    for i, n in enumerate(names):
        out["rows"] += [{"ablation": n, "generator_delta": float(x[i]), "dimension": d, "mean_delta": float(point[i, j]),
                         "lo": float(lo[i, j]), "hi": float(hi[i, j])} for j, d in enumerate(DIMENSION_KEYS)]
    if len(set(x.tolist())) < 2:
        out["note"] = "the axis's ablations share one measured generator-level delta: no slope"
        return out
    out["margin"] = verdicts.slope_margin(DIMENSION_EFFECT, float(np.ptp(x)))
    for j, d in enumerate(DIMENSION_KEYS):
        fit = {"slope": float(slope(x, point[:, j])),
               **decide(lambda rounds: slope(x, draws(rounds)[:, :, j]), study, out["margin"])}
        fit["change_over_range"] = fit["slope"] * float(np.ptp(x))
        out["slopes"][d] = fit
    verdicts.adjust(list(out["slopes"].values()), ev.confidence)
    return out


# --- 2. correctness directions --------------------------------------------------------------------------

def directions(study: Study) -> dict:
    largest = _largest(study, generator_axis(study.params))
    out: dict = {"largest": largest, "rows": []}
    if largest is None:
        out["note"] = "no Q1-axis ablation to take the largest delta from"
        return out
    top = study.params.ablations[largest]
    names = [n for n, a in study.params.ablations.items() if a.directions and len(a.directions) == 1
             and (a.chosen, a.rejected, a.algorithm) == (top.chosen, top.rejected, top.algorithm)]
    if not names:
        out["note"] = (f"no single-direction ablation on {largest}'s generators ({top.chosen} → {top.rejected}, "
                       f"{top.algorithm})")
        return out
    for n in names:
        for split in study.splits:
            out["rows"].append({"ablation": n, "direction": study.params.ablations[n].directions[0], "split": split,
                                "pairs": study.pairs_metrics[n].get("pairs"), **compare(study, n, "base", split, "direction")})
    verdicts.adjust(out["rows"], study.params.evaluate.confidence)
    return out


# --- 3. family axis -------------------------------------------------------------------------------------

def family(study: Study) -> dict:
    params = study.params
    fam, names = axis_family(params), generator_axis(params)
    out: dict = {"axis_family": fam, "rows": []}
    others = [n for n, a in params.ablations.items() if all_pairs_dpo(a) and params.generators[a.chosen].family != fam]
    if not others or not names:
        out["note"] = (f"no all-pairs DPO ablation has a chosen generator outside the Q1 axis's family "
                       f"({fam or 'no `family` set'})"
                       if not others else "no Q1-axis ablation to match the other families' deltas against")
        return out
    for n in others:
        matched = min(names, key=lambda m: (abs(study.delta(m) - study.delta(n)), m))
        for split in study.splits:
            out["rows"].append({
                "ablation": n, "family": params.generators[params.ablations[n].chosen].family, "matched": matched,
                "split": split, "generator_delta": study.delta(n), "matched_delta": study.delta(matched),
                "gain": study.metrics[n][split]["gain"], "matched_gain": study.metrics[matched][split]["gain"],
                **compare(study, n, matched, split, "family")})
    verdicts.adjust(out["rows"], params.evaluate.confidence)
    return out


# --- 4. preference signal vs imitation ------------------------------------------------------------------

def _pairs_and_recipe(a: Ablation) -> dict:
    """What an ablation trains on and how, but the algorithm and the training seeds (fewer seeds for a
    control still make it the same control)."""
    out = a.model_dump(exclude={"algorithm"})
    out["train"] = {k: v for k, v in out["train"].items() if k != "seeds"}
    return out


def sft_twin(study: Study, a: Ablation) -> str | None:
    """The ablation that trains SFT on exactly a's pairs."""
    same = _pairs_and_recipe(a)
    return next((n for n, b in study.params.ablations.items()
                 if b.algorithm == "sft" and _pairs_and_recipe(b) == same), None)


def rejected_axis(study: Study) -> list[str]:
    """All-pairs DPO ablations with the largest-delta ablation's chosen generator, one per rejected one."""
    largest = _largest(study, generator_axis(study.params))
    if largest is None:
        return []
    chosen, seen = study.params.ablations[largest].chosen, {}
    for n, a in study.params.ablations.items():
        if all_pairs_dpo(a) and a.chosen == chosen and a.rejected != chosen:
            seen.setdefault(a.rejected, n)
    return sorted(seen.values(), key=lambda n: (study.delta(n), n))


def imitation(study: Study) -> dict:
    ev = study.params.evaluate
    out: dict = {"sft_twins": {"rows": []}, "rejected_axis": {"ablations": rejected_axis(study), "splits": {}, "pairs": []}}
    twins = out["sft_twins"]
    for n in generator_axis(study.params):
        if (twin := sft_twin(study, study.params.ablations[n])) is None:
            continue
        for split in study.splits:
            twins["rows"].append({"ablation": n, "sft": twin, "generator_delta": study.delta(n), "split": split,
                                  **compare(study, n, twin, split, "imitation")})
    if twins["rows"]:
        verdicts.adjust(twins["rows"], ev.confidence)
    else:
        twins["note"] = "no Q1-axis ablation has an SFT twin (the same pairs with algorithm: sft)"
    axis = out["rejected_axis"]
    names = axis["ablations"]
    deltas = [study.delta(n) for n in names]
    if len(set(deltas)) >= 3:  # ablations (seeds averaged) as the units, as Q1
        for split in study.splits:
            axis["splits"][split] = {**unit_gain_slope(study, names, split),
                                     "gains": {n: study.metrics[n][split]["gain"] for n in names}}
        verdicts.adjust(list(axis["splits"].values()), ev.confidence)
    elif len(set(deltas)) == 2:  # too few points for a slope: each larger-delta ablation minus each smaller one
        for split in study.splits:
            for i, hi in enumerate(names):
                for lo in names[:i]:
                    if study.delta(hi) > study.delta(lo):
                        axis["pairs"].append({"ablation": hi, "versus": lo, "split": split, "generator_delta": study.delta(hi),
                                              "versus_delta": study.delta(lo), **compare(study, hi, lo, split, "rejected")})
        verdicts.adjust(axis["pairs"], ev.confidence)
    else:
        axis["note"] = (f"fewer than two ablations with the chosen generator of the largest delta and rejected "
                        f"generators of different measured capability ({', '.join(names) or 'none'})")
    return out


def sections(study: Study) -> dict:
    return {"dimensions": dimensions(study), "directions": directions(study), "family_axis": family(study),
            "preference_vs_imitation": imitation(study)}


# --- text and tables ------------------------------------------------------------------------------------

def _num(v: float, ci: list[float], fmt: str = "+.3f") -> str:
    return f"{v:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _verdict(t: dict) -> str:
    """p values, MDE and label of one test, with its flags."""
    holm = f", Holm {t['p_holm']:.3f} over {t['tests']}" if "p_holm" in t else ""
    flags = ""
    if t.get("borderline"):
        flags += (f" (borderline at {t['resamples']} resamples: the rule would read *{t['label_within_mc_error']}*)")
    if "label_before_holm" in t:
        flags += f" (*{t['label_before_holm']}* before Holm)"
    return f"p {t['p']:.3f}{holm}; detectable {t['mde']:.3f} → **{t['label']}**{flags}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _split(s: str) -> str:
    return SPLITS.get(s, s)


def render(res: dict) -> list[str]:
    lines = []
    d = res["dimensions"]
    lines += ["## Sample-level delta per dimension vs generator-level delta", "", f"Paper: {PAPER['dimensions']}", ""]
    if d["rows"]:
        by = {(r["ablation"], r["dimension"]): r for r in d["rows"]}
        lines += _table(["ablation", "generator Δ", *DIMENSION_KEYS],
                        [[n, f"{by[n, DIMENSION_KEYS[0]]['generator_delta']:+.3f}",
                          *(_num(by[n, k]["mean_delta"], [by[n, k]["lo"], by[n, k]["hi"]], "+.2f") for k in DIMENSION_KEYS)]
                         for n in d["ablations"]]) + [""]
    if d["slopes"]:
        lines.append(f"Slope of the mean sample-level delta on generator-level delta, per unit delta, with a paired "
                     f"bootstrap over training prompts (minimum effect {d['min_effect_points']:g} points on the 1–5 "
                     f"scale over the delta range: margin {d['margin']:.3f}; Holm over the {len(d['slopes'])} "
                     f"dimensions):")
        lines.append("")
        lines += _table(["dimension", "slope [95% CI]", "change over the range", "p", "Holm p", "detectable", "label"],
                        [[k, _num(s["slope"], s["ci"]), f"{s['change_over_range']:+.2f}", f"{s['p']:.3f}",
                          f"{s['p_holm']:.3f}", f"{s['mde']:.3f}",
                          f"**{s['label']}**" + (" (borderline)" if s["borderline"] else "")
                          + (f" (*{s['label_before_holm']}* before Holm)" if "label_before_holm" in s else "")]
                         for k, s in d["slopes"].items()])
        sc = [r for r in d["rows"] if r["dimension"] == "step_coherence"]
        lo, hi = min(sc, key=lambda r: r["generator_delta"]), max(sc, key=lambda r: r["generator_delta"])
        lines += ["", f"Here: step coherence delta {lo['mean_delta']:.2f} → {hi['mean_delta']:.2f} from generator "
                      f"delta {lo['generator_delta']:+.3f} to {hi['generator_delta']:+.3f}; step_coherence slope "
                      f"→ **{d['slopes']['step_coherence']['label']}**."]
    else:
        lines.append(f"*inconclusive*: {d.get('note', 'no data')}.")

    r = res["directions"]
    lines += ["", "## Correctness directions on the largest delta", "", f"Paper: {PAPER['directions']}", ""]
    if r["rows"]:
        lines += _table(["ablation", "direction", "split", "pairs", "gain over base [95% CI]", "test"],
                        [[t["ablation"], t["direction"], _split(t["split"]), str(t["pairs"]),
                          _num(t["difference"], t["ci"]), _verdict(t)] for t in r["rows"]])
        lines.append("")
        for split in sorted({t["split"] for t in r["rows"]}, key=list(SPLITS).index):
            ok = [t["direction"] for t in r["rows"] if t["split"] == split and t["label"] == verdicts.SUPPORTED]
            lines.append(f"- {_split(split)}: directions whose gain over base is supported (≥ {MIN_EFFECT:g}): "
                         f"{', '.join(ok) or 'none'} of {sum(t['split'] == split for t in r['rows'])}.")
    else:
        lines.append(f"*inconclusive*: {r['note']}.")

    f = res["family_axis"]
    lines += ["", "## Family axis at matched generator-level delta", "", f"Paper: {PAPER['family']}", ""]
    if f["rows"]:
        lines.append(f"Each ablation whose chosen generator is outside the {f['axis_family']} family minus the "
                     f"Q1-axis ablation of the nearest measured delta (accuracy difference = difference of gains):")
        lines.append("")
        lines += _table(["ablation (family)", "generator Δ", "matched (Δ)", "split", "gain", "matched gain",
                         "difference [95% CI]", "test"],
                        [[f"{t['ablation']} ({t['family']})", f"{t['generator_delta']:+.3f}",
                          f"{t['matched']} ({t['matched_delta']:+.3f})", _split(t["split"]), f"{t['gain']:+.3f}",
                          f"{t['matched_gain']:+.3f}", _num(t["difference"], t["ci"]), _verdict(t)] for t in f["rows"]])
    else:
        lines.append(f"*inconclusive*: {f['note']}.")

    im = res["preference_vs_imitation"]
    lines += ["", "## Preference signal vs imitation of the chosen traces", "", f"Paper: {PAPER['imitation']}", ""]
    tw = im["sft_twins"]
    if tw["rows"]:
        lines.append("(a) DPO minus its SFT twin (the same chosen traces imitated, no rejected side), at each Q1 delta:")
        lines.append("")
        lines += _table(["DPO", "SFT twin", "generator Δ", "split", "DPO − SFT [95% CI]", "test"],
                        [[t["ablation"], t["sft"], f"{t['generator_delta']:+.3f}", _split(t["split"]),
                          _num(t["difference"], t["ci"]), _verdict(t)] for t in tw["rows"]])
    else:
        lines.append(f"(a) *inconclusive*: {tw['note']}.")
    ax = im["rejected_axis"]
    lines.append("")
    if ax["splits"]:
        lines.append(f"(b) The rejected axis: one chosen generator, rejected generators of different capability "
                     f"({', '.join(ax['ablations'])}); the slope of the gain over base on generator-level delta, "
                     f"ablations as units (seeds averaged). A slope that clears the margin says the rejected side "
                     f"matters (preference); a flat one says the gain is imitation of the chosen traces.")
        for split, s in ax["splits"].items():
            gains = ", ".join(f"{n} {g:+.3f}" for n, g in s["gains"].items())
            lines.append(f"- {_split(split)}: slope {_num(s['slope'], s['ci'])} (t, {s['df']} df; margin "
                         f"{s['margin']:.3f}; gains {gains}); {_verdict(s)}: {READING[s['label']]}.")
    elif ax["pairs"]:
        lines.append(f"(b) The rejected axis: one chosen generator, rejected generators of different capability "
                     f"({', '.join(ax['ablations'])}); too few for a slope, so each larger-delta ablation minus each "
                     f"smaller one (a gain that grows with the delta says the rejected side matters):")
        lines.append("")
        lines += _table(["ablation (Δ)", "minus (Δ)", "split", "difference [95% CI]", "test"],
                        [[f"{t['ablation']} ({t['generator_delta']:+.3f})", f"{t['versus']} ({t['versus_delta']:+.3f})",
                          _split(t["split"]), _num(t["difference"], t["ci"]), _verdict(t)] for t in ax["pairs"]])
    else:
        lines.append(f"(b) *inconclusive*: {ax['note']}.")
    return lines


READING = {
    verdicts.SUPPORTED: "the gain grows with the delta at a fixed chosen generator: the rejected side carries a signal",
    verdicts.POSITIVE: "the gain grows with the delta at a fixed chosen generator, by less than the margin shown",
    verdicts.HARMFUL: "the gain falls as the rejected generator gets weaker",
    verdicts.NOT_SUPPORTED: "the gain does not grow with the delta at a fixed chosen generator: consistent with "
                            "imitation of the chosen traces",
    verdicts.INCONCLUSIVE: "the data cannot tell preference from imitation here",
}
"""What the rejected axis's slope label says about preference vs imitation."""

TABLE_SCHEMAS = {
    "sample_delta_by_dimension": {"ablation": pl.String, "generator_delta": pl.Float64, "dimension": pl.String,
                                  "mean_delta": pl.Float64, "lo": pl.Float64, "hi": pl.Float64},
    "direction_gains": {"ablation": pl.String, "direction": pl.String, "split": pl.String, "gain": pl.Float64,
                        "lo": pl.Float64, "hi": pl.Float64, "label": pl.String},
    "family_axis": {"ablation": pl.String, "matched": pl.String, "split": pl.String, "generator_delta": pl.Float64,
                    "matched_delta": pl.Float64, "difference": pl.Float64, "lo": pl.Float64, "hi": pl.Float64,
                    "label": pl.String},
    "dpo_minus_sft": {"ablation": pl.String, "sft": pl.String, "generator_delta": pl.Float64, "split": pl.String,
                      "difference": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "label": pl.String},
}
"""The columns of each of deltalab.report.ANALYSIS_TABLES."""


def tables(res: dict) -> dict[str, pl.DataFrame]:
    ci = lambda t: {"lo": t["ci"][0], "hi": t["ci"][1], "label": t["label"]}  # noqa: E731
    rows = {
        "sample_delta_by_dimension": res["dimensions"]["rows"],
        "direction_gains": [{"ablation": t["ablation"], "direction": t["direction"], "split": t["split"],
                             "gain": t["difference"], **ci(t)} for t in res["directions"]["rows"]],
        "family_axis": [{k: t[k] for k in ("ablation", "matched", "split", "generator_delta", "matched_delta", "difference")}
                        | ci(t) for t in res["family_axis"]["rows"]],
        "dpo_minus_sft": [{k: t[k] for k in ("ablation", "sft", "generator_delta", "split", "difference")} | ci(t)
                          for t in res["preference_vs_imitation"]["sft_twins"]["rows"]],
    }
    return {k: pl.DataFrame(rows[k], schema=TABLE_SCHEMAS[k]) for k in ANALYSIS_TABLES}
