"""The report's sections for the paper's analyses (deltalab.report.analyses), run for real on synthetic
studies with planted effects (tests/synthetic_study.py): a planted clear effect is supported, a planted
null is not, and a section without its ablations says so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from deltalab import verdicts
from deltalab.config import load_params
from deltalab.report import ANALYSIS_TABLES, TABLES
from deltalab.report.analyses import DIMENSION_KEYS, TABLE_SCHEMAS
from deltalab.stages import report
from deltalab.report.study import axis_family, generator_axis
from synthetic_study import AXIS, DIRECTIONS, write_study

ROOT = Path(__file__).resolve().parents[1]
AXIS_NAMES = list(AXIS)


def run_report(root: Path, **kw) -> tuple[dict, str]:
    params = load_params(write_study(root, **kw))
    report.run(params, root / "data/eval", root / "metrics/eval", root / "data/pairs", root / "metrics/pairs",
               root / "reports", root / "metrics/report.json", judgments_dir=root / "data/judgments")
    return json.loads((root / "metrics/report.json").read_text()), (root / "reports/summary.md").read_text()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("synthetic")
    return (root, *run_report(root))


def covers_zero(t: dict) -> bool:
    return t["ci"][0] <= 0 <= t["ci"][1]


def holm_family(tests: list[dict], n: int) -> None:
    assert len(tests) == n and all(t["tests"] == n and t["p_holm"] >= t["p"] for t in tests)


def test_q1_axis_keeps_one_family_and_dpo_only(study):
    root, rep, _ = study
    params = load_params(root / "params.yaml")
    assert axis_family(params) == "llama"
    # family_gpt2 (another family), the SFT twins, KTO and the rejected axis stay out of the Q1 slope
    assert generator_axis(params) == rep["q1_generator_delta"]["ablations"] == AXIS_NAMES


def test_dimension_slopes_find_the_planted_rise_and_the_flat_dimension(study):
    root, rep, text = study
    d = rep["dimensions"]
    assert d["ablations"] == AXIS_NAMES and d["min_effect_points"] == 0.25
    assert d["margin"] == pytest.approx(0.25 / 0.6, abs=1e-4)
    slopes = d["slopes"]
    assert sorted(slopes) == sorted(DIMENSION_KEYS)  # metrics files sort their keys
    assert slopes["step_coherence"]["label"] == verdicts.SUPPORTED and slopes["step_coherence"]["ci"][0] > d["margin"]
    assert slopes["signal_to_noise"]["label"] == verdicts.NOT_SUPPORTED  # planted flat
    holm_family(list(slopes.values()), 6)
    # the table's means are the pairs' means, inside their bootstrap CIs
    pairs = pl.read_parquet(root / "data/pairs/delta_l.parquet")
    row = next(r for r in d["rows"] if (r["ablation"], r["dimension"]) == ("delta_l", "step_coherence"))
    assert row["mean_delta"] == pytest.approx(pairs["delta_step_coherence"].cast(pl.Float64).mean(), abs=1e-4)
    assert all(r["lo"] <= r["mean_delta"] <= r["hi"] for r in d["rows"]) and len(d["rows"]) == 4 * 6
    table = pl.read_csv(root / "reports/plots/sample_delta_by_dimension.csv")
    assert table.height == 24 and {"lo", "hi"} <= set(table.columns)
    assert "## Sample-level delta per dimension vs generator-level delta" in text
    assert "step coherence about 0.96 → 2.08" in text and "margin 0.417" in text
    assert (root / "reports/sample_vs_generator_delta.png").read_bytes()[:4] == b"\x89PNG"


def test_directions_each_against_base(study):
    _, rep, text = study
    rows = rep["directions"]["rows"]
    assert rep["directions"]["largest"] == "delta_l"
    assert {r["ablation"] for r in rows} == set(DIRECTIONS) and all(r["pairs"] == 100 for r in rows)
    holm_family(rows, 4 * 2)
    label = {(r["direction"], r["split"]): r for r in rows}
    for split in ("eval_id", "eval_ood"):
        assert label["correct->wrong", split]["label"] == verdicts.SUPPORTED       # planted +8 points
        assert label["correct->correct", split]["label"] == verdicts.HARMFUL      # planted -6 points
        null = label["wrong->wrong", split]                                       # planted 0
        assert null["label"] in (verdicts.NOT_SUPPORTED, verdicts.INCONCLUSIVE) and covers_zero(null)
    assert "wrong→correct, correct→wrong and wrong→wrong pairs all beat the base" in text
    assert "directions whose gain over base is supported (≥ 0.01): correct->wrong" in text


def test_family_axis_at_matched_delta(study):
    root, rep, text = study
    f = rep["family_axis"]
    assert f["axis_family"] == "llama"
    rows = {r["split"]: r for r in f["rows"]}
    holm_family(f["rows"], 2)
    for r in rows.values():  # gen_g (0.52) is matched with delta_m's chosen gen_m (0.50)
        assert (r["ablation"], r["family"], r["matched"]) == ("family_gpt2", "gpt2", "delta_m")
        assert (r["generator_delta"], r["matched_delta"]) == (pytest.approx(0.42), pytest.approx(0.40))
        assert r["difference"] == pytest.approx(r["gain"] - r["matched_gain"], abs=2e-3)
    assert rows["eval_id"]["label"] in (verdicts.NOT_SUPPORTED, verdicts.INCONCLUSIVE) and covers_zero(rows["eval_id"])
    assert rows["eval_ood"]["label"] == verdicts.SUPPORTED  # planted +6 points out-of-domain
    assert "| family_gpt2 (gpt2) | +0.420 | delta_m (+0.400) |" in text
    assert pl.read_csv(root / "reports/plots/family_axis.csv").height == 2


def test_dpo_minus_its_sft_twin(study):
    _, rep, text = study
    rows = rep["preference_vs_imitation"]["sft_twins"]["rows"]
    assert [(r["ablation"], r["sft"]) for r in rows[::2]] == [(n, f"{n}_sft") for n in AXIS_NAMES]
    holm_family(rows, 4 * 2)
    for r in rows:
        if r["ablation"] == "delta_l":  # planted: DPO adds 6 points over imitation at the largest delta
            assert r["label"] == verdicts.SUPPORTED
        else:  # planted: imitation is all of it
            assert r["label"] != verdicts.SUPPORTED and covers_zero(r)
    assert "(a) DPO minus its SFT twin" in text


def test_rejected_axis_flat_reads_as_imitation(study):
    _, rep, text = study
    axis = rep["preference_vs_imitation"]["rejected_axis"]
    assert axis["ablations"] == ["rej_m", "rej_s", "delta_l"]  # by measured delta
    for s in axis["splits"].values():
        assert s["n"] == 3 and s["df"] == 1 and s["label"] == verdicts.NOT_SUPPORTED
        assert set(s["gains"]) == set(axis["ablations"])
    assert "consistent with imitation of the chosen traces" in text


def test_rejected_axis_that_grows_reads_as_preference(tmp_path):
    rep, text = run_report(tmp_path, names=["zero_delta", "delta_s", "delta_m", "delta_l", "rej_s", "rej_m"],
                           gains={"rej_m": (0.0, 0.0), "rej_s": (0.2, 0.2), "delta_l": (0.4, 0.4)}, bootstrap=200)
    for s in rep["preference_vs_imitation"]["rejected_axis"]["splits"].values():
        assert s["slope"] > 0.8 and s["label"] == verdicts.SUPPORTED
    assert "the rejected side carries a signal" in text


def test_two_rejected_generators_give_a_pairwise_difference(tmp_path):
    rep, _ = run_report(tmp_path, names=["zero_delta", "delta_s", "delta_l", "rej_s"],
                        gains={"rej_s": (0.0, 0.0), "delta_l": (0.1, 0.1)}, bootstrap=200)
    axis = rep["preference_vs_imitation"]["rejected_axis"]
    assert axis["splits"] == {} and len(axis["pairs"]) == 2
    assert all((p["ablation"], p["versus"]) == ("delta_l", "rej_s") and p["label"] == verdicts.SUPPORTED for p in axis["pairs"])
    holm_family(axis["pairs"], 2)


def test_sections_without_their_ablations_say_so_in_one_line(tmp_path):
    rep, text = run_report(tmp_path, names=AXIS_NAMES, bootstrap=200)
    assert rep["dimensions"]["slopes"]  # the axis alone still answers the per-dimension section
    lines = [line for line in text.splitlines() if "*inconclusive*: no" in line or "*inconclusive*: fewer" in line]
    assert any("no single-direction ablation on delta_l's generators" in line for line in lines)
    assert any("no all-pairs DPO ablation has a chosen generator outside the Q1 axis's family (llama)" in line for line in lines)
    assert any("no Q1-axis ablation has an SFT twin" in line for line in lines)
    assert any("(b) *inconclusive*: fewer than two ablations" in line for line in lines)
    for name in ANALYSIS_TABLES:  # declared outputs exist even when empty
        assert list(pl.read_csv(tmp_path / f"reports/plots/{name}.csv").columns) == list(TABLE_SCHEMAS[name])


def test_tables_are_declared_once():
    assert list(TABLE_SCHEMAS) == ANALYSIS_TABLES and set(ANALYSIS_TABLES) <= set(TABLES)


@pytest.mark.parametrize("config", ["configs/paper.yaml", "configs/smol.yaml", "tests/tiny/params.yaml", "params.yaml"])
def test_axis_of_every_shipped_config_is_one_family(config):
    params = load_params(ROOT / config)
    fam = axis_family(params)
    assert all(params.generators[params.ablations[n].chosen].family == fam for n in generator_axis(params))
