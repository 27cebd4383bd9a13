rule evaluate_base:
    input:
        eval_id="data/prompts/eval_id.parquet",
        eval_ood="data/prompts/eval_ood.parquet",
        student=STUDENT,
    output:
        answers="data/eval/base.parquet",
        metrics="metrics/eval/base.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("evaluate", "student", "prompt"),
    threads: P.runtime.threads
    log:
        "logs/evaluate/base.log",
    conda:
        ENV
    shell:
        "deltalab evaluate base --params {params.file} --prompts-dir data/prompts"
        " --out data/eval/base.parquet --metrics metrics/eval/base.json"
        " 2>&1 | tee {log}"


rule evaluate:
    input:
        eval_id="data/prompts/eval_id.parquet",
        eval_ood="data/prompts/eval_ood.parquet",
        checkpoints="data/checkpoints/{ablation}",
        base="data/eval/base.parquet",
    output:
        answers="data/eval/{ablation}.parquet",
        metrics="metrics/eval/{ablation}.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("evaluate", "student", "prompt"),
    wildcard_constraints:
        ablation=ABLATION_PATTERN,
    threads: P.runtime.threads
    log:
        "logs/evaluate/{ablation}.log",
    conda:
        ENV
    shell:
        "deltalab evaluate {wildcards.ablation} --params {params.file} --prompts-dir data/prompts"
        " --checkpoints data/checkpoints/{wildcards.ablation} --base data/eval/base.parquet"
        " --out data/eval/{wildcards.ablation}.parquet --metrics metrics/eval/{wildcards.ablation}.json"
        " 2>&1 | tee {log}"
