"""The fault suite: every LLM-calling stage — `deltalab generate` (openai backend), `deltalab judge`
(openai judge), `deltalab evaluate` (openai backend) — against a scripted loopback server
(tests/fake_faults.py) that answers 429 (with Retry-After), 500, too late, with a connection reset,
a malformed body or a truncated body, at 20% and at 50% of attempts.

Each run must account for every prompt or trace with exactly one row, equal to a fault-free run's,
give a reason for every row that finally failed (the judge keeps such rows; generate and evaluate
stop with one line and write nothing, and a rerun finishes), and report the retries it made: the
same numbers the server saw.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import deltalab
from fake_faults import FaultServer, echo
from fake_openai import intended
from deltalab.config import DIMENSIONS
from deltalab.io import derive_seed
from deltalab.judge import rubric

pytestmark = pytest.mark.faults

RATES = (0.2, 0.5)
TIMEOUT_S = 1.5  # a "slow" reply comes after 2 s
GEN_RETRIES = 2  # the server faults on attempts 0 and 1 only, so generate and evaluate always get through
JUDGE_RETRIES = 1  # ... and some judge rows do not: they must be kept, with their reason
CLIENT_KIND = {"429": "HTTP 429", "500": "HTTP 500", "slow": "timeout", "reset": "connection error",
               "truncated": "connection error", "malformed": "unparsable response body"}
OUTPUTS = {
    "generate": ["data/traces/remote.parquet", "data/traces/remote.greedy.parquet"],
    "judge": ["data/judgments/weak.parquet", "data/judgments/strong.parquet", "metrics/judge.json"],
    "evaluate": ["data/eval/base.parquet", "metrics/eval/base.json"],
}


def workspace(tiny: Path, dest: Path, url: str, stage: str) -> Path:
    """A directory whose params send `stage`'s requests to `url`; inputs are read from `tiny`."""
    dest.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((tiny / "params.yaml").read_text())
    if stage == "generate":
        data["generators"]["remote"] = {"micro_model": "strong", "backend": "openai", "base_url": url,
                                        "served_model": "fake-gen", "n": 2}
    if stage == "evaluate":
        data["evaluate"] |= {"backend": "openai", "base_url": url}
        (dest / "data/models").mkdir(parents=True)  # the server "serves" the student by its path
        (dest / "data/models/student").symlink_to(tiny / "data/models/student")
    if stage == "judge":
        data["judge"] = {"backend": "openai", "base_url": url, "model": "fake-judge", "timeout_s": TIMEOUT_S,
                         "max_retries": JUDGE_RETRIES, "max_parse_retries": 0}
    # Every request in flight at once: a faulty one delays only itself.
    data["runtime"]["generate"] |= {"timeout_s": TIMEOUT_S, "max_retries": GEN_RETRIES, "concurrency": 64}
    data["runtime"]["judge"] = {"concurrency": 64, "cache_dir": str(dest / "cache")}
    (dest / "params.yaml").write_text(yaml.safe_dump(data))
    return dest


def run_stage(stage: str, work: Path, tiny: Path, check: bool = True):
    prompts = str(tiny / "data/prompts/train.parquet")
    args = {"generate": ["generate", "remote", "--prompts", prompts],
            "judge": ["judge", "--prompts", prompts, "--traces-dir", str(tiny / "data/traces")],
            "evaluate": ["evaluate", "base", "--prompts-dir", str(tiny / "data/prompts")]}[stage]
    return deltalab(*args, cwd=work, check=check)


def outputs(work: Path, stage: str) -> dict[str, bytes]:
    return {p: (work / p).read_bytes() for p in OUTPUTS[stage]}


@pytest.fixture(scope="module")
def clean(tiny, tmp_path_factory):
    """Each stage's outputs from a fault-free server (run once per stage, on first use)."""
    done: dict[str, dict[str, bytes]] = {}

    def get(stage: str) -> dict[str, bytes]:
        if stage not in done:
            with FaultServer(rate=0.0) as server:
                work = workspace(tiny, tmp_path_factory.mktemp(f"clean_{stage}"), server.url, stage)
                run_stage(stage, work, tiny)
            done[stage] = outputs(work, stage)
        return done[stage]

    return get


def retries_seen(log: list[dict], max_retries: int = GEN_RETRIES) -> tuple[int, int, dict[str, int]]:
    """(requests, retries, retried failures by the client's name for them) as the server saw them (a
    failure on the last attempt is not retried)."""
    kinds = Counter(CLIENT_KIND[e["kind"]] for e in log if e["kind"] != "ok" and e["attempt"] < max_retries)
    return len(log), sum(e["attempt"] > 0 for e in log), dict(kinds)


def check_faults_and_retry_after(log: list[dict], rate: float, max_retries: int) -> None:
    # The server really misbehaved, at about the rate asked, in several ways.
    first = [e for e in log if e["attempt"] == 0]
    faulty = sum(e["kind"] != "ok" for e in first) / len(first)
    assert rate / 2 <= faulty <= min(1.0, rate * 1.5), faulty
    assert len({e["kind"] for e in log} - {"ok"}) >= 4
    # Retry-After is honoured: after "429, Retry-After: 1" the next attempt waited a second.
    later = {}
    for e in log:
        later.setdefault((e["key"], e["attempt"]), []).append(e["t"])
    waited = [min(t for t in later[(e["key"], e["attempt"] + 1)] if t > e["t"]) - e["t"]
              for e in log if e["retry_after"] == "1" and e["attempt"] < max_retries]
    assert all(w >= 0.95 for w in waited), waited


def summary_counts(stdout: str) -> str:
    return stdout.strip().splitlines()[-1].split("; ")[-1]


def expected_summary(log: list[dict], max_retries: int = GEN_RETRIES) -> str:
    requests, retries, kinds = retries_seen(log, max_retries)
    listed = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return f"{requests} requests, {retries} retries" + (f" ({listed})" if listed else "")


# --- generate


@pytest.mark.parametrize("rate", RATES)
def test_generate_through_faults(tiny, tmp_path, clean, rate):
    with FaultServer(rate=rate) as server:
        work = workspace(tiny, tmp_path / "work", server.url, "generate")
        proc = run_stage("generate", work, tiny)
        log = list(server.log)
    check_faults_and_retry_after(log, rate, GEN_RETRIES)

    prompts = pl.read_parquet(tiny / "data/prompts/train.parquet")
    questions = dict(zip(prompts["prompt_id"], prompts["question"]))
    for path, n in (("data/traces/remote.parquet", 2), ("data/traces/remote.greedy.parquet", 1)):
        table = pl.read_parquet(work / path)
        # Every prompt has exactly its n rows, in prompt order, none twice; each is its own answer.
        assert list(zip(table["prompt_id"], table["sample_index"])) == [
            (p, i) for p in prompts["prompt_id"] for i in range(n)]
        assert table["trace_id"].n_unique() == table.height
        for row in table.iter_rows(named=True):
            assert row["completion"] == echo(questions[row["prompt_id"]], row["seed"], row["sample_index"])
    assert outputs(work, "generate") == clean("generate")  # faults leave no mark on the traces

    # The summary line reports the requests and retries the server saw.
    assert summary_counts(proc.stdout) == expected_summary(log)
    assert retries_seen(log)[1] > 0


# --- judge


@pytest.mark.parametrize("rate", RATES)
def test_judge_through_faults(tiny, tmp_path, clean, rate):
    with FaultServer(rate=rate) as server:
        work = workspace(tiny, tmp_path / "work", server.url, "judge")
        proc = run_stage("judge", work, tiny)
        log = list(server.log)
    check_faults_and_retry_after(log, rate, JUDGE_RETRIES)

    template = rubric.load("rubric_v1")
    prompts = pl.read_parquet(tiny / "data/prompts/train.parquet")
    gold = dict(zip(prompts["prompt_id"], zip(prompts["question"], prompts["answer"])))
    kinds: dict[str, list[str]] = {}  # request content -> the server's answer to each attempt
    for e in log:
        kinds.setdefault(e["question"], []).append(e["kind"])
    baseline = {g: pl.read_parquet(io.BytesIO(clean("judge")[f"data/judgments/{g}.parquet"])) for g in ("weak", "strong")}
    failed = 0
    for g in ("weak", "strong"):
        traces = pl.read_parquet(tiny / "data/traces" / f"{g}.parquet")
        table = pl.read_parquet(work / "data/judgments" / f"{g}.parquet")
        assert table["trace_id"].to_list() == traces["trace_id"].to_list()  # one row per trace, in order
        for row, completion in zip(table.iter_rows(named=True), traces["completion"]):
            content = template.messages(*gold[row["prompt_id"]], completion)[0]["content"]
            answers = kinds[content]
            if "ok" in answers:
                assert row["status"] == "ok" and row["reason"] is None
                assert {d: row[d] for d in DIMENSIONS} == intended(content)
            else:  # every attempt failed: the row is kept, with the last failure as its reason
                failed += 1
                assert len(answers) >= JUDGE_RETRIES + 1
                assert row["status"] == "request_error" and all(row[d] is None for d in DIMENSIONS)
                assert row["reason"].startswith(CLIENT_KIND[answers[-1]]), (row["reason"], answers)
                assert row["reason"].endswith(f"(after {JUDGE_RETRIES + 1} attempts)")
        # Rows that got through equal the fault-free run's.
        ok = table.filter(pl.col("status") == "ok")
        assert ok.equals(baseline[g].filter(pl.col("trace_id").is_in(ok["trace_id"].implode())))
    assert failed > 0  # at these rates some requests exhaust one retry

    # The metrics and the summary line count the requests and retries (by kind) the server saw, as
    # generate's and evaluate's do.
    m = json.loads((work / "metrics/judge.json").read_text())
    requests, retries, kinds = retries_seen(log, JUDGE_RETRIES)
    assert (m["requests"], m["retries"], m["failures"], m["retry_reasons"]) == (requests, retries, failed, kinds)
    assert retries > 0 and summary_counts(proc.stdout) == expected_summary(log, JUDGE_RETRIES)


# --- evaluate


@pytest.mark.parametrize("rate", RATES)
def test_evaluate_through_faults(tiny, tmp_path, clean, rate):
    with FaultServer(rate=rate) as server:
        work = workspace(tiny, tmp_path / "work", server.url, "evaluate")
        proc = run_stage("evaluate", work, tiny)
        log = list(server.log)
    check_faults_and_retry_after(log, rate, GEN_RETRIES)

    prompts = pl.concat([pl.read_parquet(tiny / "data/prompts" / f"{s}.parquet") for s in ("eval_id", "eval_ood")])
    table = pl.read_parquet(work / "data/eval/base.parquet")
    assert table["prompt_id"].to_list() == prompts["prompt_id"].to_list()  # one row per prompt, in order
    for row, question in zip(table.iter_rows(named=True), prompts["question"]):
        assert row["completion"] == echo(question, derive_seed(0, row["prompt_id"]), 0)
    got = outputs(work, "evaluate")
    assert got["data/eval/base.parquet"] == clean("evaluate")["data/eval/base.parquet"]

    # The metrics equal the fault-free run's but for the client block, which has the server's counts.
    metrics = json.loads(got["metrics/eval/base.json"])
    baseline = json.loads(clean("evaluate")["metrics/eval/base.json"])
    requests, retries, kinds = retries_seen(log)
    assert metrics.pop("client") == {"requests": requests, "retries": retries, "retry_reasons": kinds}
    assert baseline.pop("client") == {"requests": 20, "retries": 0, "retry_reasons": {}}
    assert metrics == baseline and retries > 0
    assert summary_counts(proc.stdout) == expected_summary(log)


# --- a request that never gets through


@pytest.mark.parametrize("stage", ["generate", "evaluate"])
def test_a_request_that_keeps_failing_stops_the_stage_and_a_rerun_finishes(tiny, tmp_path, clean, stage):
    split = "train" if stage == "generate" else "eval_ood"
    victim = pl.read_parquet(tiny / "data/prompts" / f"{split}.parquet").row(3, named=True)
    with FaultServer(rate=0.0) as server:
        server.down.add(victim["question"])
        work = workspace(tiny, tmp_path / "work", server.url, stage)
        proc = run_stage(stage, work, tiny, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        label = "generate remote" if stage == "generate" else "evaluate base"
        which = " (sample)" if stage == "generate" else ""
        assert lines == [f"error: {label}: prompt {victim['prompt_id']}{which} failed: HTTP 500: scripted 500 "
                         f"(after {GEN_RETRIES + 1} attempts); nothing written"]
        assert sum(e["question"] == victim["question"] for e in server.log) == GEN_RETRIES + 1
        # Nothing was written: no output, no temporary file.
        assert not [p for p in work.rglob("*") if p.is_file() and p.name != "params.yaml" and "models" not in p.parts]

        server.down.clear()  # the server is back
        run_stage(stage, work, tiny)
    assert outputs(work, stage) == clean(stage)
