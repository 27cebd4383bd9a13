"""prompts: seeded reasoning-gym tables, local files, held-out eval splits, pinned output."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from conftest import TINY, deltalab

pytestmark = pytest.mark.integration  # every test runs `deltalab prompts`


def test_train_and_eval_never_overlap(tiny):
    tables = {s: pl.read_parquet(tiny / f"data/prompts/{s}.parquet") for s in ("train", "eval_id", "eval_ood")}
    ids = {s: set(t["prompt_id"]) for s, t in tables.items()}
    assert not ids["train"] & ids["eval_id"] and not ids["train"] & ids["eval_ood"]
    assert all(t["prompt_id"].n_unique() == t.height for t in tables.values())
    assert set(tables["eval_id"]["family"]) <= set(tables["train"]["family"])
    assert not set(tables["eval_ood"]["family"]) & set(tables["train"]["family"])
    summary = json.loads((tiny / "metrics/prompts.json").read_text())
    assert summary["overlap_train_eval_id"] == 0 and summary["rows"] == {"train": 24, "eval_id": 12, "eval_ood": 8, "eval_far": 0}


def test_prompts_table_is_pinned(tiny, data_regression):
    tables = {s: pl.read_parquet(tiny / f"data/prompts/{s}.parquet").to_dicts() for s in ("train", "eval_id", "eval_ood")}
    data_regression.check(tables)


def _file_params(tmp_path, rel: str) -> str:
    data = yaml.safe_load(TINY.read_text())
    data["tasks"]["local"] = {"source": "file", "path": rel}
    data["prompts"]["train"]["local"] = 2
    data["prompts"]["eval_id"]["local"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    return "params.yaml"


def test_local_jsonl_and_parquet_sources(tmp_path):
    rows = [{"question": f"What is {i} squared?", "answer": str(i * i), "topic": "sq"} for i in range(5)]
    (tmp_path / "local.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    deltalab("prompts", "--params", _file_params(tmp_path, "local.jsonl"), cwd=tmp_path)
    train = pl.read_parquet(tmp_path / "data/prompts/train.parquet").filter(pl.col("family") == "local")
    assert train.height == 2 and set(train["verifier"]) == {"math_verify"}
    assert json.loads(train["metadata"][0]) == {"topic": "sq"}

    pl.DataFrame(rows).write_parquet(tmp_path / "local.parquet")
    deltalab("prompts", "--params", _file_params(tmp_path, "local.parquet"), cwd=tmp_path)
    again = pl.read_parquet(tmp_path / "data/prompts/train.parquet").filter(pl.col("family") == "local")
    assert sorted(again["question"]) == sorted(train["question"])


def test_malformed_row_names_file_and_line(tmp_path):
    lines = ['{"question": "1+1?", "answer": "2"}', '{"question": "2+2?"}', '{"question": "3+3?", "answer": "6"}']
    (tmp_path / "local.jsonl").write_text("\n".join(lines) + "\n")
    proc = deltalab("prompts", "--params", _file_params(tmp_path, "local.jsonl"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: local.jsonl:line 2: `answer` must be a non-empty string or number"
    assert not (tmp_path / "data/prompts/train.parquet").exists()

    (tmp_path / "local.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{not json\n')
    proc = deltalab("prompts", "--params", "params.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: local.jsonl:2: invalid JSON")


def test_too_few_prompts_is_an_error(tmp_path):
    (tmp_path / "local.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    proc = deltalab("prompts", "--params", _file_params(tmp_path, "local.jsonl"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "prompts.train.local: asked for 2 prompts, only 0 distinct" in proc.stderr


def _hf_params(tmp_path, task: dict) -> str:
    data = yaml.safe_load(TINY.read_text())
    data["tasks"]["hfmath"] = {"source": "hf", **task}
    data["prompts"]["train"]["hfmath"] = 3
    data["prompts"]["eval_id"]["hfmath"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    return "params.yaml"


def test_hugging_face_dataset_source(tmp_path, monkeypatch):
    """`source: hf` through `datasets.load_dataset` — here a local dataset directory, offline (a hub
    id with a pinned `revision` goes the same way)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = [{"problem": f"Compute {i}*7.", "solution": f"long worked solution {i}", "answer": str(7 * i),
             "level": f"L{i % 3}"} for i in range(8)]
    (tmp_path / "mathset").mkdir()
    (tmp_path / "mathset" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = {"dataset": "mathset", "split": "train", "question_field": "problem", "keep_fields": ["level"]}
    deltalab("prompts", "--params", _hf_params(tmp_path, task), cwd=tmp_path)
    train = pl.read_parquet(tmp_path / "data/prompts/train.parquet").filter(pl.col("family") == "hfmath")
    assert train.height == 3 and set(train["verifier"]) == {"math_verify"}
    assert set(train["source"]) == {"hf:mathset/train"}
    for row in train.iter_rows(named=True):
        i = int(row["question"].split()[1].split("*")[0])
        assert row["answer"] == str(7 * i) and json.loads(row["metadata"]) == {"level": f"L{i % 3}"}
    first = pl.read_parquet(tmp_path / "data/prompts/train.parquet")
    deltalab("prompts", "--params", "params.yaml", cwd=tmp_path)
    assert pl.read_parquet(tmp_path / "data/prompts/train.parquet").equals(first)  # seeded order

    _hf_params(tmp_path, {**task, "answer_field": "final"})
    proc = deltalab("prompts", "--params", "params.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "tasks.hfmath: dataset 'mathset' has no column 'final' (columns: problem, solution, answer, level)" in proc.stderr
    _hf_params(tmp_path, {"dataset": "no-such-org/no-such-dataset", "revision": "0123abc"})
    proc = deltalab("prompts", "--params", "params.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: tasks.hfmath: cannot load dataset 'no-such-org/no-such-dataset'")
    assert len(proc.stderr.strip().splitlines()) == 1
