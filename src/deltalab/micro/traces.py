"""The micro-world's step-by-step trace format and its checks.

A chain-sum problem `38 - 57 + 10` is solved as one step per operation and an answer line:

    S1:38-57=-19
    S2:-19+10=-9
    A:-9

Checks are exact and deterministic, so a trace's per-step correctness is a fact, not a judgment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STEP = re.compile(r"^S(\d+):(-?\d+)([+-])(-?\d+)=(-?\d+)$")
ANSWER = re.compile(r"^A:(.*)$")


@dataclass(frozen=True)
class Step:
    lhs: int
    op: str
    rhs: int
    result: int


def step_expression(meta: dict) -> str | None:
    """The chain-sum expression of a prompt whose traces have step checks (its reasoning-gym
    metadata), else None. The one test of "is this trace step-checkable" for every stage."""
    return meta.get("expression") if meta.get("source_dataset") == "chain_sum" else None


def parse_expression(expression: str) -> tuple[int, list[tuple[str, int]]]:
    """`'38 - 57 + 10'` -> `(38, [('-', 57), ('+', 10)])` (reasoning-gym chain_sum metadata)."""
    parts = expression.split()
    if len(parts) % 2 == 0 or any(op not in "+-" for op in parts[1::2]):
        raise ValueError(f"not a chain-sum expression: {expression!r}")
    return int(parts[0]), [(op, int(term)) for op, term in zip(parts[1::2], parts[2::2])]


def apply(lhs: int, op: str, rhs: int) -> int:
    return lhs + rhs if op == "+" else lhs - rhs


def reference_steps(expression: str) -> list[Step]:
    value, ops = parse_expression(expression)
    steps = []
    for op, term in ops:
        result = apply(value, op, term)
        steps.append(Step(value, op, term, result))
        value = result
    return steps


def render_trace(expression: str) -> str:
    """The correct trace for a chain-sum expression."""
    steps = reference_steps(expression)
    lines = [f"S{i}:{s.lhs}{s.op}{s.rhs}={s.result}" for i, s in enumerate(steps, 1)]
    lines.append(f"A:{steps[-1].result if steps else parse_expression(expression)[0]}")
    return "\n".join(lines)


@dataclass(frozen=True)
class StepCheck:
    """Per-step verdicts of one trace against its problem."""

    step_correct: list[bool]  # one per position up to max(written, expected) steps
    format_ok: bool  # every line is a step or the single, final answer line
    answer: str | None  # text of the answer line, if any

    @property
    def step_accuracy(self) -> float:
        return sum(self.step_correct) / len(self.step_correct) if self.step_correct else 1.0


def check_trace(expression: str, completion: str) -> StepCheck:
    """A written step is correct when it carries the previous written result (or the first term),
    applies the problem's next operation to the problem's next term, and computes it exactly.
    Missing and extra steps count as wrong."""
    first, ops = parse_expression(expression)
    lines = completion.strip().split("\n") if completion.strip() else []
    written: list[Step | None] = []
    answer, format_ok = None, True
    for i, line in enumerate(lines):
        if m := STEP.match(line):
            written.append(Step(int(m[2]), m[3], int(m[4]), int(m[5])))
            format_ok &= int(m[1]) == len(written) and answer is None
        elif m := ANSWER.match(line):
            format_ok &= answer is None and i == len(lines) - 1
            answer = m[1].strip()
        else:
            written.append(None)
            format_ok = False
    correct, carried = [], first
    for k in range(max(len(written), len(ops))):
        step = written[k] if k < len(written) else None
        ok = (
            step is not None
            and k < len(ops)
            and (step.lhs, step.op, step.rhs) == (carried, *ops[k])
            and step.result == apply(step.lhs, step.op, step.rhs)
        )
        correct.append(ok)
        if step is not None:
            carried = step.result
    return StepCheck(correct, format_ok and answer is not None, answer)
