"""The study report: which ablations answer which question, the statistics, the plots.

What the report writes is declared here (light to import: the stage table and Snakemake read it).
"""

from deltalab.config import DIMENSIONS

SPLITS = {"eval_id": "in-domain", "eval_ood": "out-of-domain", "eval_far": "far out-of-domain"}
"""Evaluation splits (deltalab.paths.EVAL_SPLITS) as the report names them."""
SUFFIX = {"eval_id": "id", "eval_ood": "ood", "eval_far": "far"}
"""A split's suffix in plot table names."""


def paired_generators(params) -> list[str]:
    """The generators some ablation pairs (params order): the pair browser reads their judgments."""
    used = {g for a in params.ablations.values() for g in (a.chosen, a.rejected)}
    return [g for g in params.generators if g in used]


def column(split: str) -> str:
    """A split's column in the plot tables: in_domain, out_of_domain, far_out_of_domain."""
    return SPLITS[split].replace("-", "_").replace(" ", "_")


PNGS = ["gain_vs_generator_delta", "accuracy_vs_fraction", "sample_delta_distributions", "sample_vs_generator_delta"]
"""reports/<name>.png"""
TABLES = ["gain_vs_generator_delta", *(f"accuracy_vs_fraction_{s}" for s in SUFFIX.values()), "sample_vs_generator_delta",
          *(f"delta_distribution_{d}" for d in (*DIMENSIONS, "aggregate"))]
"""reports/plots/<name>.csv: the plots' data with fixed column names (stages/report.py, dvc_tables)."""
ANALYSIS_TABLES = ["sample_delta_by_dimension", "direction_gains", "family_axis", "dpo_minus_sft"]
"""reports/plots/<name>.csv: the tables of the paper's analyses, with their CIs and labels (report/analyses.py)."""
TABLES += ANALYSIS_TABLES

DVC_PLOTS = [
    ("OOD and in-domain gain over base vs generator-level delta", "scatter", "generator_delta",
     "gain_vs_generator_delta", [column(s) for s in SPLITS]),
    *((f"{SPLITS[s].capitalize()} accuracy vs fraction of pairs kept (top-k vs random-k)", "linear", "fraction",
       f"accuracy_vs_fraction_{SUFFIX[s]}", ["top_k_aggregate", "top_k_step_coherence", "random_k"]) for s in SPLITS),
    ("Mean sample-level delta vs generator-level delta, per dimension", "linear", "generator_delta",
     "sample_vs_generator_delta", [*DIMENSIONS, "aggregate"]),
    ("Sample-level delta distribution per generator pair (aggregate)", "bar_horizontal", "count",
     "delta_distribution_aggregate", "bin"),
    ("Sample-level delta distribution per generator pair (step_coherence)", "bar_horizontal", "count",
     "delta_distribution_step_coherence", "bin"),
]
"""`dvc plots show` definitions over TABLES: (title, template, x column, table, y column(s))."""
