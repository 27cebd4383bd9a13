"""Managed OpenAI-compatible servers (`serve:` in params): start, wait until healthy, always stop.

The server runs in its own process group, so stopping it also stops its workers (vLLM spawns one
per GPU). It is stopped when the block ends, when the stage fails, and when the stage gets SIGTERM
(Snakemake and SLURM cancel jobs that way); the kernel sends it SIGTERM if the stage dies outright.
"""

from __future__ import annotations

import ctypes
import logging
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

LOG_DIR = Path("logs/serve")
STOP_GRACE_S = 30.0
LAST_LINES = 5


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def command(cfg: Serve, model: str, port: int, seed: int = 0) -> list[str]:
    return shlex.split(cfg.command.format(model=model, port=port, host=cfg.host, tp=cfg.tp, seed=seed))


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
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM becomes SystemExit, so `finally` blocks (the server's stop) run."""

    def handler(signum, frame):
        # The exit can unwind from inside an asyncio task, and asyncio then logs that task's
        # SystemExit with a traceback as the process ends; a cancelled stage owes no traceback.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def serving(cfg: Serve, model: str, label: str, seed: int = 0) -> Iterator[str]:
    """Run the server for `model` during the block; yields its OpenAI base URL (`http://host:port/v1`)."""
    port = cfg.port or free_port(cfg.host)
    argv = command(cfg, model, port, seed)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{label}.log"
    env = os.environ | cfg.env
    with _sigterm_raises(), open(log_path, "w") as log:
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
