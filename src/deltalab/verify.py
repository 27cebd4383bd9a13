"""Final answers: read them out of a trace and score them with the task's own verifier.

Two kinds of trace:
- **step traces** of the micro-world's models (`S1:38-57=-19 / ... / A:-9`): the answer is the last
  `<answer>…</answer>`, else the last `A:` line; nothing else. The models were trained to write that
  line, so a trace without it has not answered. Chain-sum step traces also get per-step checks.
- **free-form traces** of every other model: deltalab.answers reads the answer in a documented
  order (answer tags, the last `\\boxed{}`, answer phrases, bold, and for numeric golds the last
  number); `format_ok` says whether an explicit marker stated it (everything but the last number).

Scoring: reasoning-gym's `score_answer` for reasoning-gym tasks, math-verify for files and datasets
(given the extracted answer; when nothing was extracted, math-verify searches the whole completion).
"""

from __future__ import annotations

import json
import re
from functools import cache

from deltalab import answers
from deltalab.micro.traces import check_trace, step_expression

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
ANSWER_LINE = re.compile(r"^A:(.*)$", re.M)
INTEGER = re.compile(r"[+\-\u2212]?\d[\d,]*")


def step_answer(completion: str) -> str | None:
    """The final answer of a micro-world step trace: the last `<answer>…</answer>`, else the last
    `A:` line, else None."""
    if tags := ANSWER_TAG.findall(completion):
        return tags[-1].strip()
    if lines := ANSWER_LINE.findall(completion):
        return lines[-1].strip()
    return None


@cache
def _rg_scorer(dataset: str):
    import reasoning_gym as rg

    return rg.get_score_answer_fn(dataset)


def extract(completion: str, gold: str, steps: bool) -> answers.Extracted:
    if steps:
        found = step_answer(completion)
        return answers.Extracted(found, "answer_line" if found is not None else None)
    numeric = answers.is_numeric(gold)
    return answers.extract(completion, numeric, numeric and INTEGER.fullmatch(gold.strip()) is not None)


def score(verifier: str, completion: str, gold: str, metadata_json: str, steps: bool = False) -> tuple[answers.Extracted, float]:
    """(the extracted answer, score in [0, 1]) for one completion."""
    found = extract(completion, gold, steps)
    if verifier == "reasoning_gym":
        meta = json.loads(metadata_json)
        entry = {"question": "", "answer": gold, "metadata": meta}
        return found, float(_rg_scorer(meta["source_dataset"])(found.text, entry))
    from math_verify import parse, verify

    # No signal.alarm timeouts: stages may verify from worker threads.
    target = _math(gold)
    pred = parse(completion, parsing_timeout=None) if found.text is None else _math(found.text)
    return found, float(verify(target, pred, timeout_seconds=None))


def _math(text: str):
    """math-verify's reading of a bare answer. Bare LaTeX ("2\\sqrt{2}", dataset golds often are) is
    read as LaTeX only between $...$: as plain text "2\\sqrt{2}" would parse as 2."""
    from math_verify import parse

    if "\\" in text:
        return parse(f"${text}$", parsing_timeout=None) or parse(text, parsing_timeout=None)
    return parse(text, parsing_timeout=None) or parse(f"${text}$", parsing_timeout=None)


def verdict(prompt: dict, completion: str, steps: bool) -> dict:
    """The trace columns of one completion: answer, score, correct, format_ok and, for chain-sum step
    traces, per-step correctness (then format_ok is the step format's)."""
    found, value = score(prompt["verifier"], completion, prompt["answer"], prompt["metadata"], steps)
    row = dict(answer=found.text, score=value, correct=value >= 1.0, format_ok=None, step_correct=None,
               step_accuracy=None)
    if not steps:
        row["format_ok"] = found.explicit
    elif (expression := step_expression(json.loads(prompt["metadata"]))) is not None:
        check = check_trace(expression, completion)
        row.update(format_ok=check.format_ok, step_correct=check.step_correct, step_accuracy=check.step_accuracy)
    return row
