"""Benchmark: orchestration overhead with every output present (goal: <= 3 s each).

- `snakemake -n --profile workflow/profiles/slurm --configfile configs/paper.yaml` in a temporary
  copy of the checkout's tracked files in which every output of the paper study exists: the dry run
  lists the outputs, they are created (empty files; extension-less outputs are the rules'
  `directory()` outputs), and `snakemake --touch` orders their mtimes and records the jobs. The
  timed dry run must then report "Nothing to be done".
- `dvc status` on the default micro study (dvc.yaml describes the micro-world only: it cannot run
  configs/paper.yaml, see docs/cluster.md "The DVC side"), in a checkout whose outputs are present
  (default: this one; dvc status only reads).

Each command runs --repeat times; the fastest wall time is reported with its CPU seconds and the
load average before it (the machine is shared).

    .venv/bin/python bench/orchestration.py [--repeat 3] [--dvc-dir .] [--configfile configs/paper.yaml]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 3.0
ENV = os.environ | {"PATH": f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, stdout + stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout + proc.stderr


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def paper_copy(configfile: str) -> Path:
    """A copy of the tracked files with every output of `configfile`'s study present and up to date."""
    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)
    _, _, out = run(["snakemake", "-n", "--configfile", configfile], work)
    outputs = {p.strip() for line in re.findall(r"^\s*output: (.*)$", out, re.M) for p in line.split(",")}
    for rel in outputs:
        path = work / rel
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:  # a directory() output
            path.mkdir(parents=True, exist_ok=True)
    run(["snakemake", "--touch", "--cores", "1", "--configfile", configfile], work)
    print(f"  {len(outputs)} outputs created and touched in {work}", flush=True)
    return work


def timed(name: str, cmd: list[str], cwd: Path, repeat: int, check: str) -> dict:
    runs = []
    for _ in range(repeat):
        load = loadavg()
        wall, cpu, out = run(cmd, cwd)
        if check not in out:
            raise SystemExit(f"{name}: expected {check!r} in its output:\n{out[-2000:]}")
        runs.append({"wall": wall, "cpu": cpu, "load": load})
        print(f"  {name}: {wall:.2f} s wall, {cpu:.2f} s CPU (load before {load})", flush=True)
    best = min(runs, key=lambda r: r["wall"])
    return best | {"name": name, "runs": [round(r["wall"], 2) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--configfile", default="configs/paper.yaml")
    ap.add_argument("--dvc-dir", type=Path, default=ROOT, help="a checkout with the micro study's outputs present")
    args = ap.parse_args()

    work = paper_copy(args.configfile)
    try:
        rows = [timed("snakemake -n (paper, slurm profile)",
                      ["snakemake", "-n", "--profile", "workflow/profiles/slurm", "--configfile", args.configfile],
                      work, args.repeat, "Nothing to be done")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stages = sum(1 for _ in re.finditer(r"^\s+cmd:", (args.dvc_dir / "dvc.lock").read_text(), re.M))
    rows.append(timed(f"dvc status (micro study, {stages} stages)", ["dvc", "status"], args.dvc_dir, args.repeat, ""))
    print(f"\n{'command':<42} {'best wall s':>11} {'CPU s':>6}  goal (<= {GOAL_S:.0f} s)   runs")
    for r in rows:
        print(f"{r['name']:<42} {r['wall']:11.2f} {r['cpu']:6.2f}  {'ok' if r['wall'] <= GOAL_S else 'MISSED':<14} "
              f"{r['runs']} (load before best: {r['load']})")
    print(f"{os.cpu_count()} cores; load average now {loadavg()}")


if __name__ == "__main__":
    sys.exit(main())
