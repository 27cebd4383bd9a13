"""Where every stage reads and writes, relative to the study's root. The stage table
(deltalab.pipeline), the CLI's defaults, Snakemake and dvc.yaml all take their paths from here.

Patterns hold `{key}`: the generator, micro model or ablation a job is for (`base` for the
untrained student's evaluation).
"""

PROMPTS_DIR = "data/prompts"
SPLITS = ("train", "eval_id", "eval_ood", "eval_far")
EVAL_SPLITS = SPLITS[1:]
"""in-domain, out-of-domain (tier 1: a shift the generators partly solve) and far out-of-domain (tier 2)."""
PROMPTS = {split: f"{PROMPTS_DIR}/{split}.parquet" for split in SPLITS}
PROMPTS_METRICS = "metrics/prompts.json"

MODELS_DIR = "data/models"
MODEL = MODELS_DIR + "/{key}"

TRACES_DIR = "data/traces"
TRACES = TRACES_DIR + "/{key}.parquet"
GREEDY = TRACES_DIR + "/{key}.greedy.parquet"
GENERATOR_METRICS = "metrics/generators.json"

JUDGMENTS_DIR = "data/judgments"
JUDGMENTS = JUDGMENTS_DIR + "/{key}.parquet"
JUDGE_METRICS = "metrics/judge.json"
JUDGE_AUDIT = "metrics/judge_audit.json"

RELIABILITY_JUDGMENTS_DIR = "data/reliability/judgments"
RELIABILITY_JUDGMENTS = RELIABILITY_JUDGMENTS_DIR + "/{key}.parquet"
"""The second judge's judgments (reliability stage)."""
RELIABILITY_METRICS = "metrics/reliability.json"

PAIRS_DIR = "data/pairs"
PAIRS = PAIRS_DIR + "/{key}.parquet"
KTO = PAIRS_DIR + "/{key}.kto.parquet"
PAIRS_METRICS_DIR = "metrics/pairs"
PAIRS_METRICS = PAIRS_METRICS_DIR + "/{key}.json"

CHECKPOINTS = "data/checkpoints/{key}"
CURVES = "metrics/train/{key}"

EVAL_DIR = "data/eval"
EVAL = EVAL_DIR + "/{key}.parquet"
EVAL_METRICS_DIR = "metrics/eval"
EVAL_METRICS = EVAL_METRICS_DIR + "/{key}.json"
BASE = "base"
"""The untrained student's evaluation: a name no ablation may take."""

REPORTS_DIR = "reports"
SUMMARY = REPORTS_DIR + "/summary.md"
REPORT_HTML = REPORTS_DIR + "/index.html"
"""summary.md, the plots and a pair browser per ablation as one self-contained page."""
REPORT_PNG = REPORTS_DIR + "/{key}.png"
REPORT_TABLE = REPORTS_DIR + "/plots/{key}.csv"
REPORT_METRICS = "metrics/report.json"

LOGS = "logs/{stage}/{key}.log"
LOG = "logs/{stage}.log"


def at(pattern: str, key: str) -> str:
    """A pattern's path for one generator, model or ablation."""
    return pattern.replace("{key}", key)
