"""Multi-GPU training: the `accelerate launch` command `deltalab train --gpus N` builds, the accelerate
configs it names, and real two-process training (DDP over gloo on the CPU) on the tiny profile."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, TINY, deltalab
from deltalab.errors import UserError
from deltalab.training import launch

ARGS = ["delta", "--params", "params.yaml", "--pairs-dir", "data/pairs", "--out", "data/checkpoints/delta",
        "--curves", "metrics/train/delta"]
DISTRIBUTED_TYPE = {"zero3": "DEEPSPEED", "fsdp": "FSDP", "ddp": "MULTI_GPU"}


@pytest.mark.parametrize("gpus", [0, 1, 2, 8])
@pytest.mark.parametrize("strategy", ["zero3", "fsdp", "ddp"])
@pytest.mark.parametrize("lora", [False, True])
def test_command(gpus, strategy, lora, monkeypatch):
    monkeypatch.chdir(ROOT)  # where Snakemake runs the rule: the configs are found relative to it
    argv = launch.command(gpus, strategy, lora, ARGS)
    if gpus <= 1:
        assert argv == ["deltalab", "train", *ARGS]
        return
    used = "ddp" if lora else strategy  # LoRA merges its adapter at the end: never sharded
    assert argv == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"workflow/accelerate/{used}.yaml",
                    "--num_processes", str(gpus), "--num_machines", "1", "--main_process_port", "0",
                    "-m", "deltalab.cli", "train", *ARGS]
    config = yaml.safe_load((ROOT / argv[4]).read_text())
    assert config["distributed_type"] == DISTRIBUTED_TYPE[used]


@pytest.mark.parametrize("strategy", ["zero3", "fsdp", "ddp"])
def test_cpu_processes_use_ddp_without_mixed_precision(strategy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no workflow/ here: the source tree's configs are used
    argv = launch.command(2, strategy, False, ARGS, cpu=True)
    assert argv[3:5] == ["--config_file", str(ROOT / "workflow/accelerate/ddp.yaml")]
    assert argv[11:] == ["--mixed_precision", "no", "-m", "deltalab.cli", "train", *ARGS]


@pytest.mark.parametrize("strategy", ["zero3", "fsdp", "ddp"])
def test_accelerate_reads_the_configs(strategy):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "workflow/accelerate" / f"{strategy}.yaml"
    config = load_config_from_file(str(path))  # accelerate's own loader: rejects unknown keys
    assert config.distributed_type.value == DISTRIBUTED_TYPE[strategy]
    assert config.mixed_precision == "bf16" and config.num_machines == 1
    # What the stage's save relies on: the full weights gathered on the main process.
    if strategy == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"] is True
        assert config.deepspeed_config["offload_optimizer_device"] == config.deepspeed_config["offload_param_device"] == "none"
    if strategy == "fsdp":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert config.fsdp_config["fsdp_reshard_after_forward"] is True  # full shard
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(UserError, match="runtime.train.distributed: 'zero2' is not one of zero3, fsdp, ddp"):
        launch.command(2, "zero2", False, ARGS)


@pytest.mark.integration
def test_validate_rejects_an_unknown_strategy(tmp_path):
    text = TINY.read_text().replace("runtime:\n", "runtime:\n  train: {distributed: zero2}\n")
    (tmp_path / "params.yaml").write_text(text)
    proc = deltalab("validate", "params.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "runtime.train.distributed" in proc.stderr


@pytest.fixture(scope="module")
def work(tiny, tmp_path_factory) -> Path:
    """A copy of the tiny workspace (the session's own is shared) with delta's and delta_sft's pairs."""
    work = tmp_path_factory.mktemp("launch") / "w"
    shutil.copytree(tiny, work, ignore=shutil.ignore_patterns("pairs", "checkpoints", ".cache", "train", "eval"))
    for name in ("delta", "delta_sft"):
        deltalab("pairs", name, cwd=work)
    return work


def only_outputs(work: Path, name: str) -> None:
    """The main process wrote each output once; the other rank left nothing (no temp dirs)."""
    assert sorted(p.name for p in (work / "data/checkpoints").iterdir()) == [name]
    assert sorted(p.name for p in (work / "metrics/train").iterdir()) == [name]
    seeds = sorted(p.name for p in (work / "metrics/train" / name).iterdir())
    assert sorted(p.name for p in (work / "data/checkpoints" / name).iterdir()) == [*seeds, "train.json"]


def test_two_processes_train_dpo_like_one(work, tmp_path):
    params = work / "params.yaml"
    params.write_text(params.read_text().replace("delta: {chosen: strong, rejected: weak}",
                                                 "delta: {chosen: strong, rejected: weak, train: {seeds: [0]}}"))
    proc = deltalab("train", "delta", "--gpus", "2", cwd=work)
    assert "accelerate.commands.launch --config_file" in proc.stderr and "ddp.yaml --num_processes 2" in proc.stderr
    # One summary (main process only); the other rank read the 48 reference log-probs back.
    assert proc.stdout.count("train delta: wrote") == 1
    assert "0 truncated, 2 processes, reference log-probs 0 reused / 48 computed" in proc.stdout
    only_outputs(work, "delta")
    with sqlite3.connect(work / ".cache/deltalab/reference.sqlite") as db:
        assert db.execute("SELECT count(*) FROM logps").fetchone() == (48,)
    assert (work / "metrics/train/delta/seed0/plots/metrics/train/loss.tsv").exists()
    # train.batch_size (4) is pairs per step: 2 per process, so the same 6 steps over the same batches
    # as one process, and the same student up to float rounding.
    deltalab("train", "delta", "--out", str(tmp_path / "one"), "--curves", str(tmp_path / "curves"), cwd=work)
    two = json.loads((work / "data/checkpoints/delta/train.json").read_text())["seeds"]["0"]
    one = json.loads((tmp_path / "one/train.json").read_text())["seeds"]["0"]
    assert two["steps"] == one["steps"] == 6 and two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(work / "data/checkpoints/delta/seed0/model.safetensors"), load_file(tmp_path / "one/seed0/model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_processes_train_lora(work):
    params = work / "params.yaml"
    params.write_text(params.read_text().replace(
        "delta_sft: {chosen: strong, rejected: weak, algorithm: sft, train: {seeds: [0]}}",
        "delta_sft: {chosen: strong, rejected: weak, algorithm: sft, train: {seeds: [0], lora: {r: 4}}}"))
    shutil.rmtree(work / "data/checkpoints")
    shutil.rmtree(work / "metrics/train")
    proc = deltalab("train", "delta_sft", "--gpus", "2", cwd=work)
    assert "ddp.yaml --num_processes 2" in proc.stderr and proc.stdout.count("train delta_sft: wrote") == 1
    only_outputs(work, "delta_sft")
    saved = work / "data/checkpoints/delta_sft/seed0"
    assert (saved / "model.safetensors").exists() and not (saved / "adapter_config.json").exists()  # merged
    assert json.loads((work / "data/checkpoints/delta_sft/train.json").read_text())["seeds"]["0"]["steps"] == 6


def test_user_errors_come_before_the_launch(work):
    proc = deltalab("train", "rand", "--gpus", "2", cwd=work, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: data/pairs/rand.parquet: pairs not built (run `deltalab pairs rand` first)"


def test_batch_must_split_over_the_processes(work):
    proc = deltalab("train", "delta", "--gpus", "3", cwd=work, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.batch_size: 4 pairs per step do not split evenly over 3 processes (--gpus 3)"


def test_zero3_without_deepspeed_is_one_line(work, tmp_path):
    import importlib.util

    assert importlib.util.find_spec("deepspeed") is None  # this machine (CPU only) has no DeepSpeed
    text = (work / "params.yaml").read_text().replace("runtime:\n", "runtime:\n  device: cuda\n")
    (tmp_path / "params.yaml").write_text(text)
    proc = deltalab("train", "delta", "--gpus", "4", "--params", str(tmp_path / "params.yaml"), cwd=work, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: runtime.train.distributed: zero3 needs the deepspeed package on this "
                                   "machine (pip install deepspeed), or use fsdp")
