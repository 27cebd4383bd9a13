"""Benchmark: the whole default micro study cold, stage by stage (goal: `make run` <= 15 min on 2 cores).

Clones this checkout's HEAD into a fresh directory (no outputs, an empty DVC cache), runs `dvc repro`
there with this .venv on PATH, timestamps every "Running stage" line as it streams, and prints one
row per stage, the total per stage kind (micro_models, generate, judge, pairs, train, evaluate, ...),
the slowest stage and the total. .venv creation (~2 min) is not included: `make setup` times it.

    .venv/bin/python bench/study.py [--keep DIR]

With --keep the clone stays in DIR (its .dvc/cache holds every output, and its dvc.lock can be
compared with this checkout's: byte-identical artifacts give the same hashes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

GOAL_S = 15 * 60
ROOT = Path(__file__).resolve().parent.parent
STAGE = re.compile(r"^Running stage '([^']+)'")


def load() -> float:
    """CPU seconds used by every process on the machine so far (to report other load)."""
    fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def run(work: Path) -> tuple[list[tuple[str, float]], float]:
    env = os.environ | {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(["dvc", "repro"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    start = time.perf_counter()
    stages: list[tuple[str, float]] = []  # (stage, start offset)
    for line in proc.stdout:
        if m := STAGE.match(line):
            stages.append((m.group(1), time.perf_counter() - start))
            print(f"{stages[-1][1]:7.1f}s  {m.group(1)}", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        sys.exit(f"dvc repro failed in {work} (exit {proc.returncode})")
    total = time.perf_counter() - start
    ends = [s for _, s in stages[1:]] + [total]
    return [(name, end - begin) for (name, begin), end in zip(stages, ends)], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="clone into this (new) directory and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-study-")) / "study"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    cpu0, t0 = load(), time.perf_counter()
    try:
        rows, total = run(work)
    finally:
        if not args.keep:
            shutil.rmtree(work.parent, ignore_errors=True)
    busy = (load() - cpu0) / (time.perf_counter() - t0)

    kinds: dict[str, list[float]] = defaultdict(list)
    for name, took in rows:
        kinds[name.split("@")[0]].append(took)
    print(f"{'stage':<34} {'seconds':>8}")
    for name, took in rows:
        print(f"{name:<34} {took:8.1f}")
    print(f"\n{'stage kind':<20} {'stages':>6} {'seconds':>8} {'share':>6}")
    for kind, times in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(f"{kind:<20} {len(times):6d} {sum(times):8.1f} {sum(times) / total:6.0%}")
    slow = max(rows, key=lambda r: r[1])
    verdict = "meets" if total <= GOAL_S else "misses"
    print(f"\ntotal {total:.1f} s ({total / 60:.1f} min; {verdict} the {GOAL_S / 60:.0f} min goal); slowest stage "
          f"{slow[0]} {slow[1]:.1f} s; machine busy {busy:.2f} cores of {os.cpu_count()} (this run + other load)")


if __name__ == "__main__":
    main()
