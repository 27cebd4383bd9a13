"""Answers in the forms real models write, through `deltalab generate` with the openai backend.

A scripted OpenAI-compatible server (outside the code under test) answers every prompt in one of the
free-form styles real models use: <answer> tags, \\boxed{}, answer phrases, bold, a bare number, and
intermediate numbers before the final one. Half of the answers are right and half wrong; the wrong
ones often carry the gold answer as an intermediate number. Every trace must be scored exactly,
on a reasoning-gym family (reasoning-gym's scorer) and on a file family (math-verify).
"""

from __future__ import annotations

import json
from fractions import Fraction

import polars as pl
import pytest
import yaml

from conftest import deltalab
from scripted_server import ScriptedChat

pytestmark = pytest.mark.integration  # `deltalab prompts` and `generate` against a scripted server

# (style, completion template): {v} is the stated final answer, {g} the gold one (as an intermediate
# number in the wrong answers' traps).
NUMERIC_STYLES = [
    ("tags", "Let me compute step by step.\nFirst {g}? No.\n<answer>{v}</answer>"),
    ("boxed", "Adding the terms in order gives $\\boxed{{{v}}}$."),
    ("phrase", "We add the numbers.\nThe answer to this arithmetic problem is {v}."),
    ("final_answer", "Step 1: ...\nStep 2: ...\n**Final Answer:** {v}"),
    ("bold", "Working through it, the total comes to **{v}**."),
    ("bare", "{v}"),
    ("intermediate", "I first thought it was {g}. Then 12 - 5 = 7 and 7 + 1 = 8, so in the end we get {v}"),
    ("negative_unicode", "The result is \u2212{abs}."),
]


def _wrong(gold: str) -> str:
    return str(Fraction(gold.replace(",", "")) + 3).replace("/1", "") if "/" not in gold else "7/9"


def completion(style: str, template: str, gold: str, right: bool) -> str:
    value = gold if right else _wrong(gold)
    return template.format(v=value, g=gold, abs=value.lstrip("-"))


class FreeFormServer(ScriptedChat):
    """Answers a chat request with the completion scripted for the question in its last user turn."""

    def __init__(self):
        self.answers: dict[str, str] = {}
        super().__init__(self.reply)

    def reply(self, body: dict) -> dict:
        user = body["messages"][-1]["content"]
        text = next(a for q, a in self.answers.items() if user == q or user.startswith(q + "\n"))
        choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                   for i in range(body.get("n") or 1)]
        return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": 5, "completion_tokens": 5}}


# math-verify family: golds in the forms datasets use, and how a model may state them.
FILE_ROWS = [
    ("What is one half?", "1/2", "The answer is $\\frac{1}{2}$.", "$\\boxed{\\frac{1}{3}}$"),
    ("Half of 1?", "\\frac{1}{2}", "<answer>0.5</answer>", "<answer>0.25</answer>"),
    ("Thousands?", "1234", "So the total is **1,234**.", "So the total is **1,243**."),
    ("Below zero?", "-3", "We get 5 - 8 = -3", "We get 8 - 5 = 3"),
    ("Three quarters?", "3/4", "Final answer: \\boxed{\\dfrac{3}{4}}", "Final answer: \\boxed{\\dfrac{4}{3}}"),
    ("Diagonal of a unit square times two?", "2\\sqrt{2}", "It is $\\boxed{2\\sqrt{2}}$.", "It is $\\boxed{2\\sqrt{3}}$."),
    ("Quarter as decimal?", "0.25", "First 1/2 = 0.5, then half again: 0.25", "First 1/4 = 0.25, then doubled: 0.5"),
    ("Big sum?", "1000000", "The answer is 1,000,000.", "The answer is 100,000."),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Prompts of both families, the scripted answers, and one `deltalab generate` through the server."""
    work = tmp_path_factory.mktemp("free_form")
    with (work / "algebra.jsonl").open("w") as f:
        for question, gold, _, _ in FILE_ROWS:
            f.write(json.dumps({"question": question, "answer": gold}) + "\n")
    with FreeFormServer() as server:
        params = {
            "tasks": {
                "sums": {"source": "reasoning_gym", "dataset": "chain_sum",
                         "config": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}},
                "algebra": {"source": "file", "path": "algebra.jsonl"},
            },
            "prompts": {"train": {"sums": 32, "algebra": 8}, "eval_id": {"sums": 2}},
            "generators": {"served": {"model": "scripted", "backend": "openai", "base_url": server.url,
                                      "n": 1, "greedy": False}},
        }
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        deltalab("prompts", cwd=work)
        prompts = pl.read_parquet(work / "data/prompts/train.parquet")
        expected = {}
        for i, row in enumerate(prompts.iter_rows(named=True)):
            right = i % 2 == 0
            if row["family"] == "sums":
                style, template = NUMERIC_STYLES[(i // 2) % len(NUMERIC_STYLES)]
                if style == "negative_unicode" and not row["answer"].startswith("-"):
                    style, template = NUMERIC_STYLES[0]
                server.answers[row["question"]] = completion(style, template, row["answer"], right)
            else:
                _, _, good, bad = next(r for r in FILE_ROWS if r[0] == row["question"])
                server.answers[row["question"]] = good if right else bad
            expected[row["prompt_id"]] = right
        deltalab("generate", "served", cwd=work)
    traces = pl.read_parquet(work / "data/traces/served.parquet")
    return traces, expected, server.answers


def test_every_style_is_scored_exactly(served):
    traces, expected, _ = served
    assert traces.height == len(expected) == 40
    wrong = traces.filter(pl.col("correct") != pl.col("prompt_id").replace_strict(expected))
    assert wrong.height == 0, wrong.select("family", "completion", "answer", "correct").to_dicts()
    assert set(traces["family"]) == {"sums", "algebra"}


def test_format_ok_says_whether_a_marker_stated_the_answer(served):
    traces, _, _ = served
    rows = traces.to_dicts()
    bare = [r for r in rows if r["family"] == "sums" and r["completion"].strip().lstrip("-").isdigit()]
    marked = [r for r in rows if "<answer>" in r["completion"] or "\\boxed" in r["completion"]]
    assert bare and marked
    assert all(r["format_ok"] is False for r in bare)
    assert all(r["format_ok"] is True for r in marked)
    assert traces["step_correct"].null_count() == traces.height  # free-form traces get no step checks


def test_the_prompt_sent_is_recorded(served):
    """The built-in templates (reasoning-gym's system prompt; the boxed instruction for files) were
    sent, so every trace records the messages' hash and the template's version."""
    traces, _, _ = served
    assert traces["prompt_hash"].null_count() == 0 and traces["prompt_hash"].n_unique() == traces.height
    assert traces.group_by("family").agg(pl.col("prompt_template").n_unique())["prompt_template"].to_list() == [1, 1]
