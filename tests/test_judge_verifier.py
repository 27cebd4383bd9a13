"""The verifier judge: exact five-dimension scores from step checks, one row per trace."""

from __future__ import annotations

import json

import polars as pl

from deltalab.config import DIMENSIONS
from deltalab.judge.verifier import score_trace
from deltalab.micro.traces import render_trace


def test_a_correct_trace_scores_five_everywhere():
    assert score_trace("38 - 57 + 10", render_trace("38 - 57 + 10")) == {d: 5 for d in DIMENSIONS}


def test_each_dimension_reacts_to_its_own_flaw():
    expr = "38 - 57 + 10"
    # miscomputed step 1, carried on faithfully: only numerical precision drops
    s = score_trace(expr, "S1:38-57=-18\nS2:-18+10=-8\nA:-8")
    assert s == {"factuality": 5, "strategy_coherence": 5, "step_coherence": 5, "numerical_precision": 3, "signal_to_noise": 5}
    # exact steps, but step 2 drops step 1's result: only step coherence drops
    s = score_trace(expr, "S1:38-57=-19\nS2:-18+10=-8\nA:-8")
    assert s["step_coherence"] == 3 and s["numerical_precision"] == 5 and s["factuality"] == 5
    # step 2 misquotes the problem's term: factuality drops
    s = score_trace(expr, "S1:38-57=-19\nS2:-19+11=-8\nA:-8")
    assert s["factuality"] == 3 and s["step_coherence"] == 5
    # filler lines: signal-to-noise drops; answer is not the last result: strategy drops
    s = score_trace(expr, "S1:38-57=-19\nhmm\nwait\nS2:-19+10=-9\nA:-10")
    assert s["signal_to_noise"] == 3 and s["strategy_coherence"] == 3
    # no answer line / wrong number of steps / nothing valid
    assert score_trace(expr, "S1:38-57=-19\nS2:-19+10=-9")["strategy_coherence"] == 2
    assert score_trace(expr, "S1:38-57=-19\nA:-19")["strategy_coherence"] == 4
    assert score_trace(expr, "no idea") == {d: 1 for d in DIMENSIONS}


def test_judge_stage_writes_one_row_per_trace(tiny):
    for name in ("weak", "strong"):
        traces = pl.read_parquet(tiny / f"data/traces/{name}.parquet")
        judged = pl.read_parquet(tiny / f"data/judgments/{name}.parquet")
        assert judged["trace_id"].to_list() == traces["trace_id"].to_list()
        assert set(judged["status"]) == {"ok"} and set(judged["judge"]) == {"verifier"}
        for d in DIMENSIONS:
            assert judged[d].is_between(1, 5).all() and (judged[d] == judged[f"verifier_{d}"]).all()
    metrics = json.loads((tiny / "metrics/judge.json").read_text())
    assert metrics["judge"] == "verifier" and metrics["requests"] == 0
    assert metrics["generators"]["weak"]["traces"] == 48
    assert json.loads((tiny / "metrics/judge_audit.json").read_text())["available"] is False
