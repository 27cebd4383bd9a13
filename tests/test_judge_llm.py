"""The LLM judge (`judge.backend: openai`) through the real `deltalab judge` command.

Against a scripted server (tests/fake_openai.py) that injects 429s, 500s, timeouts and unparsable
or out-of-range answers deterministically, and against a real `transformers serve`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml

from conftest import BIN, deltalab, free_port, transformers_serve
from fake_openai import FakeJudge, Outcome, default_plan, permanently_malformed
from deltalab.config import DIMENSIONS
from deltalab.errors import UserError
from deltalab.judge import rubric

GENERATORS = ("weak", "strong")
ANSWERED = {"ok", "bad_json", "out_of_range", "missing_key"}  # fault kinds the server answers with a 200
REF = re.compile(r"ref ([0-9a-f]{12}/\d+)")


def workspace(tiny: Path, dest: Path, base_url: str, cache_dir: Path, concurrency: int = 8, **judge) -> Path:
    """A copy of the tiny workspace whose params judge through `base_url`."""
    shutil.copytree(tiny, dest)
    shutil.rmtree(dest / "data/judgments", ignore_errors=True)  # start with no judgments (the fixture may judge)
    data = yaml.safe_load((dest / "params.yaml").read_text())
    # 2 s, not less: a request that times out before the server reads it never reaches the server's
    # log (the client aborts the connection), and these tests count requests on both ends; under
    # two pytest workers and a Snakemake run, 0.5 s was seen to cut a few.
    data["judge"] = {"backend": "openai", "base_url": base_url, "model": "fake-judge", "timeout_s": 2.0,
                     "max_retries": 6, "max_parse_retries": 2} | judge
    data["runtime"]["judge"] = {"concurrency": concurrency, "cache_dir": str(cache_dir)}
    (dest / "params.yaml").write_text(yaml.safe_dump(data))
    return dest


def judgment_bytes(work: Path) -> dict[str, bytes]:
    return {g: (work / "data/judgments" / f"{g}.parquet").read_bytes() for g in GENERATORS}


def judgments(work: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(work / "data/judgments" / f"{g}.parquet") for g in GENERATORS])


def cached_texts(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT text FROM responses")]
    finally:
        con.close()


@pytest.fixture(scope="module")
def fake():
    with FakeJudge() as server:
        yield server


@pytest.fixture(scope="module")
def first_run(tiny, fake, tmp_path_factory):
    """One uninterrupted judge run against the faulty server, with a fresh cache."""
    root = tmp_path_factory.mktemp("judge_first")
    work = workspace(tiny, root / "work", fake.url, root / "cache")
    start = fake.count
    t0 = time.time()
    proc = deltalab("judge", cwd=work)
    return SimpleNamespace(work=work, proc=proc, log=list(fake.log[start:]), seconds=time.time() - t0,
                           bytes=judgment_bytes(work))


def test_every_trace_judged_once_faults_retried_failures_kept(first_run, fake):
    work, log = first_run.work, first_run.log
    # The server really misbehaved, at well over 20% of requests.
    kinds = {e["kind"] for e in log}
    assert {"429", "500", "slow", "bad_json", "out_of_range", "missing_key", "ok"} <= kinds
    assert sum(e["kind"] != "ok" for e in log) >= 0.2 * len(log)

    for g in GENERATORS:
        traces = pl.read_parquet(work / "data/traces" / f"{g}.parquet")
        table = pl.read_parquet(work / "data/judgments" / f"{g}.parquet")
        assert table["trace_id"].to_list() == traces["trace_id"].to_list()  # one row each, same order
        assert set(table["judge"]) == {"openai:fake-judge"}
        assert set(table["template_version"]) == {rubric.load("rubric_v1").version}
        completions = dict(zip(traces["trace_id"], traces["completion"]))
        for row in table.iter_rows(named=True):
            ref = REF.search(row["raw_response"])[1]
            meant = fake.meant[ref]
            assert completions[row["trace_id"]] in meant["content"]  # the row's own trace was judged
            if row["status"] == "ok":
                assert {d: row[d] for d in DIMENSIONS} == meant["scores"] and row["reason"] is None
                assert row["rationale"] == f"fake rationale, ref {ref}"
            else:
                assert row["status"] == "parse_error" and row["reason"], row
                assert all(row[d] is None for d in DIMENSIONS)
                assert permanently_malformed(ref.split("/")[0]) and ref.endswith("/2")  # all 3 tries used
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0

    table = judgments(work)
    statuses = table["status"].value_counts()
    assert set(statuses["status"]) == {"ok", "parse_error"}
    reasons = table.filter(pl.col("status") == "parse_error")["reason"].to_list()
    assert any("out of range" in r for r in reasons) and any("missing key" in r for r in reasons)
    assert any("invalid JSON" in r for r in reasons)

    m = json.loads((work / "metrics/judge.json").read_text())
    assert m["judge"] == "openai:fake-judge"
    assert m["requests"] == len(log)
    assert m["retries"] == sum(e["attempt"] > 0 for e in log) > 0  # transport retries are ours
    assert m["failures"] == int((table["status"] != "ok").sum()) > 0
    unique = table.unique("cache_key")  # a duplicate trace is one request, then cache hits
    assert m["prompt_tokens"] == unique["prompt_tokens"].sum()
    assert m["completion_tokens"] == unique["completion_tokens"].sum()
    # Every response a row used came from exactly one request or else from the cache.
    used = sum(int(REF.search(t)[1].split("/")[1]) + 1 for t in table["raw_response"])
    assert m["cache_hits"] == used - len({e["ref"] for e in log if e["kind"] in ANSWERED})

    # Retry-After is honoured: a "429, Retry-After: 1" is not retried before a second has passed.
    by_ref: dict[tuple, float] = {(e["ref"], e["attempt"]): e["t"] for e in log}
    waited = [by_ref[(e["ref"], e["attempt"] + 1)] - e["t"] for e in log if e.get("retry_after") == "1"]
    assert waited and min(waited) >= 0.95


def test_judge_sees_the_gold_answer_and_audit_compares_with_the_verifier(first_run, fake):
    work = first_run.work
    prompts = pl.read_parquet(work / "data/prompts/train.parquet")
    gold = dict(zip(prompts["prompt_id"], prompts["answer"]))
    table = judgments(work)
    for row in table.head(10).iter_rows(named=True):
        content = fake.meant[REF.search(row["raw_response"])[1]]["content"]
        assert gold[row["prompt_id"]] in content
    audit = json.loads((work / "metrics/judge_audit.json").read_text())
    assert audit["available"] is True and audit["traces"] == int((table["status"] == "ok").sum())
    assert set(audit["spearman"]) == set(DIMENSIONS)


def test_rerun_makes_no_requests_and_same_bytes(first_run, fake):
    before = fake.count
    deltalab("judge", cwd=first_run.work)
    assert fake.count == before
    assert judgment_bytes(first_run.work) == first_run.bytes
    m = json.loads((first_run.work / "metrics/judge.json").read_text())
    responses = len({e["ref"] for e in first_run.log if e["kind"] in ANSWERED})
    assert (m["requests"], m["retries"], m["prompt_tokens"], m["completion_tokens"]) == (0, 0, 0, 0)
    assert m["cache_hits"] == responses


def test_sigkill_then_resume_is_byte_identical(first_run, fake, tiny, tmp_path):
    cache = tmp_path / "cache"
    work = workspace(tiny, tmp_path / "work", fake.url, cache, concurrency=4)
    needed = {e["ref"] for e in first_run.log if e["kind"] in ANSWERED}
    db = cache / "judge.sqlite"
    fake.delay_s = 0.2  # slow enough to catch the run mid-way
    try:
        with open(tmp_path / "killed.log", "w") as out:
            proc = subprocess.Popen([str(BIN / "deltalab"), "judge"], cwd=work, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while proc.poll() is None and time.time() < deadline:
            try:
                if db.exists() and len(cached_texts(db)) >= 10:
                    proc.send_signal(signal.SIGKILL)
                    break
            except sqlite3.OperationalError:
                pass  # the writer is creating the database
            time.sleep(0.05)
        assert proc.wait(timeout=30) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    finally:
        fake.delay_s = 0.0
    time.sleep(1.0)  # let requests the killed process had sent reach the server's log
    cached = {REF.search(t)[1] for t in cached_texts(db)}
    assert 10 <= len(cached) < len(needed) and cached <= needed
    assert not (work / "data/judgments").exists()

    start = fake.count
    deltalab("judge", cwd=work)
    restart = fake.log[start:]
    # Only what the cache lacked was asked again (and all of it).
    assert {e["ref"] for e in restart} == needed - cached
    m = json.loads((work / "metrics/judge.json").read_text())
    assert m["requests"] == len(restart) and m["cache_hits"] >= len(cached)
    assert judgment_bytes(work) == first_run.bytes


def test_request_errors_are_rows_and_the_key_never_leaks(tiny, tmp_path):
    secret = "sk-test-do-not-leak-0123456789abcdef"

    def plan(bhash, content, parse_retry, attempt):
        bucket = int(bhash, 16) % 3
        if bucket == 0:  # a server that echoes the credentials in its error
            return Outcome("401", text="Incorrect API key provided: {auth}")
        if bucket == 1:
            return Outcome("503")
        outcome = default_plan(bhash, content, parse_retry, attempt)
        return Outcome("500") if outcome.kind == "slow" else outcome

    with FakeJudge() as server:
        server.plan = plan
        # No scripted timeouts and a generous client timeout: on a loaded machine a short timeout
        # could turn a 401 into "timeout, then 401" and blur what this test counts.
        work = workspace(tiny, tmp_path / "work", server.url, tmp_path / "cache", max_retries=2, timeout_s=30,
                         max_parse_retries=0, api_key_env="DELTALAB_TEST_JUDGE_KEY")
        env = os.environ | {"DELTALAB_TEST_JUDGE_KEY": secret}
        proc = subprocess.run([str(BIN / "deltalab"), "judge"], cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        log = list(server.log)
        seen_auth = {e["auth"] for e in log}
    assert seen_auth == {f"Bearer {secret}"}  # the key was sent ...

    table = judgments(work)
    errors = table.filter(pl.col("status") == "request_error")
    assert errors.height > 0 and errors["reason"].null_count() == 0
    attempts: dict[str, int] = {}
    for e in log:
        attempts[e["ref"]] = attempts.get(e["ref"], 0) + 1
    for row in errors.iter_rows(named=True):
        assert row["raw_response"] is None and all(row[d] is None for d in DIMENSIONS)
        if row["reason"].startswith("HTTP 401"):  # not retried
            assert "after 1 attempt" in row["reason"] and "***" in row["reason"]
        else:  # retried max_retries times
            assert row["reason"].startswith("HTTP 503") and "after 3 attempts" in row["reason"], row["reason"]
    kinds = {e["ref"]: e["kind"] for e in log}
    assert {attempts[r] for r, k in kinds.items() if k == "401"} == {1}
    assert {attempts[r] for r, k in kinds.items() if k == "503"} == {3}
    assert int((table["status"] == "ok").sum()) > 0
    m = json.loads((work / "metrics/judge.json").read_text())
    assert m["failures"] == int((table["status"] != "ok").sum()) and m["requests"] == len(log)

    # ... and is nowhere: not in rows, cache, metrics or output.
    blobs = [proc.stdout, proc.stderr] + [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").iterdir()]
    blobs += [p.read_bytes().decode("latin-1") for p in (work / "data/judgments").iterdir()]
    blobs += [(work / "metrics/judge.json").read_text()]
    assert not [b for b in blobs if secret in b]


def test_missing_api_key_is_one_line(tiny, tmp_path, fake):
    work = workspace(tiny, tmp_path / "work", fake.url, tmp_path / "cache", api_key_env="DELTALAB_TEST_JUDGE_KEY")
    env = {k: v for k, v in os.environ.items() if k != "DELTALAB_TEST_JUDGE_KEY"}
    before = fake.count
    proc = subprocess.run([str(BIN / "deltalab"), "judge"], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "judge.api_key_env" in lines[0] and "DELTALAB_TEST_JUDGE_KEY" in lines[0]
    assert fake.count == before


def test_proxy_from_the_environment_and_a_netrc_entry(tiny, tmp_path):
    """HTTP_PROXY is honoured (as the openai SDK honours it) and a ~/.netrc entry for the judge's host
    does not clash with the bearer token (aiohttp's trust_env would add netrc auth and fail)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine judge.invalid login someone password secret\n")
    with FakeJudge() as proxy:
        proxy.plan = lambda bhash, content, parse_retry, attempt: Outcome("ok")
        # judge.invalid cannot resolve: every answer below came through the proxy.
        work = workspace(tiny, tmp_path / "work", "http://judge.invalid/v1", tmp_path / "cache")
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "all_proxy")}
        env |= {"HOME": str(home), "HTTP_PROXY": proxy.url.removesuffix("/v1")}
        proc = subprocess.run([str(BIN / "deltalab"), "judge"], cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        log = list(proxy.log)
    table = judgments(work)
    assert (table["status"] == "ok").all() and len(log) == table.unique("cache_key").height
    assert {e["target"] for e in log} == {"http://judge.invalid/v1/chat/completions"}
    assert {e["auth"] for e in log} == {"Bearer EMPTY"}


# --- a real server: transformers serve ignores response_format; its answers must come back as rows


def test_transformers_serve_answers_are_parse_errors_not_lost(tiny, tmp_path):
    port = free_port()
    work = workspace(tiny, tmp_path / "work", f"http://127.0.0.1:{port}/v1", tmp_path / "cache", concurrency=4,
                     model="data/models/strong", timeout_s=120, max_parse_retries=0, max_tokens=16)
    with transformers_serve(work, "data/models/strong", tmp_path / "serve.log", port):
        proc = deltalab("judge", cwd=work)

    assert "0 ok" in proc.stdout
    for g in GENERATORS:
        traces = pl.read_parquet(work / "data/traces" / f"{g}.parquet")
        table = pl.read_parquet(work / "data/judgments" / f"{g}.parquet")
        assert table["trace_id"].to_list() == traces["trace_id"].to_list()
        assert set(table["status"]) == {"parse_error"} and table["reason"].null_count() == 0
        assert set(table["judge"]) == {"openai:data/models/strong"}
        assert table["raw_response"].null_count() == 0 and (table["prompt_tokens"] > 0).all()
        assert all(table[d].null_count() == table.height for d in DIMENSIONS)
    m = json.loads((work / "metrics/judge.json").read_text())
    assert m["failures"] == m["requests"] == judgments(work).height > 0


def test_probability_scoring_needs_logprobs_transformers_serve_has_none(tiny, tmp_path):
    """`transformers serve` returns no log-probabilities: probability scoring stops at once, one line
    naming the setting, nothing written."""
    port = free_port()
    work = workspace(tiny, tmp_path / "work", f"http://127.0.0.1:{port}/v1", tmp_path / "cache", concurrency=2,
                     model="data/models/strong", timeout_s=120, max_parse_retries=0, max_tokens=8, scoring="probability")
    with transformers_serve(work, "data/models/strong", tmp_path / "serve.log", port):
        proc = deltalab("judge", cwd=work, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: judge.scoring: probability needs top_logprobs in the replies"), line
    assert not (work / "data/judgments").exists()


# --- units: template and parsing


def test_rubric_template_version_and_unknown_name():
    r = rubric.load("rubric_v1")
    assert re.fullmatch(r"rubric_v1@[0-9a-f]{12}", r.version)
    text = r.messages("3 + 4 =", "7", "S1:3+4=7\nA:7")[0]["content"]
    assert "3 + 4 =" in text and "S1:3+4=7" in text and all(d in text for d in DIMENSIONS)
    with pytest.raises(UserError, match=r"^judge\.template: unknown rubric template 'nope' \(shipped: rubric_short, rubric_v1\)"):
        rubric.load("nope")
    with pytest.raises(UserError, match="judge.template"):
        rubric.load("../templates/rubric_v1")
    schema = rubric.response_format()["json_schema"]
    assert schema["strict"] and schema["schema"]["required"] == [*DIMENSIONS, "rationale"]


GOOD = {"factuality": 5, "strategy_coherence": 4, "step_coherence": 3, "numerical_precision": 2, "signal_to_noise": 1}


@pytest.mark.parametrize("text", [
    json.dumps(GOOD | {"rationale": "fine"}),
    "```json\n" + json.dumps(GOOD | {"rationale": "fine"}) + "\n```",
    "Sure. {not json} The scores: " + json.dumps(GOOD | {"rationale": "fine"}) + " -- done {x}",
    "Thinking...\n```\n" + json.dumps(GOOD | {"rationale": "fine", "extra": 1}) + "\n```\n",
])
def test_parse_accepts_json_bare_fenced_and_in_prose(text):
    assert rubric.parse(text) == (GOOD, "fine")


@pytest.mark.parametrize("text, reason", [
    (json.dumps(GOOD | {"factuality": 7}), "factuality: 7 is out of range 1..5"),
    (json.dumps(GOOD | {"signal_to_noise": 0}), "signal_to_noise: 0 is out of range 1..5"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "step_coherence"}), "missing key(s): step_coherence"),
    (json.dumps(GOOD | {"numerical_precision": "4"}), 'numerical_precision: expected an integer 1..5, got "4"'),
    (json.dumps(GOOD | {"numerical_precision": 4.5}), "numerical_precision: expected an integer 1..5, got 4.5"),
    (json.dumps(GOOD | {"factuality": True}), "factuality: expected an integer 1..5, got true"),
    ('{"factuality": 3, "strategy', "invalid JSON"),
    ("S1:3+4=7\nA:7", "no JSON object in the response"),
    ("", "empty response"),
    ("[1, 2, 3]", "no JSON object in the response"),
])
def test_parse_rejects_with_reason(text, reason):
    with pytest.raises(rubric.ParseFailure) as err:
        rubric.parse(text)
    assert str(err.value).startswith(reason)


def test_parse_rationale_optional():
    assert rubric.parse(json.dumps(GOOD)) == (GOOD, None)
