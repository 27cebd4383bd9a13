"""Crashes: `deltalab generate`, `judge` and `train` SIGKILLed at exact points, then run again.

Each kill (tests/killpoint.py: the process kills itself at a chosen audit event, so the position is
exact and no sleep decides it) is checked right away: every output path is absent or holds the
previous (= uninterrupted) content, never a partial file or a half-deleted directory. The rerun then
completes, leaves no temporary file (`.NAME.deltalab-tmp.*`, which a SIGKILLed writer cannot remove;
the next writer of NAME sweeps it), and its outputs are byte-identical to an uninterrupted run's.

Positions: generate before the model loads, with a complete temporary file not yet renamed, and
between its two outputs; judge with its response cache just opened, before either judgment file is
renamed, and between them (the kill mid-way through the requests, resumed from the cache, is
test_judge_llm.py::test_sigkill_then_resume_is_byte_identical); train with its scratch directory
just made, while seed 0 is being saved, before the finished directory is renamed, and while an
earlier run's directory is being deleted after the new one took its place.

Train restarts cleanly: a killed run never leaves a checkpoint at its output path (a scratch
directory beside it is renamed into place only when every seed is done), and the rerun trains every
seed again. Only the reference log-probs survive a kill (the SQLite cache commits as it goes), which
never changes a result. Resuming mid-seed from a Trainer checkpoint would save minutes on a GPU
cluster at most and would make the bytes depend on where the kill fell.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import yaml

import killpoint
from conftest import deltalab, tree_hashes
from fake_openai import FakeJudge, Outcome

pytestmark = pytest.mark.crashes

def state(work: Path, out: str) -> dict[str, str] | None:
    """An output's files and hashes (None: absent); hidden temporary files are not part of it."""
    path = work / out
    if not path.exists():
        return None
    if path.is_file():
        return tree_hashes(path.parent, path.name)
    return {k: v for k, v in tree_hashes(path.parent, path.name).items() if "/." not in k}


def kill_then_rerun(work: Path, args: list[str], steps, outputs: list[str], ref: Path, counts: str = "") -> None:
    """`counts`: a file of run counts (requests, cache hits) that a resumed run changes by design."""
    before = {o: state(work, o) for o in outputs}
    proc = killpoint.run(args, work, steps)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {steps} ({proc.returncode}):\n{proc.stderr[-3000:]}"
    for o in outputs:  # right after the kill: absent, the previous content, or the whole new one
        assert state(work, o) in (None, before[o], state(ref, o)), f"{o}: partial after a kill at {steps}"
    deltalab(*args, cwd=work)
    # The output directories hold exactly what an uninterrupted run's hold: same bytes, no stray file.
    dirs = sorted({str(Path(o).parent) for o in outputs})
    same = {k: v for k, v in tree_hashes(work, *dirs).items() if k != counts}
    assert same == {k: v for k, v in tree_hashes(ref, *dirs).items() if k != counts}, f"differs (killed at {steps})"


def copy(src: Path, dst: Path, *drop: str) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    for d in drop:
        path = dst / d
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return dst


# --- generate: the tiny workspace's own traces are the uninterrupted run

GENERATE = ["data/traces/weak.parquet", "data/traces/weak.greedy.parquet"]


@pytest.mark.parametrize("steps", [
    [("import", "deltalab.backends.transformers", 1)],  # nothing generated yet
    [("os.rename", "*data/traces/weak.parquet", 1)],  # sampled traces complete in a temp file
    [("os.rename", "*data/traces/weak.greedy.parquet", 1)],  # one output in place, the other not
], ids=["early", "temp-written", "between-outputs"])
def test_generate_killed_then_rerun(tiny, tmp_path, steps):
    work = copy(tiny, tmp_path / "w", *GENERATE)
    kill_then_rerun(work, ["generate", "weak"], steps, GENERATE, tiny)


# --- judge: the openai judge against the scripted server

JUDGE = ["data/judgments", "metrics/judge_audit.json"]


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudge() as server:
        server.plan = lambda *a: Outcome("ok")  # faults are test_faults' and test_judge_llm's subject
        yield server


def judge_workspace(tiny: Path, dst: Path, url: str) -> Path:
    work = copy(tiny, dst, "data/judgments", "metrics/judge.json", "metrics/judge_audit.json")
    data = yaml.safe_load((work / "params.yaml").read_text())
    data["judge"] = {"backend": "openai", "base_url": url, "model": "fake-judge", "timeout_s": 5}
    data["runtime"]["judge"] = {"concurrency": 4}
    (work / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return work


@pytest.fixture(scope="module")
def judge_ref(tiny, judge_server, tmp_path_factory) -> Path:
    work = judge_workspace(tiny, tmp_path_factory.mktemp("judge_ref") / "w", judge_server.url)
    deltalab("judge", cwd=work)
    return work


def judge_summary(work: Path) -> dict:
    """metrics/judge.json without the request and cache-hit counts, which a resumed run changes by design."""
    m = json.loads((work / "metrics/judge.json").read_text())
    return {k: m[k] for k in ("judge", "generators", "failures")}


@pytest.mark.parametrize("steps", [
    [("sqlite3.connect", "*judge.sqlite", 1)],  # the response cache just opened: nothing asked yet
    [("os.rename", "*data/judgments", 1)],  # every judgment written in a scratch directory, not renamed
    [("os.rename", "*metrics/judge.json", 1)],  # judgments in place, metrics not
], ids=["early", "temp-written", "between-outputs"])
def test_judge_killed_then_rerun(tiny, judge_server, judge_ref, tmp_path, steps):
    work = judge_workspace(tiny, tmp_path / "w", judge_server.url)
    kill_then_rerun(work, ["judge"], steps, JUDGE, judge_ref, counts="metrics/judge.json")
    assert judge_summary(work) == judge_summary(judge_ref)


# --- train: restarts cleanly (see the module docstring)

TRAIN = ["data/checkpoints/delta", "metrics/train/delta"]


@pytest.fixture(scope="module")
def train_ref(tiny, tmp_path_factory) -> Path:
    work = copy(tiny, tmp_path_factory.mktemp("train_ref") / "w", "data/checkpoints", "metrics/train")
    deltalab("pairs", "delta", cwd=work)
    deltalab("train", "delta", cwd=work)
    return work


@pytest.mark.parametrize("steps", [
    [("os.mkdir", "*data/checkpoints/.delta.deltalab-tmp.*", 1)],  # scratch directory made, nothing trained
    [("open", "*/seed0/config.json", 1)],  # seed 0 trained and being saved, seed 1 not started
    [("os.rename", "*data/checkpoints/delta", 1)],  # both seeds saved, curves in place, checkpoints not
], ids=["early", "middle", "late"])
def test_train_killed_then_restarts_cleanly(train_ref, tmp_path, steps):
    work = copy(train_ref, tmp_path / "w", *TRAIN)
    kill_then_rerun(work, ["train", "delta"], steps, TRAIN, train_ref)


def test_train_killed_while_replacing_an_earlier_run(train_ref, tmp_path):
    """A retrain over an existing directory, killed three files into deleting the old one: the new one
    has already taken its place (the old one is deleted only after being moved aside)."""
    work = copy(train_ref, tmp_path / "w")
    steps = [("shutil.rmtree", "*data/checkpoints/*delta*", 1), ("os.remove", "*", 3)]
    kill_then_rerun(work, ["train", "delta"], steps, TRAIN, train_ref)
