"""Run `deltalab` so that it is SIGKILLed at an exact point: a Python audit hook watches the events the
process raises anyway (an import, a file opened, a directory made, a rename, an unlink, a SQLite
connect) and, at the chosen one, the process sends itself SIGKILL. Nothing of deltalab is replaced:
it runs unchanged up to the kill, and no sleep decides where it dies.

`steps` is a list of (audit event, fnmatch pattern over the event's path arguments, count): each step
waits for its count-th match after the previous step matched; the last one kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ENV = "DELTALAB_KILLPOINT"
HERE = Path(__file__).resolve().parent

# The child: arm the hook, then run the CLI exactly as the `deltalab` script does.
BOOT = f"import sys; sys.path.insert(0, {str(HERE)!r}); import killpoint; killpoint.arm(); " \
       "from deltalab.cli import main; sys.argv[0] = 'deltalab'; main()"


def arm() -> None:
    from fnmatch import fnmatchcase

    steps = [tuple(s) for s in json.loads(os.environ.pop(ENV))]
    state = {"step": 0, "seen": 0}

    def hook(event: str, args: tuple) -> None:
        if state["step"] == len(steps):  # killing (os.kill raises an event too)
            return
        name, pattern, count = steps[state["step"]]
        if event != name:
            return
        paths = [os.fsdecode(a) for a in args if isinstance(a, (str, bytes, os.PathLike))]
        if not any(fnmatchcase(p, pattern) for p in paths):
            return
        state["seen"] += 1
        if state["seen"] < count:
            return
        state["step"], state["seen"] = state["step"] + 1, 0
        if state["step"] == len(steps):
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def run(args: list[str], cwd: Path, steps: list[tuple[str, str, int]], env: dict | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`deltalab *args` in `cwd`, killed at `steps` (the caller checks it really died: returncode -9)."""
    env = (env or os.environ) | {ENV: json.dumps(steps)}
    return subprocess.run([sys.executable, "-c", BOOT, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
