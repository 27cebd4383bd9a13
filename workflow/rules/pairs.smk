rule pairs:
    input:
        unpack(pair_inputs),
    output:
        pairs="data/pairs/{ablation}.parquet",
        kto="data/pairs/{ablation}.kto.parquet",
        metrics="metrics/pairs/{ablation}.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section(
            f"ablations.{w.ablation}",
            f"generators.{P.ablations[w.ablation].chosen}.scale",
            f"generators.{P.ablations[w.ablation].rejected}.scale",
            "prompt",
            "student",
        ),
    log:
        "logs/pairs/{ablation}.log",
    conda:
        ENV
    shell:
        "deltalab pairs {wildcards.ablation} --params {params.file} --prompts data/prompts/train.parquet"
        " --traces-dir data/traces --judgments-dir data/judgments"
        " --out data/pairs/{wildcards.ablation}.parquet --kto-out data/pairs/{wildcards.ablation}.kto.parquet"
        " --metrics metrics/pairs/{wildcards.ablation}.json"
        " 2>&1 | tee {log}"
