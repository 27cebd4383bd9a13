"""evaluate: greedy answers of one ablation's students (or of the untrained `base`) on eval_id and
eval_ood, scored by the task verifiers, summarised with bootstrap confidence intervals. With
`evaluate.backend: lm_eval` the answers and scores come from lm-evaluation-harness's standard
benchmarks instead (deltalab.evaluation.lm_eval); everything after the per-item rows is the same.

Confidence intervals come from a two-level bootstrap (deltalab.stats): each resample draws training
seeds with replacement and evaluation prompts with replacement (the same prompts for every seed and
for base, so gains are paired). With one seed it is the ordinary percentile bootstrap over prompts.

Outputs: per-item rows (`data/eval/<name>.parquet`: seed, split, family, prompt_id, completion,
verdict) and the summary (`metrics/eval/<name>.json`): accuracy with its CI, per-seed accuracy,
per-family accuracy, per-step accuracy of step traces, mean length, gain over base with its CI, and
the training summary (truncation, log-prob drift). With the openai backend the summary also gets a
`client` block: requests sent, retries, and the retried failures by kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from deltalab import chat, paths, prompting
from deltalab.backends import ChatTemplateError, Request, Sampling
from deltalab.config import Params
from deltalab.errors import RequestFailed, UserError
from deltalab.io import derive_seed, rounded, write_json, write_parquet
from deltalab.progress import bar, summary
from deltalab.serve import endpoint
from deltalab.stats import Resampler, interval, matrix
from deltalab.training.student import student_path
from deltalab.verify import verdict

SPLITS = paths.EVAL_SPLITS


def models(name: str, params: Params, checkpoints: Path) -> list[tuple[int, str]]:
    """(seed, model directory) to evaluate; base is the untrained student (seed -1)."""
    if name == "base":
        return [(-1, student_path(params))]
    if name not in params.ablations:
        raise UserError(f"unknown ablation {name!r} (defined: base, {', '.join(params.ablations)})")
    seeds = params.train_for(name).seeds
    missing = [s for s in seeds if not (checkpoints / f"seed{s}" / "config.json").exists()]
    if missing:
        raise UserError(f"{checkpoints}: no checkpoint for seed {missing[0]} (run `deltalab train {name}` first)")
    return [(s, str(checkpoints / f"seed{s}")) for s in seeds]


def backend(params: Params, path: str, base_url: str | None = None):
    ev, rt = params.evaluate, params.runtime
    if ev.backend == "openai":
        from deltalab.backends.openai import OpenAIBackend

        key = chat.api_key(ev.api_key_env, "evaluate.api_key_env")
        return OpenAIBackend(base_url or ev.base_url, path, key, rt.generate, ev.extra_body, ev.reasoning_format)
    from deltalab.backends.transformers import TransformersBackend

    return TransformersBackend(path, rt.device, rt.generate.batch_size, rt.threads)


def answers(params: Params, seed: int, path: str, prompts: pl.DataFrame, label: str, client: dict) -> list[dict]:
    """One row per prompt; an openai backend's request counts are added to `client`."""
    sampling = Sampling(max_new_tokens=params.evaluate.max_new_tokens, greedy=True)
    rows = list(prompts.iter_rows(named=True))
    # The student's rendering, as in its pairs: what it was trained on is what it is asked.
    templates = prompting.for_families(params, prompts["family"], params.student.prompt if params.student else None, "student")
    requests = [Request(prompting.messages(templates[p["family"]], p), derive_seed(0, p["prompt_id"])) for p in rows]
    hint = prompting.system_hint(templates, "student")
    ev = params.evaluate
    with (endpoint(ev.base_url, ev.serve, path, "evaluate-" + label.replace(" ", "-")) as url,
          bar(len(requests), f"evaluate {label}") as pbar):
        model = backend(params, path, url)
        try:
            completions = model.generate(requests, sampling, pbar.update)
        except RequestFailed as err:
            raise UserError(f"evaluate {label}: prompt {rows[err.index]['prompt_id']} failed: {err.reason}{hint}; "
                            "nothing written") from None
        except ChatTemplateError as err:
            raise UserError(f"{err}{hint}") from None
    steps = params.student is not None and params.student.micro_model is not None
    if hasattr(model, "stats"):
        chat.merge_stats(client, model.stats)
    return [
        dict(seed=seed, split=p["split"], family=p["family"], prompt_id=p["prompt_id"], completion=c.text,
             completion_tokens=c.completion_tokens, finish_reason=c.finish_reason, **verdict(p, c.text, steps))
        for p, c in zip(rows, completions)
    ]


def bootstrap(correct: np.ndarray, base: np.ndarray | None, rounds: int, confidence: float, seed: int) -> dict:
    """Mean accuracy over seeds (seeds x prompts) and its CI; with `base` (per prompt, same order)
    also the paired gain."""
    r = Resampler(correct.shape[1], rounds, seed)
    draws = r.means(correct)
    out = {"accuracy": float(correct.mean()), "ci": list(interval(draws, confidence))}
    if base is not None:
        out["gain"] = float(correct.mean() - base.mean())
        out["gain_ci"] = list(interval(draws - r.means(base[None, :]), confidence))
    return out


def summarise(items: pl.DataFrame, base: pl.DataFrame | None, params: Params) -> dict:
    ev = params.evaluate
    out = {}
    for split in SPLITS:
        rows = items.filter(pl.col("split") == split)
        if rows.height == 0:
            continue
        base_rows = base.filter(pl.col("split") == split) if base is not None else None
        part = _block(rows, base_rows, ev, derive_seed(ev.seed, split))
        part["families"] = {
            fam: _block(rows.filter(pl.col("family") == fam),
                        base_rows.filter(pl.col("family") == fam) if base_rows is not None else None,
                        ev, derive_seed(ev.seed, split, fam))
            for fam in sorted(rows["family"].unique().to_list())
        }
        out[split] = part
    return out


def _block(rows: pl.DataFrame, base: pl.DataFrame | None, ev, seed: int) -> dict:
    seeds = sorted(rows["seed"].unique().to_list())
    order = rows.filter(pl.col("seed") == seeds[0])["prompt_id"].sort()
    correct = matrix(rows)
    base_vec = None
    if base is not None:
        b = base.sort("prompt_id")
        if not b["prompt_id"].equals(order):
            raise UserError("base evaluation answers different prompts (rerun `deltalab evaluate base`)")
        base_vec = b["correct"].to_numpy().astype(float)
    block = bootstrap(correct, base_vec, ev.bootstrap, ev.confidence, seed)
    block["per_seed"] = {str(s): float(m) for s, m in zip(seeds, correct.mean(axis=1))}
    block["prompts"] = int(correct.shape[1])
    steps = rows["step_accuracy"].drop_nulls()
    block["step_accuracy"] = float(steps.mean()) if steps.len() else None
    block["mean_length"] = float(rows["completion_tokens"].mean())
    return block


def run(name: str, params: Params, prompts_dir: Path, checkpoints: Path, base_items: Path, out: Path,
        metrics: Path) -> None:
    rows, client = [], {}
    if params.evaluate.backend == "lm_eval":  # standard benchmarks: lm-eval brings its own documents
        from deltalab.evaluation import lm_eval

        for seed, path in models(name, params, checkpoints):
            rows += lm_eval.answers(params, name, seed, path)
    else:
        prompts = pl.concat([pl.read_parquet(prompts_dir / f"{s}.parquet") for s in SPLITS if (prompts_dir / f"{s}.parquet").exists()])
        if prompts.height == 0:
            raise UserError(f"{prompts_dir}: no eval_id/eval_ood prompts (run the prompts stage first)")
        for seed, path in models(name, params, checkpoints):
            rows += answers(params, seed, path, prompts, name if seed < 0 else f"{name} seed {seed}", client)
    items = pl.DataFrame(rows)
    base = None
    if name != "base":
        if not base_items.exists():
            raise UserError(f"{base_items}: base evaluation missing (run `deltalab evaluate base` first)")
        base = pl.read_parquet(base_items)
    result = {"ablation": name, "seeds": sorted(items["seed"].unique().to_list()), **summarise(items, base, params)}
    if client:  # openai backend only, so other metrics files stay as they were
        result["client"] = client
    train_json = checkpoints / "train.json"
    if name != "base" and train_json.exists():
        result["train"] = {k: v for k, v in json.loads(train_json.read_text()).items() if k != "config"}
    write_parquet(items, out)
    write_json(rounded(result), metrics)
    parts = [f"{s} {result[s]['accuracy']:.3f} [{result[s]['ci'][0]:.3f}, {result[s]['ci'][1]:.3f}]" for s in SPLITS if s in result]
    gain = f", ID gain {result['eval_id']['gain']:+.3f}" if "gain" in result.get("eval_id", {}) else ""
    counts = chat.summary(client) if client else ""
    summary(f"evaluate {name}: wrote {out} and {metrics} ({'; '.join(parts)}{gain}){counts}")
