"""`deltalab sync`: after `dvc pull`, make Snakemake agree that nothing needs to run.

DVC restores file contents but not modification times, so in a fresh clone Snakemake sees inputs
newer than outputs and would rerun jobs whose results were just pulled. Once `dvc status` confirms
the workspace matches dvc.lock, `snakemake --touch` marks those outputs up to date (in DAG order)
without running anything; a final `snakemake -n` checks that it worked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from deltalab.errors import UserError


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess:
    # `python -m` runs the dvc and snakemake installed beside deltalab, whatever PATH says.
    return subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed command's output: the first error line, else the last line."""
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines() if line.strip()]
    for line in lines:
        if re.match(r"(ERROR|\w*Error|error)\b", line):
            return re.sub(r"^ERROR:\s*", "", line)
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _describe(changes: list) -> str:
    """`{"changed outs": {"data/x": "modified"}}`-style entries of `dvc status --json` as short text."""
    parts = []
    for change in changes:
        if isinstance(change, dict):
            for paths in change.values():
                parts += [f"{path} {state}" for path, state in paths.items()] if isinstance(paths, dict) else [str(paths)]
        else:
            parts.append(str(change))
    return ", ".join(parts[:2]) + (", ..." if len(parts) > 2 else "")


def stages_for(targets: list[str], lock: Path = Path("dvc.lock")) -> list[str]:
    """The dvc.lock stages that write `targets` (output files or directories, or files inside them).
    `dvc status --with-deps` only walks upstream from stage names, not from file paths."""
    if not lock.exists():
        raise UserError(f"{lock}: not found (nothing has been reproduced and committed here)")
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise UserError(f"{lock}: not a dvc.lock file (no `stages:`)") from None
    found = []
    for target in targets:
        want = PurePosixPath(target)
        names = [name for name, stage in stages.items()
                 if any(want == PurePosixPath(out["path"]) or PurePosixPath(out["path"]) in want.parents
                        for out in stage.get("outs", []))]
        if not names:
            raise UserError(f"{target}: not an output recorded in {lock} (give output files, e.g. data/pairs/A.parquet)")
        found += [name for name in names if name not in found]
    return found


def stale_stages(stages: list[str]) -> dict[str, str]:
    """Stages (these and their upstream; all when none are given) whose workspace differs from dvc.lock."""
    proc = _run("dvc", ["status", "--json", *(["--with-deps", *stages] if stages else [])])
    if proc.returncode != 0:
        raise UserError(f"dvc status: {_error_line(proc)}")
    try:
        status = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        raise UserError(f"dvc status: unexpected output: {proc.stdout.strip()[:200]}") from None
    return {stage: _describe(changes) for stage, changes in status.items()}


def _jobs(out: str) -> int:
    """The job total of a Snakemake run or dry-run (0 when there is nothing to be done)."""
    match = re.search(r"^total\s+(\d+)$", out, re.M)
    return int(match[1]) if match else 0


def run(targets: list[str], configfile: Path | None = None, pull: bool = False) -> str:
    """Check the pulled data against dvc.lock, touch Snakemake's outputs, and return a one-line summary."""
    stages = stages_for(targets) if targets else []
    if pull:
        proc = _run("dvc", ["pull", *(["--with-deps", *stages] if stages else [])])
        if proc.returncode != 0:
            raise UserError(f"dvc pull: {_error_line(proc)}")
    stale = stale_stages(stages)
    if stale:
        listed = "; ".join(f"{stage} ({what})" for stage, what in sorted(stale.items()))
        raise UserError(f"dvc status: {len(stale)} stage(s) do not match dvc.lock: {listed} "
                        "(run `dvc pull`, or `dvc repro` to rebuild them)")
    # Targets before --configfile, which takes one or more values and would swallow them.
    smk = [*targets, "--cores", "1", *(["--configfile", str(configfile)] if configfile else [])]
    touch = _run("snakemake", ["--touch", *smk])
    if touch.returncode != 0:
        raise UserError(f"snakemake --touch: {_error_line(touch)}")
    check = _run("snakemake", ["--dry-run", *smk])
    if check.returncode != 0:
        raise UserError(f"snakemake --dry-run: {_error_line(check)}")
    left = check.stdout + check.stderr
    if "Nothing to be done" not in left:
        # e.g. .snakemake/metadata from an older run with other params: Snakemake reruns on params.
        raise UserError(f"snakemake --dry-run: still {_jobs(left)} job(s) to run after --touch "
                        "(`snakemake -n -r` says why)")
    touched = _jobs(touch.stdout + touch.stderr)
    scope = " ".join(targets) or "the whole pipeline"
    return f"sync: {scope} matches dvc.lock; snakemake --touch marked {touched} job(s) up to date; nothing to be done"
