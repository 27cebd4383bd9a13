"""TRL trainers for one student run: DPO (with reference reuse), KTO, or the SFT control."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import datasets
import polars as pl
from transformers import TrainerCallback

from deltalab.config import Train
from deltalab.training.reference import ReferenceCache

# Trainer logs that are about speed, not learning: never in the curves (they are not reproducible).
NOT_CURVES = ("runtime", "per_second", "total_flos")


def file_live(directory: str):
    """A dvclive logger that only writes files. The stage already runs under DVC or Snakemake, so
    dvclive must not open the DVC repo itself (which also fails in a git repo without commits)."""
    from dvclive import Live

    class FileLive(Live):
        def _init_dvc(self):
            self._dvc_repo = None

    return FileLive(dir=directory, save_dvc_exp=False, dvcyaml=None, report=None)


class LiveCallback(TrainerCallback):
    """Every logged training value to dvclive, keyed by the optimizer step (curves for `dvc plots`)."""

    def __init__(self, live):
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not any(s in k for s in NOT_CURVES)}
        if not values:
            return
        self.live.step = state.global_step
        for k, v in sorted(values.items()):
            self.live.log_metric(f"train/{k.replace('/', '_')}", v)
        self.live.next_step()


def _reusing_dpo_trainer(cache: ReferenceCache, size: int):
    from trl import DPOTrainer

    class ReusingDPOTrainer(DPOTrainer):
        """DPOTrainer whose reference log-probs come from the shared ReferenceCache."""

        def _precompute_ref_logps(self, dataset, name, batch_size):
            chosen = [(p + c, len(p)) for p, c in zip(dataset["prompt_ids"], dataset["chosen_ids"])]
            rejected = [(p + r, len(p)) for p, r in zip(dataset["prompt_ids"], dataset["rejected_ids"])]
            model = self.ref_model or self.model
            # ZeRO-3 and FSDP leave the (still whole) student on the CPU until train(): run the
            # reference passes on this process's device, then hand the model back where it was.
            home = next(model.parameters()).device
            model.to(self.args.device)
            # Several processes: the main one computes and stores the misses, the others then read
            # them all back (one writer to the SQLite file, no duplicated forward passes).
            with self.accelerator.main_process_first():
                ref_chosen = cache.logps(model, chosen, size)
                ref_rejected = cache.logps(model, rejected, size)
                cache.close()
            model.to(home)
            return dataset.add_column("ref_chosen_logps", ref_chosen).add_column("ref_rejected_logps", ref_rejected)

    return ReusingDPOTrainer


def common_args(cfg: Train, seed: int, output_dir: Path, device: str) -> dict:
    return dict(
        output_dir=str(output_dir),
        use_cpu=device == "cpu",
        # bf16 only when an accelerate config asks for it on GPUs (workflow/accelerate/*.yaml): the
        # DeepSpeed config must agree with these arguments. Plain runs stay in full precision.
        bf16=device != "cpu" and os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16",
        num_train_epochs=cfg.epochs,
        # train.batch_size is pairs per optimizer step whatever the number of processes (accelerate
        # launch sets WORLD_SIZE; deltalab.training.launch checks that it divides).
        per_device_train_batch_size=cfg.batch_size // int(os.environ.get("WORLD_SIZE", "1")),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta2=cfg.adam_beta2,
        seed=seed,
        data_seed=seed,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        report_to=[],
        save_strategy="no",
        activation_checkpointing=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight gets a gradient: skip DDP's extra graph walk
        disable_tqdm=not sys.stderr.isatty(),
    )


def peft_config(cfg: Train):
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
    )


def build_trainer(algorithm: str, cfg: Train, model, tok, pairs: pl.DataFrame, kto: pl.DataFrame, args: dict,
                  reference: ReferenceCache | None, reference_batch_size: int):
    datasets.disable_progress_bars()
    if algorithm == "dpo":
        from trl import DPOConfig

        ds = datasets.Dataset.from_polars(pairs.select("prompt", "chosen", "rejected"))
        config = DPOConfig(**args, beta=cfg.beta, loss_type=cfg.loss_type, loss_weights=cfg.loss_weights,
                           precompute_ref_log_probs=reference is not None)
        from trl import DPOTrainer

        cls = _reusing_dpo_trainer(reference, reference_batch_size) if reference is not None else DPOTrainer
        return quiet(cls(model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(cfg)))
    if algorithm == "kto":
        from trl import KTOConfig, KTOTrainer

        ds = datasets.Dataset.from_polars(kto.select("prompt", "completion", "label"))
        config = KTOConfig(**args, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
                           undesirable_weight=cfg.undesirable_weight)
        return quiet(KTOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(cfg)))
    from trl import SFTConfig, SFTTrainer

    ds = datasets.Dataset.from_polars(pairs.select("prompt", pl.col("chosen").alias("completion")))
    config = SFTConfig(**args, completion_only_loss=True)
    return quiet(SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, peft_config=peft_config(cfg)))


def quiet(trainer):
    """No raw log dicts on stdout: the curves go to dvclive, the stage prints one summary line."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer
