rule report:
    input:
        answers=expand("data/eval/{name}.parquet", name=["base", *ABLATIONS]),
        metrics=expand("metrics/eval/{name}.json", name=["base", *ABLATIONS]),
        pairs=expand("data/pairs/{ablation}.parquet", ablation=ABLATIONS),
        pair_metrics=expand("metrics/pairs/{ablation}.json", ablation=ABLATIONS),
    output:
        summary="reports/summary.md",
        pngs=expand("reports/{plot}.png", plot=REPORT_PNGS),
        tables=expand("reports/plots/{table}.csv", table=REPORT_TABLES),
        metrics="metrics/report.json",
    params:
        file=PARAMS_FILE,
        cfg=lambda w: section("ablations", "evaluate"),
    log:
        "logs/report.log",
    conda:
        ENV
    shell:
        "deltalab report --params {params.file} --eval-dir data/eval --eval-metrics metrics/eval"
        " --pairs-dir data/pairs --pairs-metrics metrics/pairs --out-dir reports --metrics metrics/report.json"
        " 2>&1 | tee {log}"
