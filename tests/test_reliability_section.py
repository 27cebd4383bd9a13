"""Judge reliability, unit tier: the params section, the stage table, the bootstrap helpers, the
report section and its verdict rule (the stage runs in-process on a synthetic study)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from test_reliability_stage import layout
from deltalab import paths, pipeline
from deltalab.config import DIMENSIONS, Selection, load_params
from deltalab.errors import UserError
from deltalab.judge import spearman
from deltalab.pairing import select
from deltalab.reliability import _kept, _weighted_spearman
from deltalab.report import reliability_section as section
from deltalab.report.reliability_section import INCONCLUSIVE, NOT_AVAILABLE, STABLE, STABLE_JACCARD, UNSTABLE, verdict
from deltalab.stages import reliability as stage
from deltalab.stages import report

TINY = Path(__file__).parent / "tiny" / "params.yaml"


def write_params(tmp_path: Path, **sections) -> Path:
    data = yaml.safe_load(TINY.read_text()) | sections
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- the params section ---------------------------------------------------------------------------


def test_reliability_section_is_optional_and_validated(tmp_path):
    p = load_params(write_params(tmp_path))
    assert p.reliability is None
    p = load_params(write_params(tmp_path, reliability={"second_judge": {"backend": "noisy", "noise": 1.0}}))
    assert p.reliability.second_judge.noise == 1.0 and p.reliability.bootstrap == 1000
    assert p.reliability.second_judge.seed == 0 and p.reliability.confidence == 0.95
    llm = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", "scoring": "probability"}
    judge = load_params(write_params(tmp_path, reliability={"second_judge": llm})).reliability.second_judge.as_judge()
    assert (judge.backend, judge.model, judge.scoring) == ("openai", "m", "probability")


@pytest.mark.parametrize("rel, message", [
    ({"second_judge": {"backend": "noisy"}}, "reliability.second_judge: `noise` goes with backend noisy"),
    ({"second_judge": {"backend": "openai", "model": "m", "base_url": "http://x", "noise": 1}},
     "reliability.second_judge: `noise` goes with backend noisy"),
    ({"second_judge": {"backend": "noisy", "noise": -1}}, "reliability.second_judge.noise: Input should be greater"),
    ({"second_judge": {"backend": "noisy", "noise": 1, "sd": 1}}, "reliability.second_judge.sd: Extra inputs"),
    ({"second_judge": {"backend": "noisy", "noise": 1}, "bootstraps": 5}, "reliability.bootstraps: Extra inputs"),
    ({"second_judge": {"backend": "transformers"}}, "the transformers judge needs `model`"),
    ({"second_judge": {"backend": "verifier"}}, "reliability.second_judge.backend: the verifier is already the judge"),
    ({}, "reliability.second_judge: Field required"),
])
def test_reliability_section_errors_name_the_key(tmp_path, rel, message):
    with pytest.raises(UserError, match=None) as err:
        load_params(write_params(tmp_path, reliability=rel))
    assert message in str(err.value)


# --- the stage table --------------------------------------------------------------------------------


def test_stage_and_report_input_only_when_configured(tmp_path):
    plain = load_params(write_params(tmp_path))
    stage_ = pipeline.BY_NAME["reliability"]
    assert stage_.keys(plain) == []
    assert paths.RELIABILITY_METRICS not in pipeline.BY_NAME["report"].deps(plain, "")
    assert paths.RELIABILITY_METRICS not in pipeline.outputs(plain)
    p = load_params(write_params(tmp_path, reliability={"second_judge": {"backend": "noisy", "noise": 1.0}}))
    assert stage_.keys(p) == [""]
    assert paths.RELIABILITY_METRICS in pipeline.BY_NAME["report"].deps(p, "")
    # the tiny study ranks one ablation (top): its pairs and definition are inputs
    assert "data/pairs/top.parquet" in stage_.deps(p, "") and "data/pairs/rand.parquet" not in stage_.deps(p, "")
    assert stage_.params(p, "") == ["reliability", "ablations.top"]
    assert {paths.RELIABILITY_METRICS, "data/reliability/judgments/weak.parquet"} <= set(pipeline.outputs(p))
    assert pipeline.default("reliability", "--out-dir") == Path(paths.RELIABILITY_JUDGMENTS_DIR)


# --- bootstrap helpers ------------------------------------------------------------------------------


def test_weighted_spearman_is_spearman_of_the_expanded_sample():
    rng = np.random.default_rng(1)
    x, y = rng.integers(1, 6, 40).astype(float), rng.integers(1, 6, 40).astype(float)
    w = np.bincount(rng.integers(0, 40, 40), minlength=40).astype(float)
    expanded = np.repeat(np.arange(40), w.astype(int))
    want = spearman(pl.Series(x[expanded]), pl.Series(y[expanded]))
    assert _weighted_spearman(x, y, w) == pytest.approx(want, abs=1e-4)
    assert _weighted_spearman(np.full(40, 3.0), y, w) is None


@pytest.mark.parametrize("method", ["top_k", "bottom_k"])
def test_kept_is_pairing_select(method):
    deltas = [1.0, 0.5, 1.0, -1.0, 0.5, 0.5, 2.0, 0.0]
    pairs = pl.DataFrame({"pair_id": [f"p{i}" for i in range(8)], "delta_aggregate": deltas})
    sel = Selection(method=method, count=4)
    kept = _kept(np.array(deltas), 4, method == "top_k")
    assert pairs.filter(pl.Series(kept))["pair_id"].to_list() == select(pairs, sel)["pair_id"].to_list()


# --- the verdict rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ci, label", [
    ([STABLE_JACCARD, 0.9], STABLE),           # lo == T: stable
    ([0.8, 1.0], STABLE),
    ([0.1, STABLE_JACCARD - 1e-9], UNSTABLE),  # hi just below T
    ([0.1, STABLE_JACCARD], INCONCLUSIVE),     # hi == T: not unstable
    ([0.3, 0.7], INCONCLUSIVE),
    ([STABLE_JACCARD - 1e-9, 0.9], INCONCLUSIVE),
])
def test_stability_rule_at_its_boundaries(ci, label):
    assert verdict(ci, [0.0, 0.0]) == {"label": label, "borderline": False}


def test_borderline_flag_and_missing_ci():
    assert verdict([0.52, 0.9], [0.02, 0.01]) == {"label": STABLE, "borderline": True}   # lo within 2 SE of T
    assert verdict([0.52, 0.9], [0.005, 0.01]) == {"label": STABLE, "borderline": False}
    assert verdict([0.1, 0.49], [0.0, 0.01]) == {"label": UNSTABLE, "borderline": True}
    assert verdict([0.3, 0.6], [0.01, 0.01]) == {"label": INCONCLUSIVE, "borderline": False}
    assert verdict(None, None) == {"label": NOT_AVAILABLE, "borderline": False}


# --- the stage in-process and the report section --------------------------------------------------------


def run_stage(root: Path) -> dict:
    p = load_params(root / "params.yaml")
    return stage.run(p, root / paths.PROMPTS["train"], root / paths.TRACES_DIR, root / paths.JUDGMENTS_DIR,
                     root / paths.PAIRS_DIR, root / paths.RELIABILITY_JUDGMENTS_DIR, root / paths.RELIABILITY_METRICS)


def test_report_section_from_the_stage_metrics(tmp_path):
    root = layout(tmp_path / "study", {"backend": "noisy", "noise": 0.7, "seed": 3})
    metrics = run_stage(root)
    assert json.loads((root / paths.RELIABILITY_METRICS).read_text()) == metrics
    text = "\n".join(section.lines(metrics))
    assert text.startswith("## Judge reliability")
    assert "Second judge: `noisy:sd=0.7,seed=3`, the first judge's scores plus independent Gaussian noise" in text
    assert "| aggregate |" in text and "| step_coherence |" in text
    got = section.verdicts(metrics)
    assert sorted(got) == ["bottom_step", "top"]
    for name, v in got.items():
        assert v["label"] in (STABLE, UNSTABLE, INCONCLUSIVE)
        assert v == {"jaccard": metrics["selections"][name]["jaccard"], "ci": metrics["selections"][name]["jaccard_ci"]["ci"],
                     **verdict(metrics["selections"][name]["jaccard_ci"]["ci"], metrics["selections"][name]["jaccard_ci"]["se"])}
        assert f"| {name} |" in text and v["label"] in text
    assert "Ties at the cut-off are broken by pair_id ascending" in text
    assert f"at or above {STABLE_JACCARD:g}" in text and "Paper: " in text


def test_a_second_judge_that_scores_no_pair_makes_the_selection_not_available(tmp_path):
    root = layout(tmp_path / "study", {"backend": "noisy", "noise": 0.7})
    # a second judge that failed on every trace of the weak generator: no candidate pair has both sides
    p = load_params(root / "params.yaml")
    b = pl.read_parquet(root / "data/judgments/strong.parquet").with_columns(status=pl.lit("parse_error"))
    cands = stage._candidates(p, "top", root / paths.TRACES_DIR, root / paths.JUDGMENTS_DIR, root / paths.PAIRS_DIR)
    got = stage.stability(p, "top", cands, b)
    assert got["available"] is False and got["candidates_unscored"] == cands.height
    line = next(x for x in section.lines({**run_stage(root), "selections": {"top": got}}) if x.startswith("| top |"))
    assert NOT_AVAILABLE in line


def test_report_needs_the_metrics_when_configured(tmp_path):
    p = load_params(write_params(tmp_path, reliability={"second_judge": {"backend": "noisy", "noise": 1.0}}))
    with pytest.raises(UserError, match="reliability.json: judge reliability metrics not found"):
        report.run(p, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path / "reports", tmp_path / "report.json",
                   tmp_path / "metrics/reliability.json")


def test_verifier_second_judge_scores_only_step_checkable_traces(tmp_path):
    """As on configs/smol.yaml: the verifier scores one generator's traces (a micro model's), not the other's."""
    # the first judge is an LLM (its judgments here are written by the test)
    root = layout(tmp_path / "study", {"backend": "verifier"}, judge={"backend": "transformers", "model": "fake/judge"})
    weak = root / "data/judgments/weak.parquet"
    table = pl.read_parquet(weak)
    table.with_columns(pl.col(d).fill_null(1).alias(f"verifier_{d}") for d in DIMENSIONS).write_parquet(weak)
    metrics = run_stage(root)
    assert metrics["second_judge"]["label"] == "verifier"
    assert metrics["traces"]["second_ok"] == table.height  # weak's traces only, all of them
    assert metrics["agreement"]["n"] == table.height - 1  # the one the first judge failed on is out
    assert not metrics["selections"]["top"]["available"]  # strong's side has no verifier scores
    second = pl.read_parquet(root / "data/reliability/judgments/strong.parquet")
    assert set(second["status"]) == {"unscorable"}
    text = "\n".join(section.lines(metrics))
    assert "| top |" in text and NOT_AVAILABLE in text
