"""Reference log-probabilities, computed once per (reference model, sequence) and reused.

DPO compares the policy with a frozen reference on every pair. TRL can precompute the reference
once per run (`precompute_ref_log_probs`), but every ablation and every seed is its own run, and the
top-k / random-k ablations train on subsets of the same pairs: without reuse the same forward passes
run again and again. Here each sequence's reference log-prob (sum over its completion tokens) is
stored in SQLite under a key of (reference weights, max_length, token ids); any later run that meets
the same sequence reads it back.

Values never depend on which run computed them or on batching: sequences are batched only with
sequences of exactly the same length (no padding), and a row's result on CPU was checked to be
bit-identical for batch sizes 1, 7 and 64.

The database is opened on first use, so that under several processes (accelerate launch) the main
process can open, fill and close it before the others open it and only read.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from deltalab.io import open_cache


class ReferenceCache:
    def __init__(self, path: str | Path, model_revision: str, max_length: int):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self.scope = f"{model_revision}:{max_length}"
        self.max_length = max_length
        self.hits = 0
        self.computed = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_cache(self.path, "CREATE TABLE IF NOT EXISTS logps (key TEXT PRIMARY KEY, logp REAL NOT NULL)")
        return self._db

    def key(self, ids: Sequence[int], start: int) -> str:
        blob = f"{self.scope}:{start}:{','.join(map(str, ids))}"
        return hashlib.sha256(blob.encode()).hexdigest()

    def logps(self, model, sequences: Sequence[tuple[list[int], int]], batch_size: int) -> list[float]:
        """Sum of completion-token log-probs for each (prompt+completion ids, completion start),
        truncated to max_length like TRL's collator (keep the start)."""
        seqs = [(ids[: self.max_length], start) for ids, start in sequences]
        keys = [self.key(ids, start) for ids, start in seqs]
        found = self._get(set(keys))
        self.hits += sum(k in found for k in keys)
        missing = {k: s for k, s in zip(keys, seqs) if k not in found}
        if missing:
            found.update(self._compute(model, missing, batch_size))
        return [found[k] for k in keys]

    def _get(self, keys: set[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        keys_list = sorted(keys)
        for i in range(0, len(keys_list), 500):
            chunk = keys_list[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(f"SELECT key, logp FROM logps WHERE key IN ({marks})", chunk).fetchall())
        return out

    @torch.inference_mode()
    def _compute(self, model, missing: dict[str, tuple[list[int], int]], batch_size: int) -> dict[str, float]:
        by_length: dict[int, list[str]] = defaultdict(list)
        for k, (ids, _) in sorted(missing.items()):
            by_length[len(ids)].append(k)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        for keys in by_length.values():
            for i in range(0, len(keys), batch_size):
                chunk = keys[i : i + batch_size]
                ids = torch.tensor([missing[k][0] for k in chunk], device=device)
                logits = model(input_ids=ids).logits[:, :-1].float()
                token_logps = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                for row, k in enumerate(chunk):
                    start = missing[k][1]
                    out[k] = float(token_logps[row, start - 1 :].sum())
        model.train(was_training)
        self.db.executemany("INSERT OR IGNORE INTO logps VALUES (?, ?)", list(out.items()))
        self.db.commit()
        self.computed += len(out)
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
