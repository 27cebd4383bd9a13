"""Generation backends behind one interface: `generate(requests) -> completions`, in request order.

- `transformers`: in-process, batched, CPU or GPU (`backends/transformers.py`).
- `openai`: any OpenAI-compatible server — `vllm serve`, `transformers serve`, a hosted API
  (`backends/openai.py`).

Every request carries its own seed, so a row's sample never depends on which rows share its batch.
`model_revision` is the provenance hash of the local weights a backend loads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from deltalab.errors import UserError


class ChatTemplateError(UserError):
    """A model's chat template rejected the messages (most often: a system turn it does not take)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    greedy: bool = False

    def as_dict(self) -> dict:
        if self.greedy:
            return {"greedy": True, "max_new_tokens": self.max_new_tokens}
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    seed: int
    n: int = 1
    """Samples wanted; a backend returns `n` completions for this request, in order."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    seed: int | None = None
    """The seed of the request that produced it, where it differs from the request's (a top-up)."""

    def with_seed(self, seed: int) -> Completion:
        return replace(self, seed=seed)


def model_revision(path: str) -> str | None:
    """Hash of a local model's weights (provenance); None for hub ids (the hub has revisions)."""
    weights = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not weights:
        return None
    h = hashlib.sha256()
    for w in weights:
        h.update(w.read_bytes())
    return h.hexdigest()[:16]
