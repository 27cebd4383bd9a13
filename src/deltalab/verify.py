"""Final-answer verification with each task's own verifier."""

from __future__ import annotations

import json
import re
from functools import cache

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
ANSWER_LINE = re.compile(r"^A:(.*)$", re.M)


def extract_answer(completion: str) -> str | None:
    """The final answer a trace states: the last `<answer>…</answer>`, else the last `A:` line
    (micro-world traces), else None (math-verify then searches the whole completion)."""
    if tags := ANSWER_TAG.findall(completion):
        return tags[-1].strip()
    if lines := ANSWER_LINE.findall(completion):
        return lines[-1].strip()
    return None


@cache
def _rg_scorer(dataset: str):
    import reasoning_gym as rg

    return rg.get_score_answer_fn(dataset)


def score(verifier: str, completion: str, answer: str, metadata_json: str) -> tuple[str | None, float]:
    """(extracted answer, score in [0, 1]) for one completion."""
    extracted = extract_answer(completion)
    if verifier == "reasoning_gym":
        meta = json.loads(metadata_json)
        entry = {"question": "", "answer": answer, "metadata": meta}
        return extracted, float(_rg_scorer(meta["source_dataset"])(extracted, entry))
    from math_verify import parse, verify

    # No signal.alarm timeouts: stages may verify from worker threads.
    gold = parse(answer, parsing_timeout=None)
    pred = parse(extracted if extracted is not None else completion, parsing_timeout=None)
    return extracted, float(verify(gold, pred, timeout_seconds=None))
