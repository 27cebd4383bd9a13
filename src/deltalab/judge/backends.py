"""`judge.backend` -> its judge (a deltalab.judge.Backend), made with (params, server URL or None)."""

from __future__ import annotations

from collections.abc import Callable

from deltalab.config import Params
from deltalab.judge import Backend
from deltalab.judge.llm import ServedJudge
from deltalab.judge.local import LocalJudge
from deltalab.judge.verifier import VerifierJudge

BACKENDS: dict[str, Callable[[Params, str | None], Backend]] = {
    "verifier": VerifierJudge,
    "openai": ServedJudge,
    "transformers": LocalJudge,
}
"""Its keys are the `backend` literal of config.Judge (a test checks they agree)."""
