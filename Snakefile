# deltalab: the study as Snakemake rules. dvc.yaml describes the same stages with the same commands
# and paths (tests/e2e checks that the two DAGs agree). Run: snakemake --profile workflow/profiles/local

include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/micro_models.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "metrics/generators.json",
        "metrics/judge.json",
        expand("data/pairs/{ablation}.parquet", ablation=ABLATIONS),
        "reports/summary.md" if ABLATIONS else [],
