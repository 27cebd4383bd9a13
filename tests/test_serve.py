"""Managed servers (`serve:`): the stage starts the server, waits for /health, sends its requests
there, and always stops it — after success, after a failed start, on SIGTERM and when killed.

Real processes throughout: `transformers serve` for the end-to-end run, and tests/fake_vllm.py (a
scripted stand-in for `vllm serve` with a reasoning parser) where the test needs `n`, reasoning
fields, a slow reply or a PID to watch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import BIN, ROOT, deltalab

FAKE = f"{sys.executable} {ROOT / 'tests' / 'fake_vllm.py'}"


def workspace(tiny: Path, tmp: Path, generator: dict, **runtime) -> Path:
    """A directory with the tiny params plus generator `served`, reading the tiny prompts."""
    data = yaml.safe_load((tiny / "params.yaml").read_text())
    data["generators"]["served"] = {"micro_model": "strong", "backend": "openai", **generator}
    data["runtime"]["generate"] |= runtime
    (tmp / "data" / "models").mkdir(parents=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(data))
    os.symlink(tiny / "data" / "models" / "strong", tmp / "data" / "models" / "strong")
    return tmp


def generate(work: Path, tiny: Path, check: bool = True) -> subprocess.CompletedProcess:
    return deltalab("generate", "served", "--prompts", str(tiny / "data/prompts/train.parquet"), cwd=work, check=check)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_generate_with_a_managed_transformers_serve(tiny, tmp_path):
    """End to end on CPU: deltalab starts `transformers serve`, generates, and stops it; greedy
    answers equal the in-process backend's, and `n` is topped up (transformers serve ignores it)."""
    work = workspace(tiny, tmp_path, {
        "serve": {"command": "transformers serve {model} --host {host} --port {port}", "startup_timeout_s": 120},
        "n": 2, "max_new_tokens": 24,
    }, concurrency=1)
    proc = generate(work, tiny)
    assert "generate served: wrote data/traces/served.parquet (48 traces" in proc.stdout

    served = pl.read_parquet(work / "data/traces/served.parquet")
    assert served.height == 48 and served["sample_index"].to_list() == [0, 1] * 24
    assert served.group_by("prompt_id").agg(pl.col("seed").n_unique())["seed"].to_list() == [2] * 24
    local = pl.read_parquet(tiny / "data/traces/strong.greedy.parquet").select("prompt_id", local="completion")
    remote = pl.read_parquet(work / "data/traces/served.greedy.parquet").select("prompt_id", remote="completion")
    both = local.join(remote, on="prompt_id")
    assert both.height == 24 and (both["local"] == both["remote"]).all()

    assert (work / "logs/serve/generate-served.log").stat().st_size > 0  # the server's own output
    assert not _servers_started_in(work), "the server outlived the stage"


def _servers_started_in(work: Path) -> list[int]:
    """PIDs of `transformers serve` processes started from `work`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if b"serve" in cmd and cwd == str(work) and alive(int(proc.name)):
                pids.append(int(proc.name))
    return pids


def test_n_and_reasoning_content_are_stored(tiny, tmp_path):
    """A vLLM-style server: one request per prompt with `n`, and the reasoning kept in the trace."""
    requests = tmp_path / "requests.jsonl"
    work = workspace(tiny, tmp_path / "w", {
        "serve": {"command": FAKE + " --port {port} --requests-log " + str(requests)},
        "n": 3, "greedy": False,
    })
    generate(work, tiny)
    sent = [json.loads(line) for line in requests.read_text().splitlines()]
    assert len(sent) == 24 and {r["n"] for r in sent} == {3}
    traces = pl.read_parquet(work / "data/traces/served.parquet")
    assert traces.height == 72
    first = traces.row(0, named=True)
    assert first["completion"].startswith("<think>\nthinking about ") and "choice 0" in first["completion"]
    assert first["completion"].endswith(f"</think>\n\nThe answer is {first['seed'] % 97}.")
    assert traces.group_by("prompt_id").agg(pl.col("seed").n_unique())["seed"].to_list() == [1] * 24


def test_reasoning_format_is_configurable(tiny, tmp_path):
    work = workspace(tiny, tmp_path, {
        "serve": {"command": FAKE + " --port {port} --field reasoning"},
        "n": 1, "greedy": False, "reasoning_format": "{content}",
    })
    generate(work, tiny)
    completions = pl.read_parquet(work / "data/traces/served.parquet")["completion"]
    assert completions.str.starts_with("The answer is ").all()


def test_a_server_that_never_gets_healthy_is_reported_and_stopped(tiny, tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os,time; open('{pid_file}','w').write(str(os.getpid())); print('loading weights 3/30', flush=True); time.sleep(120)"
    work = workspace(tiny, tmp_path / "w", {
        "serve": {"command": f"{sys.executable} -c \"{script}\" {{port}}", "startup_timeout_s": 3},
    })
    proc = generate(work, tiny, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "/health not healthy after 3 s" in line and "loading weights 3/30" in line
    assert not alive(int(pid_file.read_text()))
    assert not (work / "data/traces/served.parquet").exists()


def test_a_server_that_exits_at_start_is_reported(tiny, tmp_path):
    script = "import sys; print('torch.OutOfMemoryError: CUDA out of memory', flush=True); sys.exit(3)"
    work = workspace(tiny, tmp_path, {"serve": {"command": f"{sys.executable} -c \"{script}\" {{port}}"}})
    proc = generate(work, tiny, check=False)
    assert proc.returncode == 2 and "exited with code 3" in proc.stderr and "CUDA out of memory" in proc.stderr


def test_a_missing_server_program_is_one_line(tiny, tmp_path):
    work = workspace(tiny, tmp_path, {"serve": {"command": "no-such-vllm serve {model} --port {port}"}})
    proc = generate(work, tiny, check=False)
    assert proc.returncode == 2 and "cannot start `no-such-vllm`" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_server_stops_when_the_stage_is_cancelled_or_killed(tiny, tmp_path, sig):
    """SIGTERM (how Snakemake and SLURM cancel a job): the stage stops its server and exits.
    SIGKILL: the server gets SIGTERM from the kernel (parent-death signal)."""
    pid_file = tmp_path / "pid"
    work = workspace(tiny, tmp_path / "w", {
        "serve": {"command": FAKE + f" --port {{port}} --delay 60 --pid-file {pid_file}"}, "greedy": False,
    })
    stage = subprocess.Popen([str(BIN / "deltalab"), "generate", "served", "--prompts",
                              str(tiny / "data/prompts/train.parquet")], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(pid_file.exists)
    server = int(pid_file.read_text())
    time.sleep(1.5)  # requests are in flight
    stage.send_signal(sig)
    stage.wait(timeout=60)
    assert stage.returncode != 0
    wait_for(lambda: not alive(server), timeout=40)
    assert not (work / "data/traces/served.parquet").exists()
    if sig == signal.SIGTERM:  # the stage says so, in one line
        err = stage.stderr.read()
        assert "Traceback" not in err
        [line] = [x for x in err.splitlines() if x.strip()]
        assert line.startswith("error: deltalab generate served: stopped by SIGTERM"), err


@pytest.mark.integration  # asks the installed `transformers serve --help` for the flag
def test_a_managed_transformers_serve_judge_batches_continuously():
    """The judge's managed `transformers serve` gets --continuous-batching (this transformers has it);
    other servers, and a command that already chooses, are left as written."""
    from deltalab.serve import with_continuous_batching

    assert with_continuous_batching(["transformers", "serve", "m", "--port", "1"])[-1] == "--continuous-batching"
    assert with_continuous_batching(["transformers", "serve", "m", "--no-continuous-batching"]).count("--no-continuous-batching") == 1
    assert "--continuous-batching" not in with_continuous_batching(["transformers", "serve", "m", "--no-continuous-batching"])
    assert with_continuous_batching(["vllm", "serve", "m"]) == ["vllm", "serve", "m"]
