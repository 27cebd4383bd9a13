"""deltalab.reliability: judge agreement, selection stability, the noisy judge."""

from __future__ import annotations

import json

import polars as pl
import pytest

from deltalab.config import DIMENSIONS, Selection
from deltalab.reliability import agreement, noisy_judge, selection_overlap


def judgments(rows: dict[str, list[int]], status: dict[str, str] | None = None) -> pl.DataFrame:
    """A judgment table: trace id -> the five scores (Int8, as the judge writes them)."""
    status = status or {}
    ids = list(rows)
    return pl.DataFrame({
        "trace_id": ids,
        "status": [status.get(t, "ok") for t in ids],
        **{d: pl.Series([rows[t][i] for t in ids], dtype=pl.Int8) for i, d in enumerate(DIMENSIONS)},
    })


VARIED = judgments({f"t{i}": [1 + (i * k + j) % 5 for j, k in enumerate((1, 2, 3, 4, 2))] for i in range(10)})


def test_identical_judges_agree_fully():
    got = agreement(VARIED, VARIED)
    assert got["n"] == 10
    assert list(got["scores"]) == sorted(got["scores"])
    for d in (*DIMENSIONS, "aggregate"):
        assert got["scores"][d] == {"exact": 1.0, "mad": 0.0, "n": 10, "spearman": 1.0}


def test_a_reversed_judge_ranks_backwards():
    reversed_ = VARIED.with_columns((6 - pl.col(d)).cast(pl.Int8).alias(d) for d in DIMENSIONS)
    got = agreement(VARIED, reversed_)["scores"]
    for d in DIMENSIONS:
        assert got[d]["spearman"] == -1.0
    # score 3 maps to itself: 2 of 10 traces per dimension
    assert got["factuality"]["exact"] == 0.2


def test_constant_column_gives_none_and_only_ok_rows_in_both_count():
    b = VARIED.with_columns(pl.lit(3, pl.Int8).alias("factuality"))
    b = b.with_columns(status=pl.when(pl.col("trace_id") == "t0").then(pl.lit("parse_error")).otherwise("status"))
    got = agreement(VARIED, b)
    assert got["n"] == 9
    assert got["scores"]["factuality"]["spearman"] is None
    assert got["scores"]["step_coherence"]["spearman"] == 1.0
    json.dumps(got, allow_nan=False)  # no NaN anywhere


def test_float_scores_are_rounded_half_up_for_exact_agreement():
    a = VARIED.with_columns(pl.col(f"{d}").cast(pl.Float64).alias(f"{d}_expected") for d in DIMENSIONS)
    b = a.with_columns(pl.col("factuality_expected") + 0.49)  # still rounds to the same integer
    got = agreement(a, b)["scores"]["factuality"]
    assert got["exact"] == 1.0 and got["mad"] == 0.49


def test_noisy_judge_is_seeded_per_trace_bounded_and_exact_at_zero_sd():
    big = judgments({f"t{i}": [1 + (i * 7 + j) % 5 for j in range(5)] for i in range(200)})
    noisy = noisy_judge(big, sd=1.5, seed=7)
    assert noisy.equals(noisy_judge(big, sd=1.5, seed=7))
    shuffled = noisy_judge(big.reverse(), sd=1.5, seed=7).reverse()
    assert shuffled.equals(noisy)
    assert not noisy.equals(noisy_judge(big, sd=1.5, seed=8))
    assert not noisy.equals(big)
    for d in DIMENSIONS:
        assert noisy[d].dtype == pl.Int8 and noisy[d].min() >= 1 and noisy[d].max() <= 5
    assert noisy_judge(big, sd=0.0, seed=7).equals(big)
    # a row that was not judged ok keeps its (null) scores
    t0 = pl.col("trace_id") == "t0"
    failed = big.with_columns(pl.when(t0).then(pl.lit("parse_error")).otherwise("status").alias("status"),
                              *[pl.when(t0).then(None).otherwise(pl.col(d)).alias(d) for d in DIMENSIONS])
    row = noisy_judge(failed, sd=1.5, seed=7).filter(pl.col("trace_id") == "t0")
    assert all(row[d].item() is None for d in DIMENSIONS)
    with pytest.raises(ValueError, match="sd"):
        noisy_judge(big, sd=-1.0, seed=7)


def pair_table(deltas: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame({"pair_id": list(deltas), "delta_aggregate": list(deltas.values())}).sort("pair_id")


def test_selection_overlap_jaccard_and_ties_at_the_cutoff():
    sel = Selection(method="top_k", count=3)
    # judge A: top 3 is p1, p2, p3 with no tie at the edge
    a = pair_table({"p1": 3.0, "p2": 2.0, "p3": 1.0, "p4": 0.0, "p5": -1.0, "p6": -2.0})
    # judge B: p1 first, then p4, p5, p6 tie at 1.0 for two places; ties go to the smaller pair_id: p4, p5
    b = pair_table({"p1": 3.0, "p2": 0.0, "p3": -1.0, "p4": 1.0, "p5": 1.0, "p6": 1.0})
    got = selection_overlap(a, b.reverse(), sel)  # row order does not matter
    assert got["selected_a"] == got["selected_b"] == 3
    assert (got["intersection"], got["union"]) == (1, 5)
    assert got["jaccard"] == 0.2
    assert got["ties_a"] == {"delta": 1.0, "tied": 1, "kept": 1}
    assert got["ties_b"] == {"delta": 1.0, "tied": 3, "kept": 2}
    assert "pair_id ascending" in got["tie_break"]
    same = selection_overlap(a, a, sel)
    assert same["jaccard"] == 1.0
    assert selection_overlap(a, b, Selection())["tie_break"] is None
    with pytest.raises(ValueError, match="same"):
        selection_overlap(a, b.head(5), sel)
