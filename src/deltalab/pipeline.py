"""The study's stages, declared once: each stage's command, data inputs, outputs, params keys,
resources and code. Snakemake's rules (workflow/rules/stages.smk), `deltalab dvc-yaml` (dvc.yaml)
and the CLI's path defaults are all derived from this table, so the two orchestrators cannot drift.

Paths are patterns over `{key}` (the generator, micro model or ablation of a job) and over the
stage's `fields` (e.g. an ablation's `{chosen}` generator). Code dependencies are not listed: they
are every deltalab module the stage's entry module imports (deltalab.imports), so they grow with
the code by themselves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deltalab import imports, paths
from deltalab.config import Params
from deltalab.report import PNGS, TABLES, paired_generators
from deltalab.training import launch


@dataclass(frozen=True)
class Out:
    path: str
    kind: str = "out"
    """out | metric | plot (DVC's three kinds; Snakemake treats all as outputs)."""
    cache: bool = True
    directory: bool = False
    files: tuple[str, ...] = ()
    """A directory DVC tracks as one output, whose files Snakemake lists (so rules can need one)."""


@dataclass(frozen=True)
class Stage:
    name: str
    entry: tuple[str, ...]
    """Modules the stage runs: their imports, transitively, are its code dependencies."""
    args: tuple[str, ...]
    """The command's path options (patterns over `{key}`; `{gpus}` is the job's GPU count)."""
    outs: Callable[[Params], list[Out]]
    deps: Callable[[Params, str], list[str]]
    """Data inputs, patterns over `{key}` and the fields."""
    params: Callable[[Params, str], list[str]]
    """Params keys the stage's outputs depend on (dotted, patterns over the fields)."""
    each: str | None = None
    """The wildcard of a stage run once per generator / micro model / ablation."""
    takes_key: bool | None = None
    """The command's first argument is the job's key (default: when the stage has a wildcard)."""
    keys: Callable[[Params], list[str]] = lambda p: [""]
    """The stage's jobs (none: the stage is not part of this study, e.g. no ablations)."""
    fields: Callable[[Params, str], dict[str, str]] = lambda p, k: {}
    """Per-job values the path and params patterns use besides `{key}`; in dvc.yaml, the foreach items."""
    threads: bool = False
    """Takes runtime.threads (torch work); the others are single-threaded."""
    gpus: Callable[[Params, str], int] = lambda p, k: 0
    command: str = field(default="")
    """The `deltalab` subcommand (default: the name, with dashes)."""

    def __post_init__(self):
        object.__setattr__(self, "command", self.command or self.name.replace("_", "-"))
        if self.takes_key is None:
            object.__setattr__(self, "takes_key", self.each is not None)


def local_dir(path: str | None) -> list[str]:
    """A model directory on disk is an input (its edits rerun what uses it); a hub id is not a file:
    it is in the stage's params instead."""
    return [path] if path and os.path.isdir(path) else []


def student_dir(p: Params) -> list[str]:
    if p.student is None:
        return []
    return [p.student.model_path] if p.student.micro_model else local_dir(p.student.model)


def lm_eval_tasks(p: Params) -> list[str]:
    lm = p.evaluate.lm_eval
    return local_dir(lm.include_path) if lm is not None else []


def _served_gpus(serve, backend: str, p: Params) -> int:
    """A managed server's tensor-parallel size; in-process work on a CUDA device takes one."""
    if serve is not None:
        return serve.tp
    return 1 if backend == "transformers" and p.runtime.device.startswith("cuda") else 0


EVAL_INPUTS = [paths.PROMPTS[s] for s in paths.EVAL_SPLITS]

STAGES = [
    Stage(
        "prompts", ("deltalab.stages.prompts",),
        args=("--out-dir", paths.PROMPTS_DIR, "--metrics", paths.PROMPTS_METRICS),
        outs=lambda p: [*(Out(f) for f in paths.PROMPTS.values()), Out(paths.PROMPTS_METRICS, "metric", cache=False)],
        deps=lambda p, k: [],
        params=lambda p, k: ["tasks", "prompts"],
    ),
    Stage(
        "micro_models", ("deltalab.stages.micro_models",), each="model",
        keys=lambda p: list(p.micro_models.models) if p.micro_models else [],
        args=(*(a for f in EVAL_INPUTS for a in ("--exclude", f)), "--out", paths.MODEL),
        outs=lambda p: [Out(paths.MODEL, directory=True)],
        deps=lambda p, k: list(EVAL_INPUTS),
        params=lambda p, k: ["tasks", "micro_models.models.{key}", "micro_models.train_tasks", "micro_models.examples",
                             "micro_models.data_seed", "micro_models.max_length"],
    ),  # one torch thread always (stages.micro_models.THREADS)
    Stage(
        "generate", ("deltalab.stages.generate",), each="generator",
        keys=lambda p: list(p.generators),
        args=("--prompts", paths.PROMPTS["train"], "--out", paths.TRACES, "--greedy-out", paths.GREEDY),
        outs=lambda p: [Out(paths.TRACES), Out(paths.GREEDY)],
        fields=lambda p, k: {"model": m for m in _generator_dir(p, k)},
        deps=lambda p, k: [paths.PROMPTS["train"], *(["{model}"] if _generator_dir(p, k) else [])],
        params=lambda p, k: ["generators.{key}", "prompt"],
        threads=True,
        gpus=lambda p, k: _served_gpus(p.generators[k].serve, p.generators[k].backend, p),
    ),
    Stage(
        "generator_metrics", ("deltalab.stages.generator_metrics",),
        args=("--traces-dir", paths.TRACES_DIR, "--out", paths.GENERATOR_METRICS),
        outs=lambda p: [Out(paths.GENERATOR_METRICS, "metric", cache=False)],
        deps=lambda p, k: [paths.at(t, g) for g in p.generators for t in (paths.TRACES, paths.GREEDY)],
        params=lambda p, k: ["generators"],
    ),
    Stage(
        "judge", ("deltalab.stages.judge",),
        args=("--prompts", paths.PROMPTS["train"], "--traces-dir", paths.TRACES_DIR,
              "--out-dir", paths.JUDGMENTS_DIR, "--metrics", paths.JUDGE_METRICS,
              "--audit", paths.JUDGE_AUDIT),
        outs=lambda p: [Out(paths.JUDGMENTS_DIR, directory=True,
                            files=tuple(paths.at(paths.JUDGMENTS, g) for g in p.generators)),
                        Out(paths.JUDGE_METRICS, "metric", cache=False), Out(paths.JUDGE_AUDIT, "metric", cache=False)],
        deps=lambda p, k: [paths.PROMPTS["train"], *(paths.at(paths.TRACES, g) for g in p.generators),
                           *(local_dir(p.judge.model) if p.judge.backend == "transformers" else [])],
        params=lambda p, k: ["judge"],
        threads=True,
        gpus=lambda p, k: _served_gpus(p.judge.serve, p.judge.backend, p),
    ),
    Stage(
        "pairs", ("deltalab.stages.pairs",), each="ablation",
        keys=lambda p: list(p.ablations),
        fields=lambda p, k: {"chosen": p.ablations[k].chosen, "rejected": p.ablations[k].rejected},
        args=("--prompts", paths.PROMPTS["train"], "--traces-dir", paths.TRACES_DIR,
              "--judgments-dir", paths.JUDGMENTS_DIR, "--out", paths.PAIRS, "--kto-out", paths.KTO,
              "--metrics", paths.PAIRS_METRICS),
        outs=lambda p: [Out(paths.PAIRS), Out(paths.KTO), Out(paths.PAIRS_METRICS, "metric", cache=False)],
        deps=lambda p, k: [paths.PROMPTS["train"],
                           *(paths.at(t, f"{{{side}}}") for t in (paths.TRACES, paths.JUDGMENTS)
                             for side in ("chosen", "rejected"))],
        params=lambda p, k: ["ablations.{key}", "generators.{chosen}.scale", "generators.{rejected}.scale",
                             "prompt", "student"],
    ),
    Stage(
        "reliability", ("deltalab.stages.reliability",),
        keys=lambda p: [""] if p.reliability else [],
        args=("--prompts", paths.PROMPTS["train"], "--traces-dir", paths.TRACES_DIR,
              "--judgments-dir", paths.JUDGMENTS_DIR, "--pairs-dir", paths.PAIRS_DIR,
              "--out-dir", paths.RELIABILITY_JUDGMENTS_DIR, "--metrics", paths.RELIABILITY_METRICS),
        outs=lambda p: [Out(paths.RELIABILITY_JUDGMENTS_DIR, directory=True,
                            files=tuple(paths.at(paths.RELIABILITY_JUDGMENTS, g) for g in p.generators)),
                        Out(paths.RELIABILITY_METRICS, "metric", cache=False)],
        deps=lambda p, k: [paths.PROMPTS["train"],
                           *(paths.at(t, g) for t in (paths.TRACES, paths.JUDGMENTS) for g in p.generators),
                           *(paths.at(paths.PAIRS, a) for a in p.ranked_ablations()),
                           *_second_judge_dir(p)],
        # The ranked ablations' definitions plan the candidates it re-scores.
        params=lambda p, k: ["reliability", *(f"ablations.{a}" for a in p.ranked_ablations())],
        threads=True,
        gpus=lambda p, k: _served_gpus(p.reliability.second_judge.serve, p.reliability.second_judge.backend, p),
    ),
    Stage(
        "train", ("deltalab.stages.train", "deltalab.training.launch"), each="ablation",
        keys=lambda p: list(p.ablations),
        args=("--pairs-dir", paths.PAIRS_DIR, "--out", paths.CHECKPOINTS, "--curves", paths.CURVES,
              "--gpus", "{gpus}"),
        outs=lambda p: [Out(paths.CHECKPOINTS, directory=True), Out(paths.CURVES, "plot", cache=False, directory=True)],
        deps=lambda p, k: [paths.PAIRS, paths.KTO, *student_dir(p), *_accelerate_config(p, k)],
        params=lambda p, k: ["ablations.{key}", "train", "student"],
        threads=True,
        gpus=lambda p, k: p.runtime.train.gpus,
    ),
    Stage(
        "evaluate_base", ("deltalab.stages.evaluate",), command="evaluate", takes_key=True,
        keys=lambda p: [paths.BASE] if p.student else [],
        args=("--prompts-dir", paths.PROMPTS_DIR, "--out", paths.EVAL, "--metrics", paths.EVAL_METRICS),
        outs=lambda p: [Out(paths.EVAL), Out(paths.EVAL_METRICS, "metric", cache=False)],
        deps=lambda p, k: [*EVAL_INPUTS, *student_dir(p), *lm_eval_tasks(p)],
        params=lambda p, k: ["evaluate", "student", "prompt"],
        threads=True,
    ),
    Stage(
        "evaluate", ("deltalab.stages.evaluate",), each="ablation",
        keys=lambda p: list(p.ablations),
        args=("--prompts-dir", paths.PROMPTS_DIR, "--checkpoints", paths.CHECKPOINTS,
              "--base", paths.at(paths.EVAL, paths.BASE), "--out", paths.EVAL,
              "--metrics", paths.EVAL_METRICS),
        outs=lambda p: [Out(paths.EVAL), Out(paths.EVAL_METRICS, "metric", cache=False)],
        deps=lambda p, k: [*EVAL_INPUTS, paths.CHECKPOINTS, paths.at(paths.EVAL, paths.BASE), *lm_eval_tasks(p)],
        params=lambda p, k: ["evaluate", "student", "prompt"],
        threads=True,
    ),
    Stage(
        "report", ("deltalab.stages.report",),
        keys=lambda p: [""] if p.ablations and p.student else [],
        args=("--eval-dir", paths.EVAL_DIR, "--eval-metrics", paths.EVAL_METRICS_DIR,
              "--pairs-dir", paths.PAIRS_DIR, "--pairs-metrics", paths.PAIRS_METRICS_DIR,
              "--judgments-dir", paths.JUDGMENTS_DIR, "--reliability", paths.RELIABILITY_METRICS,
              "--out-dir", paths.REPORTS_DIR, "--metrics", paths.REPORT_METRICS),
        # index.html (~1-2 MB, the PNGs and pair texts inside) is kept in DVC's cache, not in git.
        outs=lambda p: [Out(paths.SUMMARY, cache=False), Out(paths.REPORT_HTML), Out(paths.REPORT_METRICS, "metric", cache=False),
                        *(Out(paths.at(paths.REPORT_PNG, n), "plot", cache=False) for n in PNGS),
                        *(Out(paths.at(paths.REPORT_TABLE, n), "plot", cache=False) for n in TABLES)],
        deps=lambda p, k: [paths.at(t, n) for t in (paths.EVAL, paths.EVAL_METRICS) for n in (paths.BASE, *p.ablations)]
                          + [paths.at(t, a) for t in (paths.PAIRS, paths.PAIRS_METRICS) for a in p.ablations]
                          + [paths.at(paths.JUDGMENTS, g) for g in paired_generators(p)]  # the pair browser's scores
                          + ([paths.RELIABILITY_METRICS] if p.reliability else []),
        params=lambda p, k: ["ablations", "evaluate"],
    ),
]
BY_NAME = {s.name: s for s in STAGES}


def _generator_dir(p: Params, name: str) -> list[str]:
    gen = p.generators[name]
    return [gen.model_path] if gen.micro_model else local_dir(gen.model)


def _second_judge_dir(p: Params) -> list[str]:
    second = p.reliability.second_judge if p.reliability else None
    return local_dir(second.model) if second and second.backend == "transformers" else []


def _accelerate_config(p: Params, ablation: str) -> list[str]:
    """More than one GPU runs under accelerate launch with the config the launcher picks."""
    if p.runtime.train.gpus <= 1:
        return []
    strategy = launch.strategy_for(p.runtime.train.distributed, p.train_for(ablation).lora is not None,
                                   cpu=p.runtime.device == "cpu")
    return [imports.relative(launch.config_file(strategy).resolve(), Path("."))]


def fill(pattern: str, key: str, fields: dict[str, str]) -> str:
    return pattern.format(key=key, **fields)


def code(stage: Stage, root: Path = Path(".")) -> list[str]:
    """The stage's code dependencies, relative to the study's root when deltalab lives under it."""
    return [imports.relative(f, root) for f in imports.closure(list(stage.entry))]


def argv(stage: Stage, key: str, params_file: str, gpus: str | int = "0") -> list[str]:
    """The stage's command line for one job (`key` may be a placeholder, e.g. Snakemake's wildcard)."""
    head = ["deltalab", stage.command, *([key] if stage.takes_key else []), "--params", params_file]
    return head + [a.replace("{key}", key).replace("{gpus}", str(gpus)) for a in stage.args]


def resolved(p: Params, keys: list[str]) -> str:
    """Params sections as canonical JSON, defaults filled in: what a Snakemake rule's `params:`
    compares, so editing exactly these keys (or a default they take) reruns the rule."""
    raw = p.model_dump(mode="json")
    picked = {}
    for key in keys:
        node = raw
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    return json.dumps(picked, sort_keys=True)


def outputs(p: Params) -> list[str]:
    """Every output of the study: what Snakemake's `all` asks for."""
    found = []
    for stage in STAGES:
        for key in stage.keys(p):
            for out in stage.outs(p):
                found += [fill(f, key, {}) for f in out.files] or [fill(out.path, key, {})]
    return found


def default(stage: str, option: str, key: str = "") -> Path:
    """The CLI's default for a path option: the path the pipeline gives it."""
    args = BY_NAME[stage].args
    return Path(paths.at(args[args.index(option) + 1], key))
