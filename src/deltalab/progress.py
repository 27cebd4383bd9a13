"""Progress bars that stay quiet when stderr is not a terminal (logs, CI, orchestrators)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


def summary(line: str) -> None:
    """The one-line summary every stage ends with."""
    print(line, flush=True)
