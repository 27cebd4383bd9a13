"""train: one ablation's students, one per training seed, through TRL.

`dpo` trains on the pairs (reference log-probs shared through the ReferenceCache), `kto` on their
unpaired view (chosen = desirable, rejected = undesirable), `sft` on the chosen traces only — the
control that separates learning from the delta from imitating better traces.

Output: `<out>/seed<k>/` (a plain transformers model directory; LoRA adapters are merged) and
`<out>/train.json` (per seed: steps, truncated examples, reference reuse, chosen/rejected log-prob
drift); training curves go to `<curves>/seed<k>/` through dvclive. On CPU, two runs give
bit-identical weights.

Under `accelerate launch` (`deltalab train --gpus N`, see deltalab.training.launch) every process runs
this same code; only the main process writes the checkpoints, train.json and the curves, and the
reference cache is filled by the main process before the others read it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import torch

from deltalab.backends import model_revision
from deltalab.config import Params, Train
from deltalab.errors import UserError
from deltalab.io import atomic_dir
from deltalab.progress import summary
from deltalab.training.student import student_path

log = logging.getLogger("deltalab.train")


def is_main_process() -> bool:
    """Rank 0, or no launcher at all (torchrun, under accelerate launch, sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_inputs(name: str, params: Params, pairs_dir: Path) -> list[Path]:
    """The user errors, raised before any training process starts; returns the pairs' paths."""
    if name not in params.ablations:
        raise UserError(f"unknown ablation {name!r} (defined: {', '.join(params.ablations) or 'none'})")
    paths = [pairs_dir / f"{name}.parquet", pairs_dir / f"{name}.kto.parquet"]
    for p, columns in zip(paths, (("prompt", "chosen", "rejected"), ("prompt", "completion", "label"))):
        if not p.exists():
            raise UserError(f"{p}: pairs not built (run `deltalab pairs {name}` first)")
        try:
            schema = pl.read_parquet_schema(p)
        except pl.exceptions.PolarsError as err:
            raise UserError(f"{p}: unreadable pairs ({str(err).strip().splitlines()[0]})") from None
        if missing := [c for c in columns if c not in schema]:
            raise UserError(f"{p}: pairs lack column(s) {', '.join(missing)} (rebuild: `deltalab pairs {name}`)")
    student_path(params)
    return paths


def load_pairs(paths: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(paths[0]), pl.read_parquet(paths[1])


def count_truncated(tok, pairs: pl.DataFrame, kto: pl.DataFrame, algorithm: str, max_length: int) -> int:
    """Examples whose prompt + completion is longer than max_length (TRL cuts them at the end)."""

    def length(messages) -> int:
        text = tok.apply_chat_template(list(messages), tokenize=False)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    if algorithm == "kto":
        return sum(length(p + c) > max_length for p, c in zip(kto["prompt"].to_list(), kto["completion"].to_list()))
    sides = ["chosen"] if algorithm == "sft" else ["chosen", "rejected"]
    rows = zip(pairs["prompt"].to_list(), *(pairs[s].to_list() for s in sides))
    return sum(any(length(p + c) > max_length for c in completions) for p, *completions in rows)


def drift(history: list[dict]) -> dict:
    """First and last logged chosen/rejected policy log-probs (what DPO did to each side)."""
    logged = [h for h in history if "logps/chosen" in h]
    if not logged:
        return {}
    first, last = logged[0], logged[-1]
    return {
        "logps_chosen_first": first["logps/chosen"], "logps_chosen_last": last["logps/chosen"],
        "logps_rejected_first": first["logps/rejected"], "logps_rejected_last": last["logps/rejected"],
    }


@contextmanager
def scratch_dir():
    with tempfile.TemporaryDirectory(prefix="deltalab-rank-") as tmp:
        yield Path(tmp)


def train_seed(name: str, cfg: Train, algorithm: str, params: Params, pairs, kto, seed: int, out: Path, curves: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from deltalab.training.reference import ReferenceCache
    from deltalab.training.trainers import LiveCallback, build_trainer, common_args, file_live

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = student_path(params)
    torch.manual_seed(seed)
    # Loaded from its directory: TRL rebuilds a reference from config._name_or_path when it needs one.
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    reference = None
    if algorithm == "dpo":
        reference = ReferenceCache(Path(params.runtime.train.cache_dir) / "reference.sqlite",
                                   model_revision(path) or path, cfg.max_length)
    with tempfile.TemporaryDirectory(prefix="deltalab-train-") as scratch:
        args = common_args(cfg, seed, Path(scratch), params.runtime.device)
        trainer = build_trainer(algorithm, cfg, model, tok, pairs, kto, args, reference,
                                params.runtime.train.reference_batch_size)
        accelerator = trainer.accelerator
        live = file_live(str(curves)) if accelerator.is_main_process else None
        if live is not None:
            trainer.add_callback(LiveCallback(live))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            result = trainer.train()
        if live is not None:
            live.end()
    # ZeRO-3 / FSDP: every rank takes part in gathering the full weights (from the DeepSpeed engine
    # or the FSDP module, which is what model_wrapped holds); only the main one writes them.
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    state_dict = accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(trainer.model)
        if cfg.lora is not None:  # LoRA never runs sharded (deltalab.training.launch)
            trained = trained.merge_and_unload()
        trained.config.use_cache = True  # TRL turns the KV cache off for training; generation wants it
        trained.save_pretrained(out, state_dict=state_dict)
        tok.save_pretrained(out)
        trained.generation_config.save_pretrained(out)
    stats = {"steps": result.global_step, "train_loss": result.training_loss, **drift(trainer.state.log_history)}
    # Cache counts depend on what ran before: they go to the log line, never into an artifact.
    reuse = (reference.hits, reference.computed) if reference is not None else (0, 0)
    if reference is not None:
        reference.close()
    return stats, reuse


def run(name: str, params: Params, pairs_dir: Path, out: Path, curves_dir: Path) -> None:
    pairs, kto = load_pairs(check_inputs(name, params, pairs_dir))
    abl = params.ablations[name]
    cfg = params.train_for(name)
    torch.set_num_threads(params.runtime.threads)
    from transformers import AutoTokenizer

    truncated = count_truncated(AutoTokenizer.from_pretrained(student_path(params)), pairs, kto, abl.algorithm, cfg.max_length)
    examples = kto.height if abl.algorithm == "kto" else pairs.height
    if truncated and is_main_process():  # once, not once per rank
        log.warning("train %s: %d of %d examples are longer than max_length=%d and get truncated",
                    name, truncated, examples, cfg.max_length)
    report = {"ablation": name, "algorithm": abl.algorithm, "examples": examples, "truncated": truncated,
              "max_length": cfg.max_length, "config": cfg.model_dump(mode="json"), "seeds": {}}
    hits = done = 0
    main = is_main_process()
    # The other ranks train too but write nothing: they get throwaway directories.
    outputs = (atomic_dir(out), atomic_dir(curves_dir)) if main else (scratch_dir(), scratch_dir())
    with outputs[0] as tmp, outputs[1] as curves_tmp:
        for seed in cfg.seeds:
            stats, (h, d) = train_seed(name, cfg, abl.algorithm, params, pairs, kto, seed, tmp / f"seed{seed}",
                                       curves_tmp / f"seed{seed}")
            report["seeds"][str(seed)] = stats
            hits, done = hits + h, done + d
        if main:
            (tmp / "train.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if not main:
        return
    reuse = f", reference log-probs {hits} reused / {done} computed" if abl.algorithm == "dpo" else ""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    spread = f", {processes} processes" if processes > 1 else ""
    summary(f"train {name}: wrote {out} ({abl.algorithm}, {examples} examples, {len(cfg.seeds)} seeds, "
            f"{truncated} truncated{spread}{reuse})")
