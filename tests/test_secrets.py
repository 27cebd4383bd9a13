"""Secrets: with a fake API key in the environment (named by `api_key_env`), the LLM-calling stages
run against scripted loopback servers that receive the key and echo it back in error messages, and
then every file the runs wrote (outputs, metrics, logs, the SQLite caches, anything else in the
workspace) and every line they printed is searched for it: it appears nowhere.

generate (openai backend) and evaluate (openai backend) talk to one scripted server whose first
attempt at some requests is a 500 quoting the Authorization header (retried, then answered); the
judge talks to another that answers some requests with a 401 quoting it (kept as request_error rows).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN
from fake_openai import FakeJudge, Outcome

pytestmark = pytest.mark.secrets

KEY = "sk-test-0123456789abcdef"
ENV = "DELTALAB_TEST_KEY"


def echoing(status: str, bucket_of: int):
    """A plan: requests in one bucket of `bucket_of` get `status` quoting the credentials (on every
    attempt for a 401, on the first only for a 500), the others an answer."""
    def plan(bhash, content, parse_retry, attempt):
        if int(bhash, 16) % bucket_of == 0 and (status == "401" or attempt == 0):
            return Outcome(status, text="Incorrect API key provided: {auth}")
        return Outcome("ok")
    return plan


def test_the_key_is_in_no_file_and_no_output(tiny, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(tiny, work, ignore=shutil.ignore_patterns(".cache", "judgments", "judge*.json"))
    env = os.environ | {ENV: KEY}
    printed = []
    with FakeJudge() as model, FakeJudge() as judge:
        model.plan, judge.plan = echoing("500", 3), echoing("401", 4)
        data = yaml.safe_load((work / "params.yaml").read_text())
        data["generators"]["remote"] = {"model": "fake-model", "backend": "openai", "base_url": model.url,
                                        "api_key_env": ENV, "n": 2, "max_new_tokens": 24}
        data["judge"] = {"backend": "openai", "base_url": judge.url, "model": "fake-judge", "api_key_env": ENV,
                         "timeout_s": 5, "max_retries": 2, "max_parse_retries": 0}
        data["evaluate"] |= {"backend": "openai", "base_url": model.url, "api_key_env": ENV}
        (work / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        for args in (["generate", "remote"], ["judge"], ["evaluate", "base"]):
            proc = subprocess.run([str(BIN / "deltalab"), *args], cwd=work, env=env, capture_output=True, text=True)
            assert proc.returncode == 0, f"deltalab {' '.join(args)}:\n{proc.stderr[-3000:]}"
            printed += [proc.stdout, proc.stderr]
        sent = {e["auth"] for e in model.log} | {e["auth"] for e in judge.log}
        echoed = {e["kind"] for e in model.log} | {e["kind"] for e in judge.log}
    # The key really went out, and the servers really quoted it back ...
    assert sent == {f"Bearer {KEY}"} and {"500", "401", "ok"} <= echoed
    assert (work / "data/traces/remote.parquet").exists() and (work / "data/judgments/remote.parquet").exists()
    assert (work / ".cache").is_dir() and any((work / ".cache").rglob("*.sqlite"))
    # ... and is nowhere: not in any file of the workspace (cache, WAL, logs included), not printed.
    files = [p for p in work.rglob("*") if p.is_file()]
    assert len(files) > 20
    assert [str(p.relative_to(work)) for p in files if KEY.encode() in p.read_bytes()] == []
    assert not [text for text in printed if KEY in text]
