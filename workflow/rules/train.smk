rule train:
    input:
        pairs="data/pairs/{ablation}.parquet",
        kto="data/pairs/{ablation}.kto.parquet",
        student=STUDENT,
    output:
        checkpoints=directory("data/checkpoints/{ablation}"),
        curves=directory("metrics/train/{ablation}"),
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section(f"ablations.{w.ablation}", "train", "student"),
    wildcard_constraints:
        ablation=ABLATION_PATTERN,
    threads: P.runtime.threads
    resources:
        # GPUs for this job, set per rule by the cluster profile; >1 runs under accelerate launch.
        gpu=0,
    log:
        "logs/train/{ablation}.log",
    conda:
        ENV
    shell:
        "deltalab train {wildcards.ablation} --params {params.file} --pairs-dir data/pairs"
        " --out data/checkpoints/{wildcards.ablation} --curves metrics/train/{wildcards.ablation}"
        " --gpus {resources.gpu} 2>&1 | tee {log}"
