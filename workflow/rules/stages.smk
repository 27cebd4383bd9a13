# One rule per stage of deltalab's stage table (src/deltalab/pipeline.py): its command, inputs (data
# and code), outputs and params keys come from there, as dvc.yaml's do (`deltalab dvc-yaml`).
import re


for stage in pipeline.STAGES:
    keys = stage.keys(P)
    if not keys:
        continue
    rule:
        name: stage.name
        input: unpack(_inputs(stage))
        output: _outputs(stage)
        params:
            cfg=_resolved(stage),
            cmd=_command(stage),
        threads: P.runtime.threads if stage.threads else 1
        resources:
            gpu=_gpus(stage),
        log: _log(stage)
        wildcard_constraints: **({stage.each: "|".join(map(re.escape, keys))} if stage.each else {})
        conda: ENV
        shell: "{params.cmd} 2>&1 | tee {log}"
