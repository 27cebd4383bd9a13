rule generate:
    input:
        prompts="data/prompts/train.parquet",
        model=model_input,
    output:
        traces="data/traces/{generator}.parquet",
        greedy="data/traces/{generator}.greedy.parquet",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section(f"generators.{w.generator}", "prompt"),
    threads: P.runtime.threads
    resources:
        gpu=generator_gpus,
    log:
        "logs/generate/{generator}.log",
    conda:
        ENV
    shell:
        "deltalab generate {wildcards.generator} --params {params.file} --prompts data/prompts/train.parquet"
        " --out data/traces/{wildcards.generator}.parquet --greedy-out data/traces/{wildcards.generator}.greedy.parquet"
        " 2>&1 | tee {log}"


rule generator_metrics:
    input:
        expand("data/traces/{generator}.parquet", generator=GENERATORS),
        expand("data/traces/{generator}.greedy.parquet", generator=GENERATORS),
    output:
        "metrics/generators.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("generators"),
    log:
        "logs/generator_metrics.log",
    conda:
        ENV
    shell:
        "deltalab generator-metrics --params {params.file} --traces-dir data/traces --out metrics/generators.json"
        " 2>&1 | tee {log}"
