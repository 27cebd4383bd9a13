# deltalab: the study as Snakemake rules, one per stage of deltalab's stage table
# (src/deltalab/pipeline.py), from which dvc.yaml is generated too (`deltalab dvc-yaml`).
# Run: snakemake --profile workflow/profiles/local [--configfile configs/smol.yaml]

include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


rule all:
    input:
        pipeline.outputs(P),
    default_target: True
