rule prompts:
    output:
        train="data/prompts/train.parquet",
        eval_id="data/prompts/eval_id.parquet",
        eval_ood="data/prompts/eval_ood.parquet",
        metrics="metrics/prompts.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("tasks", "prompts"),
    log:
        "logs/prompts.log",
    conda:
        ENV
    shell:
        "deltalab prompts --params {params.file} --out-dir data/prompts --metrics metrics/prompts.json"
        " 2>&1 | tee {log}"
