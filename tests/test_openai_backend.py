"""The openai evaluation backend against a real `transformers serve` process on 127.0.0.1 (started by
deltalab), real openai client."""

from __future__ import annotations

import json
import shutil

import polars as pl
import yaml

from conftest import deltalab


def test_evaluate_through_transformers_serve(tiny, tmp_path):
    """The evaluator's openai backend, its server managed by deltalab (`evaluate.serve`, one server per
    checkpoint): the same greedy answers as in-process evaluation. (Generation through a managed
    server: tests/test_serve.py.)"""
    work = tmp_path / "work"
    shutil.copytree(tiny, work)
    deltalab("evaluate", "base", "--out", "data/eval/local.parquet", "--metrics", "metrics/eval/local.json", cwd=work)
    data = yaml.safe_load((work / "params.yaml").read_text())
    data["evaluate"] |= {"backend": "openai", "serve": {"command": "transformers serve {model} --port {port}"}}
    (work / "params.yaml").write_text(yaml.safe_dump(data))
    deltalab("evaluate", "base", "--out", "data/eval/served.parquet", "--metrics", "metrics/eval/served.json", cwd=work)
    assert (work / "logs/serve/evaluate-base.log").exists()
    local = pl.read_parquet(work / "data/eval/local.parquet").select("prompt_id", local="completion")
    remote = pl.read_parquet(work / "data/eval/served.parquet").select("prompt_id", "split", remote="completion")
    both = local.join(remote, on="prompt_id")
    assert both.height == 20 and set(both["split"]) == {"eval_id", "eval_ood"}
    assert (both["local"] == both["remote"]).all(), both.filter(pl.col("local") != pl.col("remote"))
    a = json.loads((work / "metrics/eval/local.json").read_text())
    b = json.loads((work / "metrics/eval/served.json").read_text())
    assert a["eval_id"] == b["eval_id"] and a["eval_ood"] == b["eval_ood"]
