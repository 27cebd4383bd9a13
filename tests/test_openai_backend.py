"""The openai backend against a real `transformers serve` process on 127.0.0.1, real openai client."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml

from conftest import deltalab, transformers_serve


@pytest.fixture
def served_workspace(tiny, tmp_path):
    """A copy of the tiny workspace plus `transformers serve` serving its strong micro model."""
    work = tmp_path / "work"
    shutil.copytree(tiny, work)
    with transformers_serve(work, "data/models/strong", tmp_path / "serve.log") as port:
        yield work, port


def test_generate_through_transformers_serve(served_workspace):
    work, port = served_workspace
    data = yaml.safe_load((work / "params.yaml").read_text())
    data["generators"]["served"] = {
        "micro_model": "strong",
        "backend": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "n": 2,
        "max_new_tokens": 24,
    }
    data["runtime"]["generate"]["concurrency"] = 4
    (work / "params.yaml").write_text(yaml.safe_dump(data))
    proc = deltalab("generate", "served", cwd=work)
    assert "generate served: wrote data/traces/served.parquet (48 traces" in proc.stdout

    served = pl.read_parquet(work / "data/traces/served.parquet")
    assert served.height == 48 and set(served["backend"]) == {"openai"}
    assert (served["prompt_tokens"] > 0).all() and (served["completion_tokens"] <= 24).all()
    assert served["step_correct"].null_count() == 0 and (served["correct"] == (served["score"] >= 1.0)).all()

    # Greedy decoding of the same weights: the server agrees with the in-process backend.
    local = pl.read_parquet(work / "data/traces/strong.greedy.parquet").select("prompt_id", local="completion")
    remote = pl.read_parquet(work / "data/traces/served.greedy.parquet").select("prompt_id", remote="completion")
    both = local.join(remote, on="prompt_id")
    assert both.height == 24
    assert (both["local"] == both["remote"]).all(), both.filter(pl.col("local") != pl.col("remote"))


def test_evaluate_through_transformers_serve(tiny, tmp_path):
    """The evaluator's openai backend: the same greedy answers as in-process evaluation."""
    work = tmp_path / "work"
    shutil.copytree(tiny, work)
    deltalab("evaluate", "base", "--out", "data/eval/local.parquet", "--metrics", "metrics/eval/local.json", cwd=work)
    data = yaml.safe_load((work / "params.yaml").read_text())
    with transformers_serve(work, "data/models/student", tmp_path / "serve.log") as port:
        data["evaluate"] |= {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
        (work / "params.yaml").write_text(yaml.safe_dump(data))
        deltalab("evaluate", "base", "--out", "data/eval/served.parquet", "--metrics", "metrics/eval/served.json", cwd=work)
    local = pl.read_parquet(work / "data/eval/local.parquet").select("prompt_id", local="completion")
    remote = pl.read_parquet(work / "data/eval/served.parquet").select("prompt_id", "split", remote="completion")
    both = local.join(remote, on="prompt_id")
    assert both.height == 20 and set(both["split"]) == {"eval_id", "eval_ood"}
    assert (both["local"] == both["remote"]).all(), both.filter(pl.col("local") != pl.col("remote"))
    a = json.loads((work / "metrics/eval/local.json").read_text())
    b = json.loads((work / "metrics/eval/served.json").read_text())
    assert a["eval_id"] == b["eval_id"] and a["eval_ood"] == b["eval_ood"]
