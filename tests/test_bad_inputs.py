"""The bad-input suite: every case in tests/bad_inputs/cases.yaml runs a real `deltalab` stage command
in a copy of the tiny workspace and must fail cleanly: exit code != 0, exactly one stderr line
(`error: ...`) holding the case's `where` (file, key, line) and `what` (the problem), no traceback, and
no file anywhere in the workspace created, changed or removed (no half-written output, no leftover temp
file).

Adding a case is adding an entry to cases.yaml (see the comment at its top). Cases that mount a tmpfs
need root and are skipped without it.
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
KEYS = {"id", "run", "where", "what", "params_text", "params", "remove", "files", "parquet", "mount"}
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (disk full / read-only): needs root")


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


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_every_case_says_where_and_what(case):
    """Each case pins both the place and the problem, so a message that only names a path cannot pass."""
    assert set(case) <= KEYS, f"unknown keys {sorted(set(case) - KEYS)}"
    where, what = case.get("where"), case.get("what")
    assert isinstance(where, str) and where.strip(), "`where`: the file, key, line or name the error points at"
    assert isinstance(what, str) and what.strip(), "`what`: the problem the error states"
    assert what not in where, "`what` must add the problem to `where`"
    if "params" in case:  # a patched key is at fault: the bare params path is not enough
        assert where.rstrip(": ") != "params.yaml", "name the key: `params.yaml: a.b.c:`"


@pytest.mark.bad_inputs
@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=[NEEDS_ROOT] if "mount" in c else [])
                                  for c in CASES])
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
    for key in ("where", "what"):
        fragment = case[key].replace("CLOSED_PORT", str(port))
        assert fragment in line, f"{key} {fragment!r} not in {line!r}"
    created = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (created or removed or changed), f"created {created}, removed {removed}, changed {changed}"
