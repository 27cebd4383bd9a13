"""Probability-weighted judge scores (`judge.scoring: probability`) and the in-process judge
(`judge.backend: transformers`).

- through an OpenAI-compatible server: a scripted server (outside the code under test) returns the
  judge's reply with `top_logprobs`, and the scores are the expectations of those distributions;
- in-process, on a micro model: scores read from the logits, independent of the batch size,
  cached (a rerun computes nothing and writes the same bytes); JSON scoring too;
- continuous scores through pairs: float deltas, ties at the selection cutoff reported.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import deltalab
from scripted_server import ScriptedChat
from deltalab.config import DIMENSIONS
from deltalab.judge import scores
from deltalab.judge.rubric import ParseFailure

GENERATORS = ("weak", "strong")


def logprob_tokens(text: str, alternatives: dict[int, dict[str, float]]) -> list[dict]:
    """`logprobs.content` for `text` split into characters; at character offset k, `alternatives[k]`
    gives the top tokens and their probabilities."""
    out = []
    for k, ch in enumerate(text):
        top = alternatives.get(k, {ch: 1.0})
        out.append({"token": ch, "logprob": math.log(top.get(ch, 1e-9)),
                    "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top.items()]})
    return out


def test_distributions_from_logprobs():
    text = "factuality: 4\nstrategy_coherence: 3\nstep_coherence: 5\nnumerical_precision: 1\nsignal_to_noise: 2"
    at = {text.index(d) + len(d) + 2: d for d in DIMENSIONS}
    alts = {k: {"4": 0.5, "5": 0.25, "x": 0.25} if d == "factuality" else {text[k]: 0.8, "1": 0.1}
            for k, d in at.items()}
    got = scores.from_logprobs(text, logprob_tokens(text, alts))
    assert got["factuality"].probs == pytest.approx((0, 0, 0, 2 / 3, 1 / 3))
    assert got["factuality"].expected == pytest.approx(4.3333) and got["factuality"].argmax == 4
    assert got["factuality"].mass == pytest.approx(0.75)
    assert got["numerical_precision"].argmax == 1 and got["numerical_precision"].expected == 1.0
    assert got["step_coherence"].expected == pytest.approx((5 * 0.8 + 0.1) / 0.9, abs=1e-4)
    with pytest.raises(ParseFailure, match="no score for signal_to_noise"):
        cut = text[: text.index("signal")]
        scores.from_logprobs(cut, logprob_tokens(cut, alts))


class LogprobJudge(ScriptedChat):
    """Answers every judge request with five score lines and `top_logprobs` at each score token:
    P(k) proportional to 1, 2, 3, 4, 5 for k = 1..5 (so every expectation is 11/3), or with no
    logprobs at all (`with_logprobs=False`)."""

    def __init__(self, with_logprobs: bool = True):
        self.with_logprobs = with_logprobs
        super().__init__(self.reply)

    def reply(self, body: dict) -> dict:
        text = "\n".join(f"{d}: 5" for d in DIMENSIONS)
        dist = {str(k): k / 15 for k in range(1, 6)}
        alts = {text.index(d) + len(d) + 2: dist for d in DIMENSIONS}
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        if self.with_logprobs:
            choice["logprobs"] = {"content": logprob_tokens(text, alts)}
        return {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 5}}


def workspace(tiny: Path, dest: Path, judge: dict, runtime_judge: dict | None = None) -> Path:
    shutil.copytree(tiny, dest)
    shutil.rmtree(dest / "data/judgments", ignore_errors=True)
    data = yaml.safe_load((dest / "params.yaml").read_text())
    data["judge"] = judge
    data["runtime"]["judge"] = {"cache_dir": str(dest / "cache"), **(runtime_judge or {})}
    (dest / "params.yaml").write_text(yaml.safe_dump(data))
    return dest


def judged(work: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(work / "data/judgments" / f"{g}.parquet") for g in GENERATORS])


def test_served_judge_with_top_logprobs(tiny, tmp_path):
    with LogprobJudge() as server:
        work = workspace(tiny, tmp_path / "w", {"backend": "openai", "base_url": server.url, "model": "j",
                                                  "scoring": "probability", "top_logprobs": 5})
        deltalab("judge", cwd=work)
        first = {g: (work / "data/judgments" / f"{g}.parquet").read_bytes() for g in GENERATORS}
        asked = len(server.requests)
        deltalab("judge", cwd=work)  # from the cache: no request, same bytes
        assert len(server.requests) == asked
        assert first == {g: (work / "data/judgments" / f"{g}.parquet").read_bytes() for g in GENERATORS}
    body = server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and "response_format" not in body
    assert "signal_to_noise: <1-5>" in body["messages"][0]["content"]  # the probability reply format
    j = judged(work)
    assert (j["status"] == "ok").all() and (j["scoring"] == "probability").all()
    for d in DIMENSIONS:  # the argmax is 5, the expectation sum(k * k/15) = 11/3
        assert (j[d] == 5).all() and (j[f"{d}_expected"] == round(11 / 3, 4)).all()
    assert (j["score_mass"] == 1.0).all()


def test_served_judge_without_logprobs_is_one_line(tiny, tmp_path):
    with LogprobJudge(with_logprobs=False) as server:
        work = workspace(tiny, tmp_path / "w", {"backend": "openai", "base_url": server.url, "model": "j",
                                                  "scoring": "probability"})
        proc = deltalab("judge", cwd=work, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "judge.scoring: probability needs top_logprobs" in line and server.url in line
    assert not (work / "data/judgments").exists()


@pytest.fixture(scope="module")
def local(tiny, tmp_path_factory):
    """The in-process judge on the tiny profile's `strong` micro model, batch size 4."""
    work = workspace(tiny, tmp_path_factory.mktemp("local") / "w",
                     {"backend": "transformers", "model": "data/models/strong", "scoring": "probability"},
                     {"batch_size": 4})
    proc = deltalab("judge", cwd=work)
    return work, proc


def test_local_probability_judge(local):
    work, proc = local
    j = judged(work)
    assert (j["status"] == "ok").all() and (j["scoring"] == "probability").all()
    assert set(j["judge"]) == {"transformers:data/models/strong"}
    for d in DIMENSIONS:
        assert j[f"{d}_expected"].is_between(1, 5).all() and j[d].is_between(1, 5).all()
    # the integer score is the most likely one: written into the forced reply the judge continued
    replies = j["raw_response"].to_list()
    assert all(r.startswith("factuality: ") and r.count("\n") == 4 for r in replies)
    row = j.row(0, named=True)
    assert replies[0] == "\n".join(f"{d}: {row[d]}" for d in DIMENSIONS)
    audit = json.loads((work / "metrics/judge_audit.json").read_text())
    assert audit["available"] and audit["traces"] == j.height  # compared with the verifier on step traces
    assert "requests" in proc.stdout and f"{j.height} ok" in proc.stdout


def test_local_judge_scores_do_not_depend_on_the_batch_size_and_are_cached(local, tmp_path):
    work, _ = local
    other = tmp_path / "other"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("judgments", "cache"))
    data = yaml.safe_load((other / "params.yaml").read_text())
    data["runtime"]["judge"] = {"cache_dir": str(other / "cache"), "batch_size": 1}
    (other / "params.yaml").write_text(yaml.safe_dump(data))
    deltalab("judge", cwd=other)
    for g in GENERATORS:
        assert (other / "data/judgments" / f"{g}.parquet").read_bytes() == (work / "data/judgments" / f"{g}.parquet").read_bytes()
    again = deltalab("judge", cwd=other)  # warm cache: nothing computed, same bytes
    assert "0 requests" in again.stdout
    for g in GENERATORS:
        assert (other / "data/judgments" / f"{g}.parquet").read_bytes() == (work / "data/judgments" / f"{g}.parquet").read_bytes()


def test_local_json_judge_keeps_unparsable_replies(tiny, tmp_path):
    work = workspace(tiny, tmp_path / "w", {"backend": "transformers", "model": "data/models/strong",
                                             "scoring": "json", "max_tokens": 12})
    deltalab("judge", cwd=work)
    j = judged(work)
    assert (j["scoring"] == "json").all() and j[f"{DIMENSIONS[0]}_expected"].null_count() == j.height
    assert set(j["status"]) == {"parse_error"} and j["reason"].null_count() == 0  # a micro model writes no JSON


def test_continuous_scores_through_pairs(local, tmp_path):
    """Expected scores give float deltas; top-k keeps working and reports the ties at its cutoff."""
    work, _ = local
    data = yaml.safe_load((work / "params.yaml").read_text())
    for name in ("delta", "top"):
        deltalab("pairs", name, cwd=work)
        pairs = pl.read_parquet(work / "data/pairs" / f"{name}.parquet")
        assert all(pairs.schema[f"delta_{d}"] == pl.Float64 for d in (*DIMENSIONS, "aggregate"))
        m = json.loads((work / "metrics/pairs" / f"{name}.json").read_text())
        assert m["judge_scoring"] == "probability"
    top = json.loads((work / "metrics/pairs/top.json").read_text())
    ties = top["ties_at_cutoff"]
    assert ties["kept"] >= 1 and ties["tied"] >= ties["kept"]
    sel = pl.read_parquet(work / "data/pairs/top.parquet")["delta_step_coherence"]
    assert ties["delta"] == sel.min()
    assert data["ablations"]["top"]["selection"]["method"] == "top_k"
