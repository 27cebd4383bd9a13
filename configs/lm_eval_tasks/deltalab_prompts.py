"""deltalab's own eval splits as lm-eval tasks (deltalab_eval_id, deltalab_eval_ood): the prompts
stage's tables, the student's prompt template and deltalab's answer rules, so lm-eval's `hf` (or
vllm) model scores exactly what `evaluate.backend: transformers` scores.

The params file comes from DELTALAB_PARAMS, which `deltalab evaluate` sets for the lm_eval it runs.
lm-eval sends one user turn: a template's system prompt goes in `evaluate.lm_eval.system_instruction`.
"""

import functools
import os

from deltalab import prompting
from deltalab.config import load_params
from deltalab.verify import verdict


@functools.cache
def _templates() -> tuple:
    params = load_params(os.environ.get("DELTALAB_PARAMS", "params.yaml"))
    student = params.student.prompt if params.student else None
    return params, student


def doc_to_text(doc: dict) -> str:
    params, override = _templates()
    tpl = prompting.resolve(params, doc["family"], override, "student")
    return prompting.messages(tpl, doc)[-1]["content"]


def process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(verdict(doc, results[0], steps=False)["correct"])}
