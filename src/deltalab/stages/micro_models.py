"""micro_models: train one tiny causal LM from scratch on step-by-step chain-sum traces.

The training problems come from the task families in `micro_models.train_tasks` (or the model's own
`train_tasks`), drawn with their
own seed; every question that appears in an eval split is excluded, so evaluation stays held out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import torch

from deltalab.config import Params
from deltalab.errors import UserError
from deltalab.io import atomic_dir, derive_seed
from deltalab.micro import train as T
from deltalab.micro.tokenizer import build_tokenizer
from deltalab.micro.traces import render_trace
from deltalab.progress import bar, summary
from deltalab.tasks import candidates, prompt_id

THREADS = 1
"""Micro models always train on one torch thread, whatever runtime.threads or the launcher says: a GPT-2
micro model's bias and LayerNorm gradients sum over the batch in an order that depends on the thread
count (measured: gen_g trained on 2 threads by `dvc repro` differed from the 1-thread Snakemake run;
the llama models were identical), and a second thread buys nothing at this size (gen_xs 39 s vs 38 s)."""


def training_examples(params: Params, name: str, exclude: set[str]) -> list[tuple[str, str]]:
    """(question, reference trace) pairs for micro model `name`, eval questions excluded."""
    mm = params.micro_models
    pairs = []
    for family in mm.models[name].train_tasks or mm.train_tasks:
        task = params.tasks[family]
        if task.dataset != "chain_sum":
            raise UserError(f"micro_models.train_tasks: {family!r} is not a chain_sum task (no step traces)")
        seed = derive_seed(mm.data_seed, "micro", family)
        got = 0
        for row in candidates(family, task, seed, mm.examples, Path(".")):
            if prompt_id(row["question"]) in exclude:
                continue
            pairs.append((row["question"], render_trace(json.loads(row["metadata"])["expression"])))
            got += 1
            if got == mm.examples:
                break
    return pairs


def run(name: str, params: Params, eval_paths: list[Path], out: Path) -> None:
    if params.micro_models is None or name not in params.micro_models.models:
        raise UserError(f"unknown micro model {name!r} (not in micro_models.models)")
    mm, spec = params.micro_models, params.micro_models.models[name]
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    exclude = set().union(*(set(pl.read_parquet(p)["prompt_id"]) for p in eval_paths)) if eval_paths else set()
    tok = build_tokenizer()
    examples = T.encode_all(tok, training_examples(params, name, exclude))
    longest = max(len(ids) for ids, _ in examples)
    if longest > mm.max_length:
        raise UserError(f"micro_models.max_length: {mm.max_length} is shorter than a training example ({longest} tokens)")
    torch.manual_seed(spec.seed)
    model = T.build_model(spec.arch, spec.hidden, spec.layers, spec.heads, tok, mm.max_length)
    with bar(spec.steps, f"train {name}") as pbar:
        losses: list[float] = []

        def on_step(step: int, loss: float) -> None:
            losses.append(loss)
            pbar.update(1)
            pbar.set_postfix(loss=f"{loss:.3f}")

        T.train(model, examples, steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, warmup=spec.warmup,
                seed=spec.seed, pad_id=tok.pad_token_id, on_step=on_step)
    model.generation_config.do_sample = True  # so plain OpenAI requests to `transformers serve` sample
    with atomic_dir(out) as tmp:
        T.save(model, tok, tmp)
    n_params = sum(p.numel() for p in model.parameters())
    tail = sum(losses[-50:]) / len(losses[-50:])
    took = time.perf_counter() - start
    summary(f"micro_models {name}: wrote {out} ({n_params:,} params, {spec.steps} steps, "
            f"{len(examples)} examples, final loss {tail:.3f}) in {took:.0f} s")
