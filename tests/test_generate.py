"""generate: verified traces, their schema, and byte-identical reruns."""

from __future__ import annotations

import json

import polars as pl
import yaml

from conftest import TINY, build_tiny, tree_hashes
from deltalab.micro.traces import render_trace
from deltalab.stages.generate import SCHEMA, verdict
from deltalab.verify import score, step_answer


def test_traces_schema_and_verdicts(tiny):
    prompts = pl.read_parquet(tiny / "data/prompts/train.parquet")
    for name in ("weak", "strong"):
        sampled = pl.read_parquet(tiny / f"data/traces/{name}.parquet")
        greedy = pl.read_parquet(tiny / f"data/traces/{name}.greedy.parquet")
        assert dict(sampled.schema) == SCHEMA and dict(greedy.schema) == SCHEMA
        assert sampled.height == 2 * prompts.height and greedy.height == prompts.height
        assert set(sampled["prompt_id"]) == set(prompts["prompt_id"])
        assert sampled["trace_id"].n_unique() == sampled.height
        assert sorted(set(sampled["sample_index"])) == [0, 1] and set(greedy["decoding"]) == {"greedy"}
        assert set(sampled["generator"]) == {name} and sampled["model_revision"].n_unique() == 1
        assert (sampled["correct"] == (sampled["score"] >= 1.0)).all()
        assert sampled["step_correct"].null_count() == 0 and sampled["step_accuracy"].is_between(0, 1).all()
        assert set(sampled["finish_reason"]) <= {"stop", "length"}
        assert (sampled["completion_tokens"] <= 24).all()
        # every row has its own seed stream
        assert sampled["seed"].n_unique() == sampled.height


def test_generator_metrics_file(tiny):
    metrics = json.loads((tiny / "metrics/generators.json").read_text())
    assert set(metrics["generators"]) == {"weak", "strong"}
    acc = {n: m["accuracy_greedy"] for n, m in metrics["generators"].items()}
    assert metrics["spread"] == round(max(acc.values()) - min(acc.values()), 4)
    assert metrics["increasing_in_params_order"] == (acc["weak"] < acc["strong"])
    m = metrics["generators"]["strong"]
    assert m["traces"] == 48 and m["n"] == 2 and m["prompts"] == 24 and m["scale"] == "150 steps"
    for key in ("accuracy_mean", "accuracy_greedy", "step_accuracy_mean", "step_accuracy_greedy"):
        assert 0.0 <= m[key] <= 1.0


def test_verdict_of_a_correct_trace():
    meta = {"source_dataset": "chain_sum", "source_index": 0, "expression": "38 - 57 + 10", "num_terms": 3,
            "num_digits": 2, "difficulty": {"num_terms": [2, 4], "num_digits": [1, 2]}}
    prompt = {"verifier": "reasoning_gym", "answer": "-9", "metadata": json.dumps(meta)}
    right = verdict(prompt, render_trace("38 - 57 + 10"), steps=True)
    assert right["correct"] and right["step_accuracy"] == 1.0 and right["format_ok"]
    wrong = verdict(prompt, "S1:38-57=-19\nS2:-19+10=-8\nA:-8", steps=True)
    assert not wrong["correct"] and wrong["step_correct"] == [True, False] and wrong["answer"] == "-8"


def test_step_traces_answer_on_their_a_line_only():
    """A micro-world step trace without its `A:` line has not answered: no last-number guess."""
    assert step_answer("so <answer>42</answer>") == "42"
    assert step_answer("S1:3+4=7\nA:7") == "7"
    assert step_answer("S1:3+4=7") is None
    meta = json.dumps({"source_dataset": "chain_sum", "expression": "3 + 4"})
    prompt = {"verifier": "reasoning_gym", "answer": "7", "metadata": meta}
    assert not verdict(prompt, "S1:3+4=7", steps=True)["correct"]
    free = verdict(prompt, "3 + 4 = 7", steps=False)  # a free-form trace: the last number counts
    assert free["correct"] and free["answer"] == "7" and free["format_ok"] is False and free["step_correct"] is None


def test_math_verify_for_free_form_answers():
    found, value = score("math_verify", "The answer is \\boxed{0.5}.", "1/2", "{}")
    assert (found.text, found.marker, value) == ("0.5", "boxed", 1.0)
    assert score("math_verify", "<answer>3</answer>", "1/2", "{}")[1] == 0.0
    assert score("math_verify", "so x = \\frac{1}{2}", "\\frac{1}{2}", "{}")[1] == 1.0  # math-verify's own search


def test_rerun_is_byte_identical(tiny, tmp_path):
    again = build_tiny(tmp_path / "again")
    assert tree_hashes(again, "data", "metrics") == tree_hashes(tiny, "data", "metrics")


def test_runtime_knobs_do_not_change_outputs(tiny, tmp_path, monkeypatch):
    # The tiny fixture ran on one thread (OMP_NUM_THREADS=1 from conftest, which deltalab takes over
    # runtime.threads); without it, this run takes runtime.threads: 2.
    monkeypatch.delenv("OMP_NUM_THREADS")
    data = yaml.safe_load(TINY.read_text())
    data["runtime"] = {"threads": 2, "generate": {"batch_size": 5, "concurrency": 3}}
    other = build_tiny(tmp_path / "knobs", yaml.safe_dump(data))
    assert tree_hashes(other, "data", "metrics") == tree_hashes(tiny, "data", "metrics")
