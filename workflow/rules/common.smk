# Load and validate params.yaml with deltalab's own loader, so a bad file stops snakemake before any
# job starts, with the same one-line message as `deltalab validate`.
import json
import os
import sys

from deltalab.config import load_params
from deltalab.errors import UserError
from deltalab.stages import report as report_stage

# The params file is params.yaml, or the file given with `--configfile` (e.g. configs/paper.yaml):
# deltalab's loader validates it and every job gets it as `--params`.
PARAMS_FILE = os.path.relpath(workflow.configfiles[-1]) if workflow.configfiles else "params.yaml"
ENV = "../envs/deltalab.yaml"  # relative to the rule files

try:
    P = load_params(PARAMS_FILE)
except UserError as err:
    sys.exit(f"error: {err}")

GENERATORS = list(P.generators)
MICRO_MODELS = list(P.micro_models.models) if P.micro_models else []
ABLATIONS = list(P.ablations)
# `base` (the untrained student's evaluation) is reserved, so ablation wildcards never match it.
ABLATION_PATTERN = "|".join(ABLATIONS) or "$^"
MICRO_PATTERN = "|".join(MICRO_MODELS) or "$^"


def local_model(path):
    """A model directory on disk is an input (its edits rerun what uses it); a hub id is not a file."""
    return [path] if path and os.path.isdir(path) else []


# A micro student is built by the DAG; a local model directory is an input; a hub id is neither.
STUDENT = (P.student.model_path if P.student.micro_model else local_model(P.student.model)) if P.student else []
JUDGE_MODEL = local_model(P.judge.model) if P.judge.backend == "transformers" else []
REPORT_PNGS = report_stage.PNGS
REPORT_TABLES = report_stage.TABLES


def section(*keys):
    """Params sections as canonical JSON. Used as a rule's `params:`, so editing exactly these keys
    (the same keys dvc.yaml lists) reruns the rule; throughput knobs in `runtime:` never do."""
    raw = P.model_dump(mode="json")
    picked = {}
    for key in keys:
        node = raw
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    return json.dumps(picked, sort_keys=True)


def generator_gpus(wildcards):
    """GPUs of a generate job: its managed server's tensor-parallel size; in-process generation on a
    CUDA device takes one; otherwise none."""
    gen = P.generators[wildcards.generator]
    if gen.serve is not None:
        return gen.serve.tp
    return 1 if gen.backend == "transformers" and P.runtime.device.startswith("cuda") else 0


def judge_gpus(wildcards):
    if P.judge.serve is not None:
        return P.judge.serve.tp
    return 1 if P.judge.backend == "transformers" and P.runtime.device.startswith("cuda") else 0


def model_input(wildcards):
    gen = P.generators[wildcards.generator]
    return [gen.model_path] if gen.micro_model else local_model(gen.model)


def pair_inputs(wildcards):
    ab = P.ablations[wildcards.ablation]
    sides = sorted({ab.chosen, ab.rejected})
    return {
        "prompts": "data/prompts/train.parquet",
        "traces": [f"data/traces/{g}.parquet" for g in sides],
        "judgments": [f"data/judgments/{g}.parquet" for g in sides],
    }
