"""The verifier judge: the five dimensions computed exactly from a micro-world step trace.

Each dimension is a share s in [0, 1] mapped to 1 + round(4 s), except strategy coherence, which
grades the shape of the chain:

| dimension | share measured |
|---|---|
| factuality | steps that quote the problem's k-th operation and term (step 1 also the first term) |
| step_coherence | steps whose left operand carries the previous written result (step 1: the first term) |
| numerical_precision | steps whose result is exact for the operands written |
| signal_to_noise | lines that are a needed step or the answer line (junk and extra steps are noise) |
| strategy_coherence | 5 well-formed chain of the expected length ending in an answer equal to the last result; 4 the same with the wrong number of steps; 3 steps and an answer that is not the last result; 2 steps but no answer line; 1 no valid step |
"""

from __future__ import annotations

import polars as pl

from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.io import content_id
from deltalab.judge import JUDGMENT_SCHEMA, STATS
from deltalab.micro.traces import ANSWER, STEP, apply, parse_expression

VERSION = "verifier-v1"


class VerifierJudge:
    """`judge.backend: verifier`: a Backend (deltalab.judge) for micro-world step traces."""

    label = "verifier"
    schema = JUDGMENT_SCHEMA
    audited = False  # it is the verifier: nothing to compare

    def __init__(self, params: Params, base_url: str | None):
        self.stats = dict.fromkeys(STATS, 0)

    def judge(self, generator: str, traces: pl.DataFrame, steps: bool) -> list[dict]:
        # The traces come with their `scores` (verifier_<dim> columns, null where there are none).
        checked = traces.select(f"verifier_{d}" for d in DIMENSIONS)
        if checked.null_count().sum_horizontal().item():
            why = "some of its tasks have no step checks" if steps else "it is not a micro model (free-form traces)"
            raise UserError(f"judge.backend: the verifier judge cannot score generator {generator!r}: {why} "
                            "(use an LLM judge: openai or transformers)")
        return [{"judge": self.label, "template_version": VERSION, "status": "ok", "reason": None,
                 **dict(zip(DIMENSIONS, v)), "rationale": None, "raw_response": None,
                 "cache_key": content_id("verifier", VERSION, t), "prompt_tokens": 0, "completion_tokens": 0}
                for t, v in zip(traces["trace_id"], checked.iter_rows())]


def scores(traces: pl.DataFrame, steps: bool) -> list[dict[str, int] | None]:
    """Verifier scores per trace (`expression`, `completion`), None where the trace has no step
    checks (a task without them, or a free-form trace: only micro-world models write step traces)."""
    return [score_trace(e, c) if steps and e is not None else None
            for e, c in zip(traces["expression"], traces["completion"])]


def _level(share: float) -> int:
    return 1 + round(4 * share)


def score_trace(expression: str, completion: str) -> dict[str, int]:
    first, ops = parse_expression(expression)
    lines = [line for line in completion.strip().split("\n") if line.strip()]
    steps, answer = [], None
    for line in lines:
        if m := STEP.match(line):
            steps.append((int(m[2]), m[3], int(m[4]), int(m[5])))
        elif m := ANSWER.match(line):
            answer = m[1].strip()
    if not steps:
        zero = {"factuality": 1, "step_coherence": 1, "numerical_precision": 1}
        return zero | {"signal_to_noise": _level(len(lines) == 1 and answer is not None), "strategy_coherence": 1}
    quoted = carried = exact = 0
    prev = first
    for k, (lhs, op, rhs, result) in enumerate(steps):
        quoted += k < len(ops) and (op, rhs) == ops[k] and (k > 0 or lhs == first)
        carried += lhs == prev
        exact += result == apply(lhs, op, rhs)
        prev = result
    n = len(steps)
    useful = min(n, len(ops)) + (answer is not None)
    if answer is None:
        strategy = 2
    elif answer != str(steps[-1][3]):
        strategy = 3
    else:
        strategy = 5 if n == len(ops) else 4
    return {
        "factuality": _level(quoted / n),
        "strategy_coherence": strategy,
        "step_coherence": _level(carried / n),
        "numerical_precision": _level(exact / n),
        "signal_to_noise": _level(useful / max(len(lines), 1)),
    }
