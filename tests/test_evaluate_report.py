"""evaluate and report on the tiny profile, and the bootstrap statistics behind their CIs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import build_tiny, deltalab, tree_hashes
from html_page import local, parse
from deltalab import verdicts
from deltalab.stats import MIN_EFFECT, difference, difference_draws, gain_slope, interval
from deltalab.stages.evaluate import bootstrap

ABLATIONS = ["delta", "zero", "top", "rand", "delta_kto", "delta_sft"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The whole tiny study, stage by stage through the CLI."""
    work = build_tiny(tmp_path_factory.mktemp("study"))
    # Judge reliability (not in the tiny profile, whose orchestration tests count jobs): a noisy second judge.
    with (work / "params.yaml").open("a") as f:
        f.write("reliability: {second_judge: {backend: noisy, noise: 1.0}, bootstrap: 200}\n")
    for name in ABLATIONS:
        deltalab("pairs", name, cwd=work)
        deltalab("train", name, cwd=work)
    deltalab("reliability", cwd=work)
    deltalab("evaluate", "base", cwd=work)
    for name in ABLATIONS:
        deltalab("evaluate", name, cwd=work)
    deltalab("report", cwd=work)
    return work


@pytest.mark.integration
def test_evaluation_summary(study):
    m = json.loads((study / "metrics/eval/delta.json").read_text())
    items = pl.read_parquet(study / "data/eval/delta.parquet")
    assert m["seeds"] == [0, 1] and items.height == 2 * (12 + 8)
    for split, n in (("eval_id", 12), ("eval_ood", 8)):
        block = m[split]
        rows = items.filter(pl.col("split") == split)
        assert block["prompts"] == n
        assert block["accuracy"] == pytest.approx(rows["correct"].mean(), abs=1e-4)
        assert block["ci"][0] <= block["accuracy"] <= block["ci"][1]
        base = json.loads((study / "metrics/eval/base.json").read_text())[split]
        assert block["gain"] == pytest.approx(block["accuracy"] - base["accuracy"], abs=2e-4)
        assert set(block["per_seed"]) == {"0", "1"}
        assert block["mean_length"] > 0 and block["step_accuracy"] is not None
    assert set(m["eval_id"]["families"]) == {"chain_sum"} and set(m["eval_ood"]["families"]) == {"chain_sum_long"}
    assert m["train"]["algorithm"] == "dpo" and "truncated" in m["train"]


@pytest.mark.integration
def test_evaluate_and_report_are_byte_identical_on_rerun(study, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(study, again)
    for name in ("base", "delta"):
        deltalab("evaluate", name, cwd=again)
    deltalab("report", cwd=again)
    a = tree_hashes(study, "data/eval", "metrics/eval", "reports")
    b = tree_hashes(again, "data/eval", "metrics/eval", "reports")
    assert len(a) > 10 and a == b
    assert (study / "metrics/report.json").read_bytes() == (again / "metrics/report.json").read_bytes()


@pytest.mark.integration
def test_report_has_the_judge_reliability_section(study):
    text = (study / "reports/summary.md").read_text()
    section = text[text.index("## Judge reliability"):]
    assert "Second judge: `noisy:sd=1,seed=0`" in section and "| top | top_k 0.5 by step_coherence |" in section
    got = json.loads((study / "metrics/report.json").read_text())["judge_reliability"]
    assert list(got) == ["top"] and got["top"]["label"] in ("stable", "unstable", "inconclusive")


@pytest.mark.integration
def test_report_has_every_ablation_and_labelled_answers(study):
    text = (study / "reports/summary.md").read_text()
    for name in ("base", *ABLATIONS):
        assert f"| {name} |" in text
    assert "## Q1" in text and "## Q2" in text and "Rule:" in text
    report = json.loads((study / "metrics/report.json").read_text())
    # tiny: both generators are too weak to differ, so there is no slope to fit
    assert report["q1_generator_delta"]["ablations"] == ["delta", "zero"]
    q2 = report["q2_sample_delta"]
    assert {(r["top"], tuple(r["random"]), r["all"], r["split"]) for r in q2} == {
        ("top", ("rand",), "delta", "eval_id"), ("top", ("rand",), "delta", "eval_ood")}
    assert all(r["vs_random"]["draws"] == 1 and r["vs_random"]["seeds"] == {"top": 2, "random": 2} for r in q2)
    assert "top-k (2 seeds) − random-k (1 draw × 2 seeds: rand " in text
    assert all(r["vs_random"]["label"] in verdicts.LABELS for r in q2)
    assert all(r["vs_random"]["tests"] == 2 and r["vs_random"]["p_holm"] >= r["vs_random"]["p"] for r in q2)
    assert "Holm" in text and "detectable" in text
    for png in ("gain_vs_generator_delta", "accuracy_vs_fraction", "sample_delta_distributions", "sample_vs_generator_delta"):
        assert (study / f"reports/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = pl.read_csv(study / "reports/plots/accuracy_vs_fraction_id.csv")
    assert curves["fraction"].to_list() == [0.5, 1.0]
    assert {"top_k_step_coherence", "random_k"} <= set(curves.columns)


@pytest.mark.integration
def test_report_page_holds_the_summary_every_plot_and_a_browser_per_ablation(study):
    """reports/index.html of the study run through the CLI (tests/test_html_report.py opens one in Chromium)."""
    page = parse((study / "reports/index.html").read_text())
    assert all(local(v) for _, _, v in page.urls)
    summary = (study / "reports/summary.md").read_text()
    assert all(line.lstrip("#").strip() in page.headings for line in summary.splitlines() if line.startswith("#"))
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    browsers = page.pair_data["ablations"]
    assert [b["name"] for b in browsers] == ABLATIONS
    for b in browsers:  # the tiny study's pair sets are small: each is embedded whole, and says so
        pairs = pl.read_parquet(study / f"data/pairs/{b['name']}.parquet")
        assert b["rows"] and b["total"] == b["embedded"] == pairs.height


@pytest.mark.integration
@pytest.mark.parametrize("args, words", [
    (["evaluate", "nope"], "unknown ablation 'nope'"),
    (["report", "--eval-dir", "missing"], "missing: no evaluation of 'base' (run `deltalab evaluate base` first)"),
])
def test_user_errors_are_one_line(study, args, words):
    proc = deltalab(*args, cwd=study, check=False)
    assert proc.returncode == 2 and words in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_evaluate_without_checkpoints_names_the_stage(study, tmp_path):
    proc = deltalab("evaluate", "delta", "--checkpoints", str(tmp_path / "none"), cwd=study, check=False)
    assert proc.returncode == 2 and "run `deltalab train delta` first" in proc.stderr


# --- statistics ------------------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_mean_and_narrows_with_more_items():
    rng = np.random.default_rng(0)
    small = (rng.random((2, 100)) < 0.3).astype(float)
    large = (rng.random((2, 2000)) < 0.3).astype(float)
    s, lg = bootstrap(small, None, 1000, 0.95, 1), bootstrap(large, None, 1000, 0.95, 1)
    assert s["ci"][0] < s["accuracy"] < s["ci"][1]
    assert lg["ci"][1] - lg["ci"][0] < (s["ci"][1] - s["ci"][0]) / 2


def test_paired_gain_ci_excludes_zero_for_a_clear_improvement():
    rng = np.random.default_rng(0)
    base = (rng.random(500) < 0.2).astype(float)
    better = np.stack([np.maximum(base, (rng.random(500) < 0.15)) for _ in range(2)])
    res = bootstrap(better, base, 1000, 0.95, 0)
    assert res["gain"] > 0.05 and res["gain_ci"][0] > 0


def test_slope_recovers_a_linear_gain():
    rng = np.random.default_rng(0)
    base = (rng.random((1, 1000)) < 0.2).astype(float)
    deltas = [0.0, 0.2, 0.4, 0.6]
    models = [np.stack([np.where(rng.random(1000) < 0.2 + 0.5 * d, 1.0, 0.0) for _ in range(2)]) for d in deltas]
    res = gain_slope(deltas, models, base, 500, 0.95, 0)
    assert 0.35 < res["slope"] < 0.65 and res["ci"][0] > 0
    flat = gain_slope(deltas, [models[0][:1]] * 4, base, 500, 0.95, 0)  # one seed: identical draws
    assert flat["slope"] == pytest.approx(0.0) and flat["ci"] == [pytest.approx(0.0), pytest.approx(0.0)]


def test_difference_is_the_percentile_ci_of_its_draws():
    rng = np.random.default_rng(1)
    a, b = (rng.random((2, 300)) < 0.4).astype(float), (rng.random((2, 300)) < 0.3).astype(float)
    draws = difference_draws(a, b, 400, 3)
    res = difference(a, b, 400, 0.95, 3)
    assert res["ci"] == list(interval(draws, 0.95))
    same = np.ones((1, 200))
    v = verdicts.stable_label(difference_draws(same, same, 200, 0), 0.95, MIN_EFFECT)
    assert v.label == verdicts.NOT_SUPPORTED  # no difference at all rules out a one-point benefit
