"""report: the study's answers from the evaluations — `reports/summary.md`, plots, `metrics/report.json`,
and the same as one self-contained page with a pair browser per ablation, `reports/index.html`.

Which ablations answer which question is read from params:
- generator-level axis: DPO ablations on all pairs (no selection, no direction filter) whose chosen
  generator is of the majority family and that share a rejected generator (the largest such group):
  OOD and ID gain over base against the measured generator-level delta, with the slope's bootstrap CI.
- sample-level axis: each `top_k` ablation against every `random_k` ablation with the same generators,
  algorithm and size (the random draws: they differ only in `selection.seed`), pooled, and against the
  all-pairs ablation as fraction 1.0.
- the paper's other analyses (per-dimension delta, directions, family, preference vs imitation):
  deltalab.report.analyses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from deltalab.config import DIMENSIONS, Ablation, Params
from deltalab.io import atomic_path, derive_seed, rounded, write_json
from deltalab.progress import summary
from deltalab import paths, verdicts
from deltalab.report import SPLITS, SUFFIX, column
from deltalab.report.study import DELTA_COLUMNS, Study, generator_axis, sample_axis, unit_gain_slope
from deltalab.stats import MIN_EFFECT, Resampler, difference, difference_draws, gain_slope, interval

def question_one(study: Study) -> dict:
    """Q1: the slope of the gain over base on generator-level delta, with the ablations (their seeds
    averaged) as the units, labelled against one point of accuracy over the delta range. The
    bootstrap slope CI (ablations fixed: evaluation noise only) is kept beside it."""
    ev = study.params.evaluate
    names = generator_axis(study.params)
    out = {"ablations": names, "splits": {}}
    deltas = [study.delta(n) for n in names]
    if len(set(deltas)) < 3:
        out["note"] = ("fewer than three all-pairs DPO ablations with different measured generator-level deltas "
                       "share a rejected generator: no slope with the ablations as units")
        return out
    for split in study.splits:
        units = unit_gain_slope(study, names, split)
        noise = gain_slope(deltas, [study.m(n, split) for n in names], study.m("base", split), ev.bootstrap,
                           ev.confidence, derive_seed(ev.seed, "slope", split))
        gains = [study.metrics[n][split]["gain"] for n in names]
        out["splits"][split] = {
            **units, "evaluation_noise_ci": noise["ci"],
            "gains": {"min": min(gains), "max": max(gains),
                      "above_base": [n for n in names if study.metrics[n][split]["gain_ci"][0] > 0]},
        }
    return out


def question_two(study: Study) -> list[dict]:
    """Q2: top-k minus random-k at each size, per split. The random-k side pools every random draw of
    that size (D draws x S seeds each; one draw: its seeds alone): the bootstrap resamples the prompts
    (paired), then the draws with replacement and the seeds within each drawn draw, so the CI holds
    subset variance as well as seed and prompt noise. Each entry records D and S (`draws`, `seeds`)
    and each draw's accuracy. Each difference is labelled by the rule; a label within Monte Carlo error
    is resampled with up to verdicts.MAX_RESAMPLING times the rounds, and if it stays there it is inconclusive
    (flagged). The one-sided bootstrap p is Holm-adjusted across the family of these comparisons, and
    a positive label whose adjusted p does not clear 1 - confidence is inconclusive."""
    ev = study.params.evaluate
    rows = []
    for row in sample_axis(study.params):
        for split in study.splits:
            entry = {**row, "split": split}
            top = study.m(row["top"], split)
            if row["random"]:
                rand, seed = study.pooled(row["random"], split), derive_seed(ev.seed, "topk", row["top"], split)
                n_draws = len(row["random"])
                v, draws, rounds = verdicts.decide(lambda n: difference_draws(top, rand, n, seed, n_draws),
                                                   ev.bootstrap, ev.confidence, MIN_EFFECT)
                entry["vs_random"] = {
                    "difference": float(top.mean() - rand.mean()), **verdicts.entry(v, draws, rounds, ev.confidence),
                    "draws": n_draws, "seeds": {"top": top.shape[0], "random": rand.shape[0] // n_draws},
                    "draw_accuracy": {n: float(study.m(n, split).mean()) for n in row["random"]}}
            if row["all"]:
                entry["vs_all"] = difference(top, study.m(row["all"], split), ev.bootstrap, ev.confidence,
                                             derive_seed(ev.seed, "all", row["top"], split))
            rows.append(entry)
    verdicts.adjust([r["vs_random"] for r in rows if "vs_random" in r], ev.confidence)
    return rows


def _ci(block: dict, key: str = "accuracy", ci: str = "ci") -> str:
    return f"{block[key]:.3f} [{block[ci][0]:.3f}, {block[ci][1]:.3f}]"


def _signed(block: dict, key: str, ci: str) -> str:
    return f"{block[key]:+.3f} [{block[ci][0]:+.3f}, {block[ci][1]:+.3f}]"


def _selection(a: Ablation) -> str:
    s = a.selection
    if s.method == "all":
        text = "all"
    elif s.method == "threshold":
        text = f"{s.by} delta >= {s.threshold}"
    else:
        size = f"{s.fraction:.0%}" if s.fraction else str(s.count)
        text = f"{s.method.replace('_k', '')} {size}" + (f" by {s.by}" if s.method != "random_k" else "")
    return text + (f", {'/'.join(a.directions)}" if a.directions else "")


def table(study: Study) -> list[str]:
    split_heads = " | ".join(f"{SPLITS[s]} acc [95% CI] | {SPLITS[s]} gain [95% CI]" for s in study.splits)
    lines = [f"| ablation | algorithm | chosen → rejected | selection | generator Δ | pairs | mean sample Δ | {split_heads} |",
             "|" + "---|" * (7 + 2 * len(study.splits))]
    base = study.metrics["base"]
    cells = " | ".join(f"{_ci(base[s])} | –" for s in study.splits)
    lines.append(f"| base | – | – | – | – | – | – | {cells} |")
    for name, a in study.params.ablations.items():
        pm = study.pairs_metrics[name]
        ev = study.metrics[name]
        mean_delta = pm.get("deltas", {}).get("delta_aggregate", {}).get("mean")
        cells = " | ".join(f"{_ci(ev[s])} | {_signed(ev[s], 'gain', 'gain_ci')}" for s in study.splits)
        lines.append(f"| {name} | {a.algorithm} | {a.chosen} → {a.rejected} | {_selection(a)} | "
                     f"{study.delta(name):+.3f} | {pm.get('pairs', '?')} | "
                     f"{'' if mean_delta is None else f'{mean_delta:+.2f}'} | {cells} |")
    return lines


def _count(k: int, word: str) -> str:
    return f"{k} {word}{'s' if k != 1 else ''}"


def statements(q1: dict, q2: list[dict], rule: str) -> list[str]:
    lines = ["## Q1: does a larger generator-level delta improve out-of-domain reasoning?", ""]
    if not q1["splits"]:
        lines.append(f"*inconclusive*: {q1.get('note', 'no data')}.")
    for split, res in q1["splits"].items():
        g = res["gains"]
        above = ", ".join(g["above_base"]) or "none"
        caveat = " (every gain is ≤ 0: a larger delta harms less, it does not help)" if g["max"] <= 0 else ""
        noise = res["evaluation_noise_ci"]
        lines.append(f"- {SPLITS[split]}: slope of the gain over base against generator-level delta "
                     f"{res['slope']:+.3f} [{res['ci'][0]:+.3f}, {res['ci'][1]:+.3f}] per unit delta, the "
                     f"{res['n']} ablations ({', '.join(q1['ablations'])}) as units, seeds averaged (t, {res['df']} df; "
                     f"one-sided p {res['p']:.3f}; detectable slope {res['mde']:.3f}; margin {res['margin']:.3f}) "
                     f"→ **{res['label']}**. With the ablations held fixed (evaluation noise only) the CI would be "
                     f"[{noise[0]:+.3f}, {noise[1]:+.3f}]. Gains range {g['min']:+.3f} … {g['max']:+.3f}; "
                     f"above base with 95% confidence: {above}{caveat}.")
    lines += ["", "## Q2: does selecting pairs by sample-level delta make training data-efficient?", ""]
    if not q2:
        lines.append("*inconclusive*: no top_k ablation is defined.")
    for row in q2:
        size = f"{row['fraction']:.0%}" if row["fraction"] else f"{row['count']} pairs"
        parts = []
        if "vs_random" in row:
            d = row["vs_random"]
            flags = [f" (borderline: at {d['resamples']} resamples a CI bound still lies within Monte Carlo error of "
                     f"a threshold, where the rule would read *{d['label_within_mc_error']}*)"] if d["borderline"] else []
            if "label_before_holm" in d:
                flags.append(f" (*{d['label_before_holm']}* before the Holm adjustment)")
            accs = ", ".join(f"{n} {acc:.3f}" for n, acc in d["draw_accuracy"].items())
            sides = (f"top-k ({_count(d['seeds']['top'], 'seed')}) − random-k ({_count(d['draws'], 'draw')} × "
                     f"{_count(d['seeds']['random'], 'seed')}: {accs})")
            parts.append(f"{sides} {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] "
                         f"(p {d['p']:.3f}, Holm {d['p_holm']:.3f} over {d['tests']}; detectable {d['mde']:.3f}) "
                         f"→ **{d['label']}**" + "".join(flags))
        else:
            parts.append("no random-k control defined → *inconclusive*")
        if "vs_all" in row:
            d = row["vs_all"]
            parts.append(f"top-k − all pairs {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
        lines.append(f"- {SPLITS[row['split']]}, top {size} by {row['by']} ({row['top']}): " + "; ".join(parts) + ".")
    lines += ["", f"Rule: {rule}", "",
              "Borderline: a CI bound within Monte Carlo error of 0 or m even after resampling up to "
              f"{verdicts.MAX_RESAMPLING}x; such a label is not decided and reads inconclusive; a benefit label is always computed at "
              f"{verdicts.MAX_RESAMPLING}x, so the p that "
              "Holm adjusts has its smallest Monte Carlo error. "
              "p: one-sided bootstrap p of a benefit; Q2's are Holm-adjusted across its comparisons, and a positive "
              "label whose adjusted p is not below 1 − confidence is reported inconclusive. Detectable: the "
              "smallest effect the comparison would detect with 80% power at its standard error. Random-k: "
              "every draw of that size (ablations differing only in selection.seed), pooled; the bootstrap "
              "resamples the draws, then the seeds within each, so the variance between random subsets is "
              "in the CI."]
    return lines


def _curve_point(study: Study, names: list[str], split: str) -> dict:
    """One point of the accuracy-vs-fraction curves: one ablation's evaluation as it is; several
    random-k draws' mean accuracy, with the CI of the pooled draws (resampled as in question_two)."""
    if len(names) == 1:
        block = study.metrics[names[0]][split]
        return {"ablation": names[0], "accuracy": block["accuracy"], "lo": block["ci"][0], "hi": block["ci"][1]}
    ev = study.params.evaluate
    pooled = study.pooled(names, split)
    r = Resampler(pooled.shape[1], ev.bootstrap, derive_seed(ev.seed, "random_k", split, *names))
    lo, hi = interval(r.means(pooled, len(names)), ev.confidence)
    accuracy = float(np.mean([study.m(n, split).mean() for n in names]))
    return {"ablation": "+".join(names), "accuracy": accuracy, "lo": lo, "hi": hi}


def plot_data(study: Study, q2: list[dict]) -> dict[str, pl.DataFrame]:
    names = generator_axis(study.params)
    points = [
        {"ablation": n, "generator_delta": study.delta(n), "split": s, "gain": study.metrics[n][s]["gain"],
         "lo": study.metrics[n][s]["gain_ci"][0], "hi": study.metrics[n][s]["gain_ci"][1]}
        for n in names for s in study.splits
    ]
    curves = []
    seen = set()
    for row in q2:
        s = row["split"]
        if row["fraction"] is None:
            continue
        members = [(f"top-k by {row['by']}", [row["top"]], row["fraction"])]
        if row["random"]:
            members.append(("random-k", row["random"], row["fraction"]))
        if row["all"]:
            members += [(f"top-k by {row['by']}", [row["all"]], 1.0), ("random-k", [row["all"]], 1.0)]
        for curve, abls, frac in members:
            if (curve, frac, s) in seen:
                continue
            seen.add((curve, frac, s))
            curves.append({"curve": curve, "fraction": frac, "split": s, **_curve_point(study, abls, s)})
    hist = []
    for n in names:
        path = study.pairs_dir / f"{n}.parquet"
        deltas = pl.read_parquet(path, columns=DELTA_COLUMNS)
        for col in DELTA_COLUMNS:
            dim = col.removeprefix("delta_")
            counts = deltas[col].round(2).value_counts().sort(col)
            hist += [{"ablation": n, "dimension": dim, "delta": float(v), "count": int(c)} for v, c in counts.iter_rows()]
    schema_points = {"ablation": pl.String, "generator_delta": pl.Float64, "split": pl.String, "gain": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
    schema_curves = {"curve": pl.String, "fraction": pl.Float64, "split": pl.String, "ablation": pl.String, "accuracy": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
    return {
        "gain_vs_generator_delta": pl.DataFrame(points, schema=schema_points),
        "accuracy_vs_fraction": pl.DataFrame(curves, schema=schema_curves).sort("curve", "split", "fraction"),
        "sample_delta_distribution": pl.DataFrame(hist, schema={"ablation": pl.String, "dimension": pl.String, "delta": pl.Float64, "count": pl.Int64}),
    }


def dvc_tables(data: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Tables for `dvc plots` with fixed column names, so dvc.yaml can declare them once."""
    pts = data["gain_vs_generator_delta"]
    gains = pts.pivot("split", index=["ablation", "generator_delta"], values="gain").sort("generator_delta", "ablation")
    tables = {"gain_vs_generator_delta": gains.select(
        "ablation", "generator_delta",
        *(pl.col(s).alias(column(s)) if s in gains.columns else pl.lit(None, pl.Float64).alias(column(s))
          for s in SPLITS),
    )}
    curves = data["accuracy_vs_fraction"].with_columns(
        pl.col("curve").str.replace("top-k by ", "top_k_").str.replace("random-k", "random_k"))
    for split, suffix in SUFFIX.items():
        c = curves.filter(pl.col("split") == split)
        wide = pl.DataFrame({"fraction": sorted(set(c["fraction"].to_list()))}, schema={"fraction": pl.Float64})
        for col in [*(f"top_k_{d}" for d in (*DIMENSIONS, "aggregate")), "random_k"]:
            part = c.filter(pl.col("curve") == col).select("fraction", pl.col("accuracy").alias(col))
            wide = wide.join(part, on="fraction", how="left")
        tables[f"accuracy_vs_fraction_{suffix}"] = wide
    tables["sample_vs_generator_delta"] = data["sample_vs_generator_delta"].pivot(
        "dimension", index=["ablation", "generator_delta"], values="mean_delta").sort("generator_delta", "ablation")
    hist = data["sample_delta_distribution"]
    for dim in [*DIMENSIONS, "aggregate"]:
        d = hist.filter(pl.col("dimension") == dim)
        tables[f"delta_distribution_{dim}"] = d.select(
            (pl.col("ablation") + pl.lit(" Δ") + pl.col("delta").map_elements(lambda v: f"{v:+g}", return_dtype=pl.String)).alias("bin"),
            "count")
    return tables


def run(params: Params, eval_dir: Path, eval_metrics: Path, pairs_dir: Path, pairs_metrics: Path, out_dir: Path,
        metrics: Path, reliability: Path | None = None, judgments_dir: Path | None = None) -> None:
    # Imported here: matplotlib costs ~1 s of start-up, which the pure parts (and tests) skip.
    from deltalab.report import analyses, browser, html, plots, reliability_section

    # Read first: a missing input stops the report before anything is written.
    rel = reliability_section.load(reliability or Path(paths.RELIABILITY_METRICS)) if params.reliability else None

    study = Study(params, eval_dir, eval_metrics, pairs_dir, pairs_metrics)
    pairs = browser.load(params, pairs_dir, judgments_dir or Path(paths.JUDGMENTS_DIR))
    q1, q2 = question_one(study), question_two(study)
    extra = analyses.sections(study)
    rule = verdicts.RULE.format(conf=params.evaluate.confidence, m=MIN_EFFECT)
    data = plot_data(study, q2)
    extra_tables = analyses.tables(extra)
    data["sample_vs_generator_delta"] = extra_tables["sample_delta_by_dimension"]  # the means with their CIs
    for key, df in {**dvc_tables(data), **extra_tables}.items():
        plots.write_csv(df, out_dir / "plots" / f"{key}.csv")
    drawn = []  # the PNGs of this run: the page embeds them (never a stale one of an earlier run)
    if data["gain_vs_generator_delta"].height:
        drawn += [
            plots.gain_vs_delta(data["gain_vs_generator_delta"], out_dir / "gain_vs_generator_delta.png"),
            plots.delta_distributions(data["sample_delta_distribution"], [*DIMENSIONS, "aggregate"], out_dir / "sample_delta_distributions.png"),
            plots.sample_vs_generator(data["sample_vs_generator_delta"], out_dir / "sample_vs_generator_delta.png"),
        ]
    if data["accuracy_vs_fraction"].height:
        base = {s: study.metrics["base"][s]["accuracy"] for s in study.splits}
        drawn.append(plots.fraction_curves(data["accuracy_vs_fraction"], base, out_dir / "accuracy_vs_fraction.png"))
    lines = ["# deltalab study summary", "",
             f"Student: `{params.student.model_path if params.student else '?'}`; evaluation: greedy, "
             f"{params.evaluate.confidence:.0%} bootstrap CIs over prompts and training seeds "
             f"({params.evaluate.bootstrap} resamples). Gain = accuracy − base accuracy on the same prompts.", "",
             *table(study), "", *statements(q1, q2, rule), "", *analyses.render(extra), "",
             *(reliability_section.lines(rel) if rel else []),
             "## Plots", "",
             "![gain vs generator delta](gain_vs_generator_delta.png)", "",
             "![accuracy vs fraction](accuracy_vs_fraction.png)", "",
             "![sample-level delta distributions](sample_delta_distributions.png)", "",
             "![sample vs generator delta](sample_vs_generator_delta.png)", ""]
    text = "\n".join(lines)
    with atomic_path(out_dir / "summary.md", ".md") as tmp:
        tmp.write_text(text)
    html.write(out_dir / Path(paths.REPORT_HTML).name, text, drawn, pairs)
    answers = {"q1_generator_delta": q1, "q2_sample_delta": q2, **extra, "rule": rule}
    if rel:  # only then: a study without the stage keeps its report.json
        answers["judge_reliability"] = reliability_section.verdicts(rel)
    write_json(rounded(answers), metrics)
    labels = [r["label"] for r in q1["splits"].values()]
    summary(f"report: wrote {out_dir / 'summary.md'}, {out_dir / Path(paths.REPORT_HTML).name} (pair browser: "
            f"{sum(a['embedded'] for a in pairs['ablations'])} pairs of {len(pairs['ablations'])} ablations), "
            f"plots and plot tables in {out_dir} and {metrics} "
            f"(Q1 {'/'.join(labels) or 'n/a'}; Q2 {len(q2)} comparisons)")
