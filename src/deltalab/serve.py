"""Managed OpenAI-compatible servers (`serve:` in params): start, wait until healthy, always stop.

The server runs in its own process group, so stopping it also stops its workers (vLLM spawns one
per GPU). It is stopped when the block ends, when the stage fails, and when the stage gets SIGTERM
(Snakemake and SLURM cancel jobs that way); the kernel sends it SIGTERM if the stage dies outright.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deltalab.config import Serve
from deltalab.errors import UserError
from deltalab.signals import sigterm_raises

LOG_DIR = Path("logs/serve")
STOP_GRACE_S = 30.0
LAST_LINES = 5


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def command(cfg: Serve, model: str, port: int, seed: int = 0) -> list[str]:
    return shlex.split(cfg.command.format(model=model, port=port, host=cfg.host, tp=cfg.tp, seed=seed))


CONTINUOUS = "--continuous-batching"


@functools.lru_cache(maxsize=4)
def _has_continuous_batching(executable: str) -> bool:
    try:
        out = subprocess.run([executable, "serve", "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return CONTINUOUS in out.stdout


def with_continuous_batching(argv: list[str]) -> list[str]:
    """`transformers serve` answers concurrent requests one at a time unless told to batch them
    (measured: 8 concurrent judge requests 31.8 s -> 12.6 s on 2 CPU cores): add the flag where the
    installed version has it and the command does not already choose."""
    is_tf = len(argv) > 1 and Path(argv[0]).name == "transformers" and argv[1] == "serve"
    chosen = any(a in (CONTINUOUS, "--no-continuous-batching") for a in argv)
    if is_tf and not chosen and _has_continuous_batching(argv[0]):
        return [*argv, CONTINUOUS]
    return argv


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the server gets SIGTERM when the stage process dies, even by SIGKILL.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _last_lines(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-LAST_LINES:]) or "(empty log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def serving(cfg: Serve, model: str, label: str, seed: int = 0, batching: bool = False) -> Iterator[str]:
    """Run the server for `model` during the block; yields its OpenAI base URL (`http://host:port/v1`).
    `batching`: a `transformers serve` gets continuous batching (the judge's concurrent requests; not
    generation, whose seeded samples that server reproduces only for sequential requests)."""
    port = cfg.port or free_port(cfg.host)
    argv = command(cfg, model, port, seed)
    if batching:
        argv = with_continuous_batching(argv)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{label}.log"
    env = os.environ | cfg.env
    with sigterm_raises(), open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as err:
            raise UserError(f"serve ({label}): cannot start `{argv[0]}`: {err.strerror}") from None
        try:
            _wait_healthy(proc, f"http://{cfg.host}:{port}{cfg.health_path}", cfg.startup_timeout_s, label, log_path)
            yield f"http://{cfg.host}:{port}/v1"
        finally:
            _stop(proc)


@contextmanager
def endpoint(base_url: str | None, serve: Serve | None, model: str, label: str, seed: int = 0,
             batching: bool = False) -> Iterator[str | None]:
    """The server to send requests to during the block: `base_url`, or the URL of a managed server
    (`serve:`, arguments as for `serving`); None for an in-process backend (neither is set)."""
    if serve is None:
        yield base_url
        return
    with serving(serve, model, label, seed, batching) as url:
        yield url


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, label: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if proc.poll() is not None:
            raise UserError(f"serve ({label}): the server exited with code {proc.returncode} before {url} "
                            f"answered; last log lines ({log_path}): {_last_lines(log_path)}")
        if time.monotonic() > deadline:
            raise UserError(f"serve ({label}): {url} not healthy after {timeout_s:g} s; last log lines "
                            f"({log_path}): {_last_lines(log_path)}")
        time.sleep(0.5)
