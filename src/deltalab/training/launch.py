"""The command that runs `deltalab train` on one device or, through `accelerate launch`, on several.

`deltalab train ... --gpus N` with N > 1 re-executes itself as
`accelerate launch --config_file workflow/accelerate/<strategy>.yaml --num_processes N ... -m deltalab.cli train ...`;
every process then runs the ordinary training path (deltalab.stages.train), which writes its
outputs from the main process only.

Which strategy:
- full fine-tuning: runtime.train.distributed (zero3 by default; fsdp; ddp);
- LoRA: always ddp. The stage merges the adapter into the base weights before saving, and PEFT
  documents merging under FSDP as unsupported; under ZeRO-3 the base weights are partitioned and
  would have to be gathered for the merge. A 7-8B base in bf16 (~16 GB) plus a LoRA adapter and its
  optimizer states fits on one 80 GB GPU, so plain data parallel is also the fastest choice;
- runtime.device: cpu: ddp over gloo with mixed precision off (DeepSpeed and FSDP want GPUs); this
  is how the tests run several processes on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from deltalab.errors import UserError

STRATEGIES = ("zero3", "fsdp", "ddp")
# The configs live in the pipeline's tree (workflow/accelerate); the package is installed editable.
SOURCE_CONFIGS = Path(__file__).resolve().parents[3] / "workflow" / "accelerate"


def config_file(strategy: str) -> Path:
    """workflow/accelerate/<strategy>.yaml of the pipeline run from here, else of this source tree."""
    for base in (Path("workflow/accelerate"), SOURCE_CONFIGS):
        if (base / f"{strategy}.yaml").exists():
            return base / f"{strategy}.yaml"
    raise UserError(f"workflow/accelerate/{strategy}.yaml: accelerate config not found (runtime.train.distributed: {strategy})")


def strategy_for(strategy: str, lora: bool, cpu: bool) -> str:
    if strategy not in STRATEGIES:
        raise UserError(f"runtime.train.distributed: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    return "ddp" if lora or cpu else strategy


def command(gpus: int, strategy: str, lora: bool, train_args: list[str], cpu: bool = False) -> list[str]:
    """argv for one training job. `train_args` are the arguments after `deltalab train`."""
    if gpus <= 1:
        return ["deltalab", "train", *train_args]
    chosen = strategy_for(strategy, lora, cpu)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file(chosen)),
            "--num_processes", str(gpus), "--num_machines", "1",
            # 0 = a free port: two jobs on one node (SLURM packs them) must not both take 29500.
            "--main_process_port", "0"]
    if cpu:
        argv += ["--mixed_precision", "no"]
    return [*argv, "-m", "deltalab.cli", "train", *train_args]


def check_batch(batch_size: int, gpus: int) -> None:
    """Each process takes batch_size / N pairs per step, so a step is the same whatever N is."""
    if gpus > 1 and batch_size % gpus:
        raise UserError(f"train.batch_size: {batch_size} pairs per step do not split evenly over {gpus} processes (--gpus {gpus})")


def check_installed(argv: list[str]) -> None:
    """A ZeRO-3 launch without DeepSpeed fails deep inside accelerate: say it in one line instead."""
    if any(a.endswith("zero3.yaml") for a in argv) and importlib.util.find_spec("deepspeed") is None:
        raise UserError("runtime.train.distributed: zero3 needs the deepspeed package on this machine "
                        "(pip install deepspeed), or use fsdp")
