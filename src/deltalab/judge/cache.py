"""Persistent cache of judge responses: SQLite (WAL), one row per successful HTTP response.

A response is committed at most COMMIT_EVERY_S after it arrives (inside an event loop the
responses of that interval share one commit: one commit each cost ~10% of the judge's CPU at high
concurrency), so a run killed with SIGKILL keeps all but the last tenth of a second of what it
received, and a rerun asks only for what is missing. Only the
response text, token usage and (probability scoring) log-probabilities are stored: never the request headers, so never the API key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

from deltalab.io import open_cache

COMMIT_EVERY_S = 0.1


def cache_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines a response."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Cached(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: str | None = None
    """The reply's `logprobs.content` as JSON (probability scoring through a server), else None."""


class ResponseCache:
    def __init__(self, path: str | Path):
        self.db = open_cache(path, "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL,"
                                   " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)", timeout=30)
        # Log-probabilities in a table of their own: caches written before they existed stay readable.
        self.db.execute("CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, content TEXT NOT NULL)")
        self.pending: asyncio.TimerHandle | None = None

    def get(self, key: str) -> Cached | None:
        row = self.db.execute(
            "SELECT r.text, r.prompt_tokens, r.completion_tokens, l.content FROM responses r"
            " LEFT JOIN logprobs l ON l.key = r.key WHERE r.key = ?", (key,)
        ).fetchone()
        return Cached(*row) if row else None

    def put(self, key: str, value: Cached) -> None:
        # First answer wins: a key's stored response never changes once a row may have used it.
        self.db.execute("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)", (key, *value[:3]))
        if value.logprobs is not None:
            self.db.execute("INSERT OR IGNORE INTO logprobs VALUES (?, ?)", (key, value.logprobs))
        if self.pending is None:
            try:
                self.pending = asyncio.get_running_loop().call_later(COMMIT_EVERY_S, self.commit)
            except RuntimeError:  # no event loop: commit now
                self.db.commit()

    def commit(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        self.db.commit()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.commit()
        self.db.close()
