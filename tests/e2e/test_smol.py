"""The real-model study (configs/smol.yaml) end to end on CPU: SmolLM2-135M-Instruct (`make smollm2`)
as a sampling generator beside a micro model, as the in-process judge (probability-weighted scores)
and as the student (DPO, KTO, SFT, and DPO with LoRA), through Snakemake; the same study through `dvc repro` of the dvc.yaml that `deltalab dvc-yaml
--params` writes for it, to the same bytes; then the same judge with JSON scoring and the base
student through lm-eval's `hf` model.

`make test-real` runs it (~4 min on 2 cores); `.ci/run` runs it after `make test`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import BIN, ROOT, deltalab, tree_hashes
from deltalab import prompting
from deltalab.config import DIMENSIONS, load_params

# The setup runs the real-model study (~160 s quiet).
pytestmark = [pytest.mark.e2e, pytest.mark.real, pytest.mark.timeout(1200)]

MODEL = ROOT / "data/models/smollm2-135m-instruct"
ABLATIONS = ("dpo", "kto", "sft", "lora_top50")


def sh(work: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    if not (MODEL / "deltalab_source.json").exists():
        pytest.fail(f"{MODEL} missing: run `make smollm2` (make test-real does)")
    work = tmp_path_factory.mktemp("smol")
    shutil.copy(ROOT / "Snakefile", work)
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copy(ROOT / "configs/smol.yaml", work / "smol.yaml")
    (work / "data/models").mkdir(parents=True)
    (work / "data/models" / MODEL.name).symlink_to(MODEL)
    start = time.time()
    sh(work, "snakemake", "--profile", "workflow/profiles/local", "--configfile", "smol.yaml")
    return work, time.time() - start


@pytest.fixture(scope="module")
def dvc_study(study, tmp_path_factory):
    """The same config through DVC: a git + DVC repo, its dvc.yaml generated for smol.yaml, `dvc repro`."""
    work = tmp_path_factory.mktemp("smol_dvc")
    shutil.copy(ROOT / "configs/smol.yaml", work / "smol.yaml")
    (work / "data/models").mkdir(parents=True)
    (work / "data/models" / MODEL.name).symlink_to(MODEL)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    for args in (["dvc", "init", "-q"], ["deltalab", "dvc-yaml", "--params", "smol.yaml"]):
        sh(work, *args)
    start = time.time()
    sh(work, "dvc", "repro")
    return work, time.time() - start


def test_dvc_repro_of_the_generated_dvc_yaml_writes_what_snakemake_wrote(study, dvc_study):
    (snake, _), (dvc, seconds) = study, dvc_study
    print(f"smol study through dvc repro: {seconds:.0f} s")
    a, b = ({k: v for k, v in tree_hashes(w, "data", "metrics", "reports").items() if not k.endswith(".gitignore")}
            for w in (snake, dvc))  # DVC writes .gitignore files beside its outputs
    assert len(a) > 30 and "reports/summary.md" in a and "data/judgments/smol.parquet" in a
    assert a == b, sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert "Data and pipelines are up to date" in sh(dvc, "dvc", "status").stdout


def table(work: Path, path: str) -> pl.DataFrame:
    return pl.read_parquet(work / path)


def test_every_stage_ran_and_nothing_is_left_to_do(study):
    work, seconds = study
    print(f"smol study through Snakemake: {seconds:.0f} s")
    for path in ["metrics/generators.json", "metrics/judge.json", "reports/summary.md", "metrics/report.json",
                 *(f"data/checkpoints/{a}/seed0/model.safetensors" for a in ABLATIONS),
                 *(f"metrics/eval/{n}.json" for n in ("base", *ABLATIONS))]:
        assert (work / path).exists(), path
    out = sh(work, "snakemake", "-n", "--configfile", "smol.yaml", "-c1").stdout
    assert "Nothing to be done" in out
    summary = (work / "reports/summary.md").read_text()
    assert all(f"| {a} |" in summary for a in ABLATIONS)


def test_answers_are_read_and_the_real_student_scores(study):
    """Free-form answers ("The final answer is 15.") are read: the base student's in-domain accuracy
    is not zero, and the measured generator delta (SmolLM2 over the micro model) is not zero."""
    work, _ = study
    base = json.loads((work / "metrics/eval/base.json").read_text())
    assert base["eval_id"]["accuracy"] > 0
    items = table(work, "data/eval/base.parquet")
    assert items.filter(pl.col("correct"))["answer"].null_count() == 0
    gens = json.loads((work / "metrics/generators.json").read_text())["generators"]
    assert gens["smol"]["accuracy_mean"] != gens["tiny"]["accuracy_mean"]
    pairs = json.loads((work / "metrics/pairs/dpo.json").read_text())
    assert pairs["generator_delta"] != 0


def test_one_rendering_from_generation_to_training(study):
    """The student's prompt template (a system prompt and the question) is what the pairs hold, what
    SmolLM2 was sent as a generator (its traces record the hash), and what the micro model was not:
    its own override sends the bare question."""
    work, _ = study
    params = load_params(work / "smol.yaml")
    prompts = {r["prompt_id"]: r for r in table(work, "data/prompts/train.parquet").iter_rows(named=True)}
    tpl = prompting.resolve(params, "chain_sum", params.student.prompt, "student")
    pairs = table(work, "data/pairs/dpo.parquet")
    for row in pairs.iter_rows(named=True):
        assert row["prompt"] == prompting.messages(tpl, prompts[row["prompt_id"]])
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    smol = table(work, "data/traces/smol.parquet")
    want = {pid: prompting.messages_hash(prompting.messages(tpl, p)) for pid, p in prompts.items()}
    assert (smol["prompt_hash"] == smol["prompt_id"].replace_strict(want)).all()
    assert "prompt_hash" not in table(work, "data/traces/tiny.parquet").columns  # the bare question


def test_probability_weighted_judgments(study):
    work, _ = study
    for gen in ("smol", "tiny"):
        j = table(work, f"data/judgments/{gen}.parquet")
        assert (j["status"] == "ok").all() and (j["scoring"] == "probability").all()
        for d in DIMENSIONS:
            assert j[f"{d}_expected"].is_between(1, 5).all() and j[d].is_between(1, 5).all()
            # the argmax is the most likely score, so it lies within 2 of the expectation
            assert ((j[f"{d}_expected"] - j[d].cast(pl.Float64)).abs() < 2).all()
    pairs = table(work, "data/pairs/lora_top50.parquet")
    assert pairs.schema["delta_aggregate"] == pl.Float64 and pairs.height == 4
    metrics = json.loads((work / "metrics/pairs/lora_top50.json").read_text())
    assert metrics["judge_scoring"] == "probability" and metrics["ties_at_cutoff"]["tied"] >= 1
    scores = json.loads((work / "metrics/judge.json").read_text())["generators"]["smol"]["scores"]
    assert scores["scoring"] == "probability" and 0 < scores["score_mass_mean"] <= 1


def test_lora_checkpoint_is_merged(study):
    work, _ = study
    seed0 = work / "data/checkpoints/lora_top50/seed0"
    assert not list(seed0.glob("adapter_*"))
    assert (seed0 / "model.safetensors").read_bytes() != (MODEL / "model.safetensors").read_bytes()


def test_json_scoring_with_the_same_judge(study):
    """JSON scoring, the default for large judges, on a few traces: a 135M judge writes no JSON, and every
    row says so (status parse_error with the reason, the raw reply kept) instead of being dropped."""
    work, _ = study
    data = yaml.safe_load((work / "smol.yaml").read_text())
    data["judge"] |= {"scoring": "json", "max_tokens": 48}
    (work / "smol_json.yaml").write_text(yaml.safe_dump(data))
    (work / "data/traces_few").mkdir()
    for gen in ("smol", "tiny"):
        table(work, f"data/traces/{gen}.parquet").head(3).write_parquet(work / f"data/traces_few/{gen}.parquet")
    deltalab("judge", "--params", "smol_json.yaml", "--traces-dir", "data/traces_few", "--out-dir", "data/judgments_json",
             "--metrics", "metrics/judge_json.json", "--audit", "metrics/judge_json_audit.json", cwd=work)
    j = pl.concat([table(work, f"data/judgments_json/{g}.parquet") for g in ("smol", "tiny")])
    assert j.height == 6 and (j["scoring"] == "json").all() and j["raw_response"].null_count() == 0
    assert set(j["status"]) <= {"ok", "parse_error"}
    assert j.filter(pl.col("status") == "parse_error")["reason"].null_count() == 0
    assert j.filter(pl.col("status") == "ok").select(DIMENSIONS).null_count().sum_horizontal().item() == 0


def test_lm_eval_hf_answers_like_in_process(study):
    """The base student through lm-eval's `hf` model on deltalab's own eval tasks (the student's
    template, deltalab's answer rules): the same greedy answers and the same accuracy as in-process."""
    work, _ = study
    data = yaml.safe_load((work / "smol.yaml").read_text())
    data["evaluate"] = {"backend": "lm_eval", "bootstrap": 200, "lm_eval": {
        "model": "hf", "model_args": {"dtype": "float32"}, "include_path": str(ROOT / "configs/lm_eval_tasks"),
        "tasks": {"eval_id": ["deltalab_eval_id"], "eval_ood": ["deltalab_eval_ood"]},
        "apply_chat_template": True, "system_instruction": data["prompt"]["default"]["system"],
        "batch_size": 8, "gen_kwargs": {"max_gen_toks": data["evaluate"]["max_new_tokens"]}}}
    (work / "smol_lmeval.yaml").write_text(yaml.safe_dump(data))
    deltalab("evaluate", "base", "--params", "smol_lmeval.yaml", "--out", "data/eval/base_lmeval.parquet",
             "--metrics", "metrics/eval/base_lmeval.json", cwd=work, env={"HF_DATASETS_OFFLINE": "1"})
    local, harness = table(work, "data/eval/base.parquet"), table(work, "data/eval/base_lmeval.parquet")
    assert harness.height == local.height == 24
    assert harness["completion"].to_list() == local["completion"].to_list()
    assert harness["correct"].to_list() == local["correct"].to_list()
