"""Caches opened by many jobs at once (SLURM starts them together) never fail with "database is
locked": the WAL switch of a new SQLite file is retried."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from deltalab.io import open_cache

pytestmark = pytest.mark.integration  # three processes race to open one new cache

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)"


def _open_and_write(path: str, barrier, name: str) -> None:
    barrier.wait()
    db = open_cache(path, SCHEMA)
    db.execute("INSERT INTO t VALUES (?)", (name,))
    db.commit()
    db.close()


def test_processes_opening_a_new_cache_together_all_succeed(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(30):  # without the retry about half of such rounds failed
        path = str(tmp_path / f"cache{round_}.sqlite")
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_and_write, args=(path, barrier, f"p{i}")) for i in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        db = open_cache(path, SCHEMA)
        assert sorted(k for (k,) in db.execute("SELECT k FROM t")) == ["p0", "p1", "p2"]
        db.close()
