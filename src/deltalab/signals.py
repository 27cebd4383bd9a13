"""SIGTERM (how Snakemake, SLURM and DVC cancel jobs) as an exception, so cleanup runs and the stage
can say in one line that it was stopped."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

received = False
"""Set once SIGTERM arrived in this process."""


def _raise(signum, frame):
    global received
    received = True
    # The exit can unwind from inside an asyncio task, and asyncio then logs that task's SystemExit
    # with a traceback as the process ends; a cancelled stage owes no traceback.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    raise SystemExit(128 + signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM becomes SystemExit(143) during the block, so `finally` blocks (a managed server's stop,
    a subprocess's kill, a temporary output's removal) run."""
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
