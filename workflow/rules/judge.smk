rule judge:
    input:
        prompts="data/prompts/train.parquet",
        traces=expand("data/traces/{generator}.parquet", generator=GENERATORS),
        model=JUDGE_MODEL,
    output:
        judgments=expand("data/judgments/{generator}.parquet", generator=GENERATORS),
        metrics="metrics/judge.json",
        audit="metrics/judge_audit.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("judge"),
    threads: P.runtime.threads
    resources:
        gpu=judge_gpus,
    log:
        "logs/judge.log",
    conda:
        ENV
    shell:
        "deltalab judge --params {params.file} --prompts data/prompts/train.parquet --traces-dir data/traces"
        " --out-dir data/judgments --metrics metrics/judge.json --audit metrics/judge_audit.json"
        " 2>&1 | tee {log}"
