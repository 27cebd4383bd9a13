rule micro_models:
    input:
        eval_id="data/prompts/eval_id.parquet",
        eval_ood="data/prompts/eval_ood.parquet",
    output:
        directory("data/models/{model}"),
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section(
            f"micro_models.models.{w.model}",
            "micro_models.train_tasks",
            "micro_models.examples",
            "micro_models.data_seed",
            "micro_models.max_length",
        ),
    wildcard_constraints:
        # Only the params' micro models: another directory under data/models is an input, not a product.
        model=MICRO_PATTERN,
    threads: P.runtime.threads
    log:
        "logs/micro_models/{model}.log",
    conda:
        ENV
    shell:
        "deltalab micro-models {wildcards.model} --params {params.file}"
        " --exclude data/prompts/eval_id.parquet --exclude data/prompts/eval_ood.parquet"
        " --out data/models/{wildcards.model}"
        " 2>&1 | tee {log}"
