# Load and validate the params with deltalab's own loader, so a bad file stops snakemake before any
# job starts, with the same one-line message as `deltalab validate`.
import os
import sys

from deltalab import paths, pipeline
from deltalab.config import load_params
from deltalab.errors import UserError

# The params file is params.yaml, or the file given with `--configfile` (e.g. configs/smol.yaml):
# deltalab's loader validates it and every job gets it as `--params`.
PARAMS_FILE = os.path.relpath(workflow.configfiles[-1]) if workflow.configfiles else "params.yaml"
ENV = "../envs/deltalab.yaml"  # relative to the rule files

try:
    P = load_params(PARAMS_FILE)
except UserError as err:
    sys.exit(f"error: {err}")


# How a stage of the table becomes a rule (workflow/rules/stages.smk).
def _key(stage, wildcards):
    return wildcards[stage.each] if stage.each else stage.keys(P)[0]


def _inputs(stage):
    code = pipeline.code(stage)  # every deltalab module the stage imports: their edits rerun it

    def inputs(wildcards):
        key = _key(stage, wildcards)
        fields = stage.fields(P, key)
        return {"data": [pipeline.fill(d, key, fields) for d in stage.deps(P, key)], "code": code}

    return inputs


def _outputs(stage):
    key = "{%s}" % stage.each if stage.each else stage.keys(P)[0]
    outs = []
    for out in stage.outs(P):
        if out.files:  # a directory for DVC, its files for Snakemake (a rule needs single files)
            outs += out.files
        else:
            path = pipeline.fill(out.path, key, {})
            outs.append(directory(path) if out.directory else path)
    return outs


def _resolved(stage):
    """The stage's params keys with their defaults filled in: editing them, or a default they take,
    reruns the job (rerun-trigger `params`)."""

    def resolved(wildcards):
        key = _key(stage, wildcards)
        fields = stage.fields(P, key)
        return pipeline.resolved(P, [pipeline.fill(k, key, fields) for k in stage.params(P, key)])

    return resolved


def _command(stage):
    """The job's `deltalab` command line (a params function: the shell directive itself runs after
    the loop that defines the rules, so it cannot name the stage)."""
    return lambda wildcards, resources: " ".join(pipeline.argv(stage, _key(stage, wildcards), PARAMS_FILE, resources.gpu))


def _gpus(stage):
    return lambda wildcards: stage.gpus(P, _key(stage, wildcards))


def _log(stage):
    return paths.LOGS.format(stage=stage.name, key="{%s}" % stage.each) if stage.each else paths.LOG.format(stage=stage.name)
