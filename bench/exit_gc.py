"""Benchmark: what `gc.freeze()` at the end of `deltalab`'s main saves at interpreter exit.

Runs real stages of the tiny profile (built in a temporary directory first: prompts, two micro
models, their traces) in fresh processes, alternating with and without the freeze (the child
replaces `gc.freeze` with a no-op), and reports the exit's cost from `main()` returning to the
process being gone: wall seconds, and CPU seconds (the child's rusage at exit minus its CPU time
when main returned), which a loaded machine disturbs far less than wall time.

Usage: .venv/bin/python bench/exit_gc.py [--reps 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = (["validate", "params.yaml"], ["judge"], ["generate", "weak"])


def child(mode: str, args: list[str]) -> None:
    import gc

    if mode == "nofreeze":
        gc.freeze = lambda: None  # main() looks gc.freeze up when it exits
    sys.argv = ["deltalab", *args]
    from deltalab import cli

    try:
        cli.main()
    finally:
        print(f"END {time.perf_counter()} {time.process_time()} {len(sys.modules)}", file=sys.stderr, flush=True)


def build(work: Path) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    shutil.copy(ROOT / "tests" / "tiny" / "params.yaml", work / "params.yaml")
    excl = ["--exclude", "data/prompts/eval_id.parquet", "--exclude", "data/prompts/eval_ood.parquet"]
    for args in (["prompts", "--metrics", "metrics/prompts.json"], ["micro-models", "weak", *excl],
                 ["micro-models", "strong", *excl], ["generate", "weak"], ["generate", "strong"]):
        subprocess.run([sys.executable, "-m", "deltalab.cli", *args], cwd=work, env=env, check=True,
                       capture_output=True)


def measure(work: Path, args: list[str], reps: int) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in ("freeze", "nofreeze")}
    modules = ""
    for _ in range(reps):
        for mode, r in res.items():
            proc = subprocess.Popen([sys.executable, __file__, "--child", mode, *args], cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            err = proc.stderr.read()
            _, status, usage = os.wait4(proc.pid, 0)
            gone = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"deltalab {' '.join(args)} failed:\n{err}")
            _, end, cpu, modules = [line for line in err.splitlines() if line.startswith("END ")][-1].split()
            r["wall"].append(gone - float(end))
            r["cpu"].append(usage.ru_utime + usage.ru_stime - float(cpu))
    print(f"deltalab {' '.join(args)} ({modules} modules imported):")
    for mode, r in res.items():
        print(f"  {mode:8s} " + "  ".join(f"{k} s: median {statistics.median(v):.3f} min {min(v):.3f}"
                                         for k, v in r.items()))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=6)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="deltalab-exit-") as tmp:
        work = Path(tmp)
        build(work)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for args in STAGES:
            measure(work, args, opts.reps)
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
