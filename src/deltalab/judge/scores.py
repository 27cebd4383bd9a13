"""Probability-weighted scores (G-Eval style), for small or unconstrained judges.

At the position where the judge writes a dimension's score, its next-token distribution over "1".."5"
(renormalised to those five) gives the expected score, a float in [1, 5], and its argmax, the integer
score. `mass` is the probability the judge put on a score token at all (a judge that wanted to write
something else there has a low mass).

In-process (deltalab.judge.local) the distribution is read directly from the logits; through a server
it comes from the reply's `top_logprobs` at the score token (`from_logprobs`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from deltalab.config import DIMENSIONS
from deltalab.judge.rubric import ParseFailure

LEVELS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Distribution:
    probs: tuple[float, ...]  # P(score = 1..5), renormalised
    mass: float  # probability on the five score tokens before renormalising

    @property
    def expected(self) -> float:
        return round(sum((i + 1) * p for i, p in enumerate(self.probs)), 4)

    @property
    def argmax(self) -> int:
        return 1 + max(range(5), key=lambda i: (self.probs[i], -i))  # ties: the lower score

    def as_json(self) -> dict:
        return {"probs": [round(p, 6) for p in self.probs], "mass": round(self.mass, 6)}


def distribution(weights: list[float]) -> Distribution:
    """From the (unnormalised) probabilities of "1".."5"."""
    mass = sum(weights)
    if mass <= 0:
        raise ParseFailure("no probability on any score 1..5")
    return Distribution(tuple(w / mass for w in weights), mass)


def row(dists: dict[str, Distribution]) -> dict:
    """Judgment columns: the argmax as the integer score, the expected score beside it."""
    return {**{d: dists[d].argmax for d in DIMENSIONS}, **{f"{d}_expected": dists[d].expected for d in DIMENSIONS}}


def _score_at(dimension: str) -> re.Pattern:
    # `factuality: 4`, `"factuality": 4`, `**factuality**: 4`: the first digit after the name.
    return re.compile(rf"{dimension}\W{{0,6}}?([1-5])(?!\d)", re.I)


PATTERNS = {d: _score_at(d) for d in DIMENSIONS}


def from_logprobs(text: str, content: list[dict]) -> dict[str, Distribution]:
    """The five distributions from an OpenAI-style `logprobs.content` (one entry per generated token,
    each with `token` and `top_logprobs`) of the reply `text`."""
    starts, pos = [], 0
    for tok in content:
        starts.append(pos)
        pos += len(tok.get("token") or "")
    joined = "".join(tok.get("token") or "" for tok in content)
    if joined != text:  # offsets below are into the tokens' text
        text = joined
    out = {}
    for d in DIMENSIONS:
        m = PATTERNS[d].search(text)
        if m is None:
            raise ParseFailure(f"no score for {d} in the reply")
        at = m.start(1)
        i = max(k for k, s in enumerate(starts) if s <= at)
        weights = [0.0] * 5
        for alt in content[i].get("top_logprobs") or []:
            token = (alt.get("token") or "").strip()
            if token in LEVELS and isinstance(alt.get("logprob"), (int, float)):
                weights[int(token) - 1] += math.exp(alt["logprob"])
        out[d] = distribution(weights)
    return out
