# One rule per stage of deltalab's stage table (src/deltalab/pipeline.py): its command, inputs (data
# and code), outputs and params keys come from there, as dvc.yaml's do (`deltalab dvc-yaml`).
import re

from deltalab import paths


def _key(stage, wildcards):
    return wildcards[stage.each] if stage.each else stage.keys(P)[0]


def _inputs(stage):
    code = pipeline.code(stage)  # every deltalab module the stage imports: edits rerun it

    def inputs(wildcards):
        key = _key(stage, wildcards)
        fields = stage.fields(P, key)
        return {"data": [pipeline.fill(d, key, fields) for d in stage.deps(P, key)], "code": code}

    return inputs


def _outputs(stage):
    key = "{%s}" % stage.each if stage.each else stage.keys(P)[0]
    outs = []
    for out in stage.outs(P):
        if out.files:  # a directory for DVC, its files for Snakemake (rules need single files)
            outs += [pipeline.fill(f, key, {}) for f in out.files]
        else:
            path = pipeline.fill(out.path, key, {})
            outs.append(directory(path) if out.directory else path)
    return outs


def _resolved(stage):
    # The params keys with their defaults filled in: editing them, or a default they take, reruns.
    return lambda wildcards: pipeline.resolved(P, [pipeline.fill(k, _key(stage, wildcards), stage.fields(P, _key(stage, wildcards)))
                                                   for k in stage.params(P, _key(stage, wildcards))])


def _gpus(stage):
    return lambda wildcards: stage.gpus(P, _key(stage, wildcards))


for stage in pipeline.STAGES:
    keys = stage.keys(P)
    if not keys:
        continue
    key = "{wildcards.%s}" % stage.each if stage.each else keys[0]
    rule:
        name: stage.name
        input: unpack(_inputs(stage))
        output: _outputs(stage)
        params:
            cfg=_resolved(stage),
        threads: P.runtime.threads if stage.threads else 1
        resources:
            gpu=_gpus(stage),
        log: paths.LOGS.format(stage=stage.name, key="{%s}" % stage.each) if stage.each else paths.LOG.format(stage=stage.name)
        wildcard_constraints: **({stage.each: "|".join(map(re.escape, keys))} if stage.each else {})
        conda: ENV
        shell: " ".join(pipeline.argv(stage, key, PARAMS_FILE, "{resources.gpu}")) + " 2>&1 | tee {log}"
