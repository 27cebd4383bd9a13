"""Atomic, deterministic file writing and content hashes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

from deltalab.errors import UserError


def content_id(*parts: Any, length: int = 16) -> str:
    """A stable id: sha256 over the JSON of the parts (order matters)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from a base seed and names, so each unit of work has its own stream."""
    return int(content_id(*parts), 16) % (2**31 - 1)


def _prefix(target: Path) -> str:
    return f".{target.name}.deltalab-tmp."


def sweep(target: Path) -> None:
    """Remove what killed writers of `target` left beside it. SIGKILL skips every cleanup, and a stray
    file inside a directory output (data/judgments) would change that output's hash. Snakemake and
    DVC run one job per target at a time, so nothing found here is still in use."""
    for left in target.parent.glob(glob.escape(_prefix(target)) + "*"):
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
        else:
            left.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | Path, suffix: str = ""):
    """Yield a temporary path beside `target`; on success rename it into place, else remove it.
    An output that cannot be written (disk full, read-only, a file where its directory should be) is
    a UserError naming `target`, not a traceback naming the temporary file."""
    with unwritable(target), _atomic_path(Path(target), suffix) as tmp:
        yield tmp


@contextmanager
def unwritable(target: str | Path):
    """Errors writing `target` in the block become one UserError naming it."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{target}: cannot write ({err.strerror or err})") from None
    except pl.exceptions.PolarsError as err:
        # polars wraps the OSError of its own writes, and sometimes loses it ("Invalid thrift").
        why = str(err).strip().splitlines()[0]
        if _no_space(Path(target).parent):
            why = "No space left on device"
        raise UserError(f"{target}: cannot write ({why})") from None


def _no_space(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


@contextmanager
def _atomic_path(target: Path, suffix: str):
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(target: str | Path):
    """Yield a temporary directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    with unwritable(target):  # not around the block: it may read inputs (train does)
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep(target)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), dir=target.parent))
    old = target.with_name(_prefix(target) + "old")
    try:
        yield tmp
        # The old one goes aside first: a kill while it is being deleted never leaves half of it at `target`.
        with unwritable(target):
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    # No statistics: parquet stats embed nothing time-dependent, but keeping the writer options
    # fixed keeps the bytes identical across runs.
    with atomic_path(path, ".parquet") as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=False)


def rounded(obj: Any, digits: int = 4) -> Any:
    """Floats rounded for metrics files (no 0.07100000000000001 noise in diffs)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def open_cache(path: str | Path, schema: str, timeout: float = 60.0) -> sqlite3.Connection:
    """A SQLite cache file (created with `schema`, a CREATE TABLE IF NOT EXISTS statement).

    WAL + synchronous=NORMAL: every commit survives a killed process (not a power cut), cheaply, and
    readers in other processes never block the writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _setup_cache(path, schema, timeout)


def _locked(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


# Switching a new file to WAL takes an exclusive lock that sqlite's busy timeout does not wait for:
# jobs that open the same new cache at the same moment (SLURM starts many) get "database is
# locked" (measured: 50 of 100 racing pairs). Retry the setup briefly instead.
@retry(retry=retry_if_exception(_locked), wait=wait_random(0.02, 0.3), stop=stop_after_delay(60), reraise=True)
def _setup_cache(path: Path, schema: str, timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(schema)
        db.commit()
    except BaseException:
        db.close()
        raise
    return db
