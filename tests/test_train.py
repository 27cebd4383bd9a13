"""train: TRL students on the tiny profile's pairs — deterministic weights, reference log-prob reuse
that never changes a result, truncation counted, KTO and SFT controls, dvclive curves."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY, build_tiny, deltalab, tree_hashes

pytestmark = pytest.mark.integration  # every test runs stages of the tiny study


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The tiny profile through the judge, plus every ablation's pairs."""
    work = build_tiny(tmp_path_factory.mktemp("train"))
    for name in ("delta", "top", "delta_kto", "delta_sft"):
        deltalab("pairs", name, cwd=work)
    return work


def fresh_copy(study: Path, dst: Path) -> Path:
    """The study's inputs without any training output or reference cache."""
    shutil.copytree(study, dst, ignore=shutil.ignore_patterns("checkpoints", ".cache", "train"))
    return dst


def weights(ckpt: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ckpt.glob("seed*/model.safetensors"))}


def test_two_runs_give_bit_identical_weights_and_curves(study, tmp_path):
    a = fresh_copy(study, tmp_path / "a")
    b = fresh_copy(study, tmp_path / "b")
    for work in (a, b):
        out = deltalab("train", "delta", cwd=work).stdout
        assert "train delta: wrote data/checkpoints/delta (dpo, 24 examples, 2 seeds" in out
    wa, wb = weights(a / "data/checkpoints/delta"), weights(b / "data/checkpoints/delta")
    assert set(wa) == {"seed0", "seed1"} and wa == wb
    assert wa["seed0"] != wa["seed1"]  # the seeds are different students
    assert tree_hashes(a, "data/checkpoints", "metrics/train") == tree_hashes(b, "data/checkpoints", "metrics/train")
    loss = (a / "metrics/train/delta/seed0/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and len(loss) >= 3
    summary = json.loads((a / "data/checkpoints/delta/train.json").read_text())
    assert summary["seeds"]["0"]["steps"] == 6  # 24 pairs / batch 4, one epoch
    assert {"logps_chosen_first", "logps_chosen_last", "logps_rejected_first", "logps_rejected_last"} <= set(summary["seeds"]["0"])


def test_reference_logps_are_reused_and_never_change_a_result(study, tmp_path):
    warm = fresh_copy(study, tmp_path / "warm")
    cold = fresh_copy(study, tmp_path / "cold")
    first = deltalab("train", "delta", cwd=warm).stdout
    assert "reference log-probs 48 reused / 48 computed" in first  # seed 1 reuses seed 0's 48 sequences
    # `top` trains on a subset of delta's pairs: every reference log-prob is already known.
    again = deltalab("train", "top", cwd=warm).stdout
    assert "reference log-probs 48 reused / 0 computed" in again
    alone = deltalab("train", "top", cwd=cold).stdout
    assert "/ 24 computed" in alone
    assert weights(warm / "data/checkpoints/top") == weights(cold / "data/checkpoints/top")


def test_kto_and_sft_controls_train(study, tmp_path):
    work = fresh_copy(study, tmp_path / "w")
    kto = deltalab("train", "delta_kto", cwd=work).stdout
    assert "(kto, 48 examples, 1 seeds" in kto  # the unpaired view: chosen and rejected rows
    sft = deltalab("train", "delta_sft", cwd=work).stdout
    assert "(sft, 24 examples, 1 seeds" in sft
    for name in ("delta_kto", "delta_sft"):
        assert (work / f"data/checkpoints/{name}/seed0/model.safetensors").exists()
        config = json.loads((work / f"data/checkpoints/{name}/seed0/config.json").read_text())
        assert config["use_cache"] is True  # generation-ready


def test_truncation_is_counted_and_warned(study, tmp_path):
    work = fresh_copy(study, tmp_path / "w")
    text = (work / "params.yaml").read_text().replace("max_length: 48 ", "max_length: 14 ")
    (work / "params.yaml").write_text(text)
    proc = deltalab("train", "delta_sft", cwd=work)
    summary = json.loads((work / "data/checkpoints/delta_sft/train.json").read_text())
    assert summary["truncated"] > 0 and summary["max_length"] == 14
    assert f"{summary['truncated']} of 24 examples are longer than max_length=14" in proc.stderr


def test_lora_trains_and_saves_a_merged_model(study, tmp_path):
    work = fresh_copy(study, tmp_path / "w")
    text = (work / "params.yaml").read_text().replace(
        "delta_sft: {chosen: strong, rejected: weak, algorithm: sft, train: {seeds: [0]}}",
        "delta_sft: {chosen: strong, rejected: weak, algorithm: sft, train: {seeds: [0], lora: {r: 4}}}")
    (work / "params.yaml").write_text(text)
    deltalab("train", "delta_sft", cwd=work)
    saved = work / "data/checkpoints/delta_sft/seed0"
    assert (saved / "model.safetensors").exists() and not (saved / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(saved)  # a plain model directory


@pytest.mark.parametrize("args, words", [
    (["train", "nope"], "unknown ablation 'nope'"),
    (["train", "rand"], "data/pairs/rand.parquet: pairs not built (run `deltalab pairs rand` first)"),
])
def test_user_errors_are_one_line(study, args, words):
    proc = deltalab(*args, cwd=study, check=False)
    assert proc.returncode == 2 and words in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_train_override_names_the_key(tmp_path):
    text = TINY.read_text().replace("algorithm: sft, train: {seeds: [0]}", "algorithm: sft, train: {seeds: [0], beta: -1}")
    (tmp_path / "params.yaml").write_text(text)
    proc = deltalab("validate", "params.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "params.yaml: ablations.delta_sft.train.beta: Input should be greater than 0" in proc.stderr
