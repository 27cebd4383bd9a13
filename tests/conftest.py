"""Shared fixtures: the tiny profile, run for real through the `deltalab` command; and the test tiers.

The unit tier (`make test-unit`) is every test not marked `integration`. A test is integration when it
is marked so, uses the `tiny` study (directly or through another fixture), or carries a marker in
INTEGRATION_MARKERS. A unit-tier test that starts a process fails, naming the marker to add.
"""

from __future__ import annotations

import hashlib
import multiprocessing.process
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny" / "params.yaml"
BIN = Path(sys.executable).parent

# No model hub, few threads: tests build their own tiny models and data.
os.environ.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"

# Markers whose tests start processes (stage commands, servers, clusters): each implies `integration`.
INTEGRATION_MARKERS = ("e2e", "slurm", "real", "faults", "crashes", "determinism", "secrets", "bad_inputs")
# Fixtures that build the tiny study through the `deltalab` command.
INTEGRATION_FIXTURES = ("tiny",)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    for item in items:
        if (any(item.get_closest_marker(m) for m in INTEGRATION_MARKERS)
                or any(f in getattr(item, "fixturenames", ()) for f in INTEGRATION_FIXTURES)):
            item.add_marker(pytest.mark.integration)


def _no_process(*args, **kwargs):
    # pytest.fail raises an exception the code under test cannot catch by `except Exception`.
    pytest.fail("unit-tier test started a process: mark it @pytest.mark.integration "
                "(or move the process out of it)", pytrace=False)


# Every way a process starts: subprocess (also asyncio's), multiprocessing, fork, spawn, exec, system.
_PROCESS_STARTS = [(subprocess.Popen, "_execute_child"), (multiprocessing.process.BaseProcess, "start")] + [
    (os, name) for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve",
                            "spawnv", "spawnve") if hasattr(os, name)]


@contextmanager
def _unit_tier_guard(item):
    if item.get_closest_marker("integration"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        for owner, name in _PROCESS_STARTS:
            mp.setattr(owner, name, _no_process)
        yield


# A unit-tier test's setup (its fixtures, whatever their scope) and call run guarded; not its teardown,
# where fixtures of earlier integration tests may be finished.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _unit_tier_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _unit_tier_guard(item):
        return (yield)


def deltalab(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "deltalab"), *args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | env if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"deltalab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def build_tiny(workdir: Path, params_text: str | None = None) -> Path:
    """Run prompts -> micro_models -> generate -> generator_metrics -> judge of the tiny profile in `workdir`
    (the student is built too; pairs, train, evaluate and report are left to the tests)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(params_text or TINY.read_text())
    deltalab("prompts", "--metrics", "metrics/prompts.json", cwd=workdir)
    excl = ["--exclude", "data/prompts/eval_id.parquet", "--exclude", "data/prompts/eval_ood.parquet"]
    for name in ("weak", "strong", "student"):
        deltalab("micro-models", name, *excl, cwd=workdir)
    for name in ("weak", "strong"):
        deltalab("generate", name, cwd=workdir)
    deltalab("generator-metrics", cwd=workdir)
    deltalab("judge", cwd=workdir)
    return workdir


def tree_hashes(root: Path, *subdirs: str) -> dict[str, str]:
    out = {}
    for sub in subdirs:
        for path in sorted((root / sub).rglob("*")):
            if path.is_file() and path.name != ".snakemake_timestamp":
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A workspace where the whole tiny profile has run once."""
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(workdir: Path, model: str, log_path: Path, port: int | None = None):
    """A real `transformers serve` process on 127.0.0.1 serving `model`; yields its port once healthy."""
    port = port or free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(BIN / "transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise AssertionError("transformers serve did not start:\n" + log_path.read_text())
                    time.sleep(0.5)
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)
