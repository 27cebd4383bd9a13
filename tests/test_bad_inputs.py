"""The bad-input suite: every case in tests/bad_inputs/cases.yaml runs a real `deltalab` stage command
in a copy of the tiny workspace and must fail cleanly: exit code != 0, exactly one stderr line
(`error: ...`) holding the case's fragments (what and where), no traceback, and no file anywhere in the
workspace created, changed or removed (no half-written output, no leftover temp file).

Adding a case is adding an entry to cases.yaml (see the comment at its top).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import deltalab, free_port

CASES_DIR = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((CASES_DIR / "cases.yaml").read_text())
# Not outputs: a managed server's log and the judge's response cache may appear.
NOT_OUTPUTS = ("logs", ".cache")


def merge(base: dict, patch: dict) -> dict:
    """`patch` deep-merged into `base`; a null value removes the key."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (temp files included) with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_OUTPUTS or not path.is_file():
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@contextmanager
def mounted(where: Path, kind: str, seed_files: dict[str, str]):
    """A small tmpfs at `where`: `full` (no byte left) or `readonly`, holding `seed_files` first."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        for name, text in seed_files.items():
            (where / name).write_text(text)
        if kind == "full":
            fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 512):
                    pass
            except OSError:  # ENOSPC: not a byte left
                pass
            finally:
                os.close(fd)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def set_up(ws: Path, case: dict, port: int, stack: ExitStack) -> None:
    params = ws / "params.yaml"
    if "params_text" in case:
        params.write_text(case["params_text"])
    if "params" in case:
        patch = yaml.safe_load(yaml.safe_dump(case["params"]).replace("CLOSED_PORT", str(port)))
        params.write_text(yaml.safe_dump(merge(yaml.safe_load(params.read_text()), patch), sort_keys=False))
    for rel in case.get("remove", []):
        path = ws / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for rel, content in case.get("files", {}).items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for rel, columns in case.get("parquet", {}).items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(columns).write_parquet(ws / rel)
    if "mount" in case:
        m = case["mount"]
        stack.enter_context(mounted(ws / m["path"], m["kind"], m.get("files", {})))


def test_catalogue_is_large_and_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


@pytest.mark.bad_inputs
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_fails_cleanly(case, tiny, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny, ws, ignore=shutil.ignore_patterns(*NOT_OUTPUTS))
    port = free_port()
    with ExitStack() as stack:
        set_up(ws, case, port, stack)
        before = snapshot(ws)
        proc = deltalab(*case["run"], cwd=ws, check=False)
        after = snapshot(ws)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: "), line
    for fragment in case["expect"]:
        assert fragment.replace("CLOSED_PORT", str(port)) in line, f"{fragment!r} not in {line!r}"
    created = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (created or removed or changed), f"created {created}, removed {removed}, changed {changed}"
