"""evaluate with `backend: lm_eval`: lm-evaluation-harness runs local task YAMLs over a local JSONL file
on a micro model (offline), through the real `deltalab evaluate` command; `hf` in-process and
`local-chat-completions` against a real `transformers serve`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT, TINY, deltalab, free_port, transformers_serve
from deltalab.config import load_params
from deltalab.errors import UserError

os.environ.update(HF_DATASETS_OFFLINE="1")

# The micro model answers every sum with "S1:...\nA:1=": the sums equal to 1 are its correct answers.
SUMS = ["3 - 2", "6 + 6", "0 + 1", "8 - 2", "9 - 8", "1 - 5", "4 + 5", "7 - 6", "2 + 2", "5 + 3"]
ANSWER = re.compile(r"A:(-?[0-9]+)")

GENERATIVE = """\
task: arith
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["<eos>"], max_gen_toks: 24, do_sample: false}}
filter_list:
  - name: answer
    filter: [{{function: regex, regex_pattern: "A:(-?[0-9]+)"}}, {{function: take_first}}]
metric_list: [{{metric: exact_match}}]
"""
CHOICE = """\
task: arith_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list: [{{metric: acc}}]
"""
GROUP = "group: arith_choice\ntask: [arith_mc]\naggregate_metric_list: [{metric: acc}]\n"


def workspace(tiny: Path, root: Path, lm_eval: dict) -> Path:
    """A workspace whose student is the tiny profile's `strong` model, evaluated by lm-eval."""
    (root / "data/models").mkdir(parents=True)
    shutil.copytree(tiny / "data/models/strong", root / "data/models/strong")
    tasks = root / "tasks"
    tasks.mkdir()
    data = tasks / "arith.jsonl"
    with data.open("w") as f:
        for i, s in enumerate(SUMS):
            a, op, b = s.split()
            value = int(a) + int(b) if op == "+" else int(a) - int(b)
            choices = [str(value), str(value + 1)][:: 1 if i % 2 else -1]
            f.write(json.dumps({"question": f"{s} =", "answer": str(value), "choices": choices,
                                "label": choices.index(str(value))}) + "\n")
    (tasks / "arith.yaml").write_text(GENERATIVE.format(data=data))
    (tasks / "arith_mc.yaml").write_text(CHOICE.format(data=data))
    (tasks / "arith_choice.yaml").write_text(GROUP)
    params = yaml.safe_load(TINY.read_text())
    params["student"] = {"micro_model": "strong"}
    params["evaluate"] = {"backend": "lm_eval", "bootstrap": 200,
                          "lm_eval": {"include_path": str(tasks), "apply_chat_template": True, **lm_eval}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def samples(work: Path, task: str) -> list[dict]:
    [results] = (work / "logs/lm_eval/base").glob("results_*.json")
    path = results.with_name(f"samples_{task}_{results.stem.removeprefix('results_')}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def hf_run(tiny, tmp_path_factory) -> Path:
    work = workspace(tiny, tmp_path_factory.mktemp("lm_eval_hf"), {
        "model": "hf", "batch_size": 4, "tasks": {"eval_id": ["arith"], "eval_ood": ["arith_choice"]}})
    deltalab("evaluate", "base", cwd=work)
    return work


def test_hf_rows_are_what_lm_eval_logged(hf_run):
    m = json.loads((hf_run / "metrics/eval/base.json").read_text())
    items = pl.read_parquet(hf_run / "data/eval/base.parquet")
    n = len(SUMS)
    for split, family in (("eval_id", "arith"), ("eval_ood", "arith_choice")):
        block, rows = m[split], items.filter(pl.col("split") == split)
        assert block["prompts"] == n and rows["prompt_id"].n_unique() == n and set(block["families"]) == {family}
        assert block["accuracy"] == pytest.approx(rows["correct"].mean(), abs=1e-4)
        assert block["ci"][0] <= block["accuracy"] <= block["ci"][1]

    gen = items.filter(pl.col("family") == "arith").to_dicts()
    for row, s in zip(gen, samples(hf_run, "arith"), strict=True):
        assert (row["completion"], row["answer"], row["score"]) == (s["resps"][0][0], s["filtered_resps"][0], s["exact_match"])
        found = ANSWER.search(row["completion"])
        assert row["correct"] == (found is not None and found.group(1) == s["doc"]["answer"])
        assert row["completion_tokens"] == len(row["completion"]) and row["finish_reason"] == "stop"
    assert 0 < sum(r["correct"] for r in gen) < n  # the sums equal to 1, and no others
    assert {r["answer"] for r in gen} == {"1"}

    mc = items.filter(pl.col("family") == "arith_choice").to_dicts()
    for row, s in zip(mc, samples(hf_run, "arith_mc"), strict=True):
        lls = [float(x[0]) for x in s["filtered_resps"]]
        assert row["completion"] == s["doc"]["choices"][lls.index(max(lls))]
        assert row["correct"] == (s["acc"] == 1.0) == (row["completion"] == s["doc"]["answer"])
    assert m["eval_ood"]["accuracy"] == pytest.approx(sum(s["acc"] for s in samples(hf_run, "arith_mc")) / n, abs=1e-4)


def test_rerun_is_byte_identical(hf_run, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(hf_run, again, ignore=shutil.ignore_patterns("logs", "eval"))
    deltalab("evaluate", "base", cwd=again)
    for path in ("data/eval/base.parquet", "metrics/eval/base.json"):
        assert (again / path).read_bytes() == (hf_run / path).read_bytes(), path


def test_served_model_answers_like_hf(tiny, hf_run, tmp_path):
    """local-chat-completions against `transformers serve`: the server applies the same chat template
    and decodes greedily, so every answer equals the in-process hf run's."""
    port = free_port()
    work = workspace(tiny, tmp_path / "served", {
        "model": "local-chat-completions", "tasks": {"eval_id": ["arith"]},
        "model_args": {"base_url": f"http://127.0.0.1:{port}/v1/chat/completions", "num_concurrent": 1}})
    with transformers_serve(work, "data/models/strong", tmp_path / "serve.log", port):
        deltalab("evaluate", "base", cwd=work)
    served = pl.read_parquet(work / "data/eval/base.parquet")
    hf = pl.read_parquet(hf_run / "data/eval/base.parquet").filter(pl.col("split") == "eval_id")
    cols = ["prompt_id", "completion", "completion_tokens", "answer", "correct"]
    assert served.height == len(SUMS) and served.select(cols).equals(hf.select(cols))


def bad_params(tmp_path: Path, section: dict | None) -> Path:
    params = yaml.safe_load(TINY.read_text())
    params["evaluate"] = {"backend": "lm_eval"} | ({"lm_eval": section} if section else {})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


@pytest.mark.integration
def test_lm_eval_without_tasks_is_a_one_line_error(tmp_path):
    bad_params(tmp_path, {"model": "hf"})
    proc = deltalab("evaluate", "base", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "params.yaml: evaluate.lm_eval.tasks: Field required" in line, line


@pytest.mark.parametrize("section, message", [
    (None, "evaluate: the lm_eval backend needs an `lm_eval` section"),
    ({"tasks": {"eval_id": []}}, "evaluate.lm_eval.tasks: list at least one lm-eval task"),
    ({"tasks": {"eval_id": ["a"], "eval_ood": ["a"]}}, "evaluate.lm_eval.tasks: task 'a' is listed under both"),
    ({"model": "local-completions", "tasks": {"eval_id": ["gsm8k"]}},
     "evaluate.lm_eval: model_args: local-completions needs `base_url`"),
    ({"tasks": {"eval_id": ["gsm8k"]}, "model_args": {"pretrained": "x"}},
     "evaluate.lm_eval: model_args: `pretrained` is filled in by deltalab"),
])
def test_bad_lm_eval_sections(tmp_path, section, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_params(bad_params(tmp_path, section))


@pytest.mark.parametrize("text, gold, kind, ok", [
    ("so 1/3 ~ 0.3333. The answer is 0.3333.", "0.333", "float", True),
    ("The answer is 0.5", "0.333", "float", False),
    ("The answer is [1, 2, 3]", "[1, 2, 3]", "list of integer", True),
    ("The answer is [1, 2]", "[1, 2, 3]", "list of integer", False),
    ("Thus the answer is True.", "True", "bool", True),
    ("The answer is: False", "True", "bool", False),
    ("The answer is (c)", "(c)", "option", True),
    ("The answer is 1,200", "1200", "integer", True),
    ("no final line", "1", "integer", False),
])
def test_theoremqa_scoring(text, gold, kind, ok):
    """The local TheoremQA task (configs/lm_eval_tasks) scores the final "The answer is X"."""
    spec = importlib.util.spec_from_file_location("theoremqa_utils", ROOT / "configs/lm_eval_tasks/theoremqa_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert utils.process_results({"Answer": gold, "Answer_type": kind}, [text]) == {"exact_match": int(ok)}
