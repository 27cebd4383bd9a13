"""pairs: pick rules, selections, directions, generator delta, outputs (TRL + KTO), errors, determinism.

Inputs are small hand-built traces / judgments / prompts tables, so every expected pair is known.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import deltalab
from deltalab.config import DIMENSIONS, Selection, load_params
from deltalab.errors import UserError
from deltalab.io import content_id
from deltalab.judge import JUDGMENT_SCHEMA
from deltalab import pairing
from deltalab.stages import pairs as stage
from deltalab.stages.generate import SCHEMA as TRACE_SCHEMA

QUESTIONS = {f"p{i}": f"{i} + {i} =" for i in range(1, 7)}


def trace(gen: str, prompt: str, i: int, correct: bool, scores: int | tuple | None) -> dict:
    """One sampled trace and its judgment: `scores` is 1-5 for every dimension, a 5-tuple, or None
    for a failed judgment."""
    if isinstance(scores, int):
        scores = (scores,) * len(DIMENSIONS)
    return dict(gen=gen, prompt=prompt, i=i, correct=correct, scores=scores)


def write_inputs(root: Path, rows: list[dict], prompts: dict[str, str] = QUESTIONS) -> None:
    pl.DataFrame({"prompt_id": list(prompts), "question": list(prompts.values()), "family": "chain_sum",
                  "metadata": "{}", "split": "train", "answer": "0"}).write_parquet(root / "prompts.parquet")
    for gen in sorted({r["gen"] for r in rows}):
        mine = [r for r in rows if r["gen"] == gen]
        traces = [
            {**{c: None for c in TRACE_SCHEMA}, "trace_id": f"{gen}.{r['prompt']}.{r['i']}", "prompt_id": r["prompt"],
             "generator": gen, "decoding": "sample", "sample_index": r["i"],
             "completion": f"{gen} answers {r['prompt']} (sample {r['i']})", "correct": r["correct"],
             "score": float(r["correct"])}
            for r in mine
        ]
        (root / "traces").mkdir(exist_ok=True)
        pl.DataFrame(traces, schema=TRACE_SCHEMA).write_parquet(root / "traces" / f"{gen}.parquet")
        judged = [
            {**{c: None for c in JUDGMENT_SCHEMA}, "trace_id": f"{gen}.{r['prompt']}.{r['i']}", "prompt_id": r["prompt"],
             "generator": gen, "judge": "verifier", "status": "ok" if r["scores"] else "parse_error",
             **dict(zip(DIMENSIONS, r["scores"] or (None,) * len(DIMENSIONS)))}
            for r in mine
        ]
        (root / "judgments").mkdir(exist_ok=True)
        pl.DataFrame(judged, schema=JUDGMENT_SCHEMA).write_parquet(root / "judgments" / f"{gen}.parquet")


def write_params(root: Path, ablations: dict) -> Path:
    params = {
        "tasks": {"chain_sum": {"source": "reasoning_gym", "dataset": "chain_sum"}},
        "prompt": {"default": {"user": "{{ question }}"}},
        "prompts": {"train": {"chain_sum": 6}, "eval_id": {"chain_sum": 2}},
        "generators": {"big": {"model": "m/big", "scale": "7B"}, "small": {"model": "m/small", "scale": "1B"}},
        "ablations": ablations,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# big and small answer p1..p4 with three samples; big also answers p5 alone (not a common prompt).
BASE = [
    # p1: big's sample 0 is unjudged, so `first` takes sample 1; best is sample 2 (tie with nothing)
    trace("big", "p1", 0, True, None), trace("big", "p1", 1, True, 3), trace("big", "p1", 2, False, 5),
    trace("small", "p1", 0, False, 2), trace("small", "p1", 1, False, 1), trace("small", "p1", 2, True, 2),
    # p2: big's samples 1 and 2 tie for best (4) -> the lower sample index (1) wins
    trace("big", "p2", 0, True, 2), trace("big", "p2", 1, True, 4), trace("big", "p2", 2, True, 4),
    trace("small", "p2", 0, True, (1, 2, 3, 4, 5)), trace("small", "p2", 1, False, 1), trace("small", "p2", 2, False, 1),
    # p3: small has no ok judgment at all -> dropped for every big-vs-small ablation
    trace("big", "p3", 0, False, 3), trace("big", "p3", 1, True, 3), trace("big", "p3", 2, True, 3),
    trace("small", "p3", 0, False, None), trace("small", "p3", 1, True, None), trace("small", "p3", 2, False, None),
    # p4: big has one usable trace only (zero-delta control drops it)
    trace("big", "p4", 0, False, None), trace("big", "p4", 1, False, 2), trace("big", "p4", 2, True, None),
    trace("small", "p4", 0, True, 4), trace("small", "p4", 1, True, 4), trace("small", "p4", 2, False, 3),
    # p5: only big answered
    trace("big", "p5", 0, True, 5), trace("big", "p5", 1, True, 5), trace("big", "p5", 2, True, 5),
]


@pytest.fixture
def world(tmp_path):
    write_inputs(tmp_path, BASE)
    return tmp_path


def build(root: Path, ablations: dict, name: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    params = load_params(write_params(root, ablations))
    name = name or next(iter(ablations))
    out = root / "data/pairs" / f"{name}.parquet"
    stage.run(name, params, root / "prompts.parquet", root / "traces", root / "judgments", out,
              out.with_suffix(".kto.parquet"), root / "metrics" / f"{name}.json")
    return (pl.read_parquet(out), pl.read_parquet(out.with_suffix(".kto.parquet")),
            json.loads((root / "metrics" / f"{name}.json").read_text()))


def cli(root: Path, name: str, check: bool = True):
    return deltalab("pairs", name, "--params", "params.yaml", "--prompts", "prompts.parquet", "--traces-dir", "traces",
                    "--judgments-dir", "judgments", "--out", f"out/{name}.parquet", "--kto-out", f"out/{name}.kto.parquet",
                    "--metrics", f"out/{name}.json", cwd=root, check=check)


def by_prompt(df: pl.DataFrame) -> dict[str, dict]:
    return {r["prompt_id"]: r for r in df.iter_rows(named=True)}


# --- pick rules --------------------------------------------------------------------------------------


def test_pick_first_trl_format_and_metadata(world):
    pairs, _, metrics = build(world, {"gap": {"chosen": "big", "rejected": "small"}})
    rows = by_prompt(pairs)
    assert set(rows) == {"p1", "p2", "p4"}  # p3: small never judged ok; p5: small never answered
    assert (rows["p1"]["chosen_trace_id"], rows["p1"]["rejected_trace_id"]) == ("big.p1.1", "small.p1.0")
    assert (rows["p4"]["chosen_trace_id"], rows["p4"]["rejected_trace_id"]) == ("big.p4.1", "small.p4.0")
    p1 = rows["p1"]
    assert p1["prompt"] == [{"role": "user", "content": QUESTIONS["p1"]}]
    assert p1["chosen"] == [{"role": "assistant", "content": "big answers p1 (sample 1)"}]
    assert p1["rejected"] == [{"role": "assistant", "content": "small answers p1 (sample 0)"}]
    assert p1["pair_id"] == content_id("pair", "big.p1.1", "small.p1.0")
    assert all(p1[f"delta_{d}"] == 1 for d in DIMENSIONS) and p1["delta_aggregate"] == 1.0
    assert (p1["chosen_correct"], p1["rejected_correct"], p1["direction"]) == (True, False, "correct->wrong")
    assert (p1["chosen_generator"], p1["rejected_generator"]) == ("big", "small")
    assert (p1["chosen_scale"], p1["rejected_scale"]) == ("7B", "1B")
    p2 = rows["p2"]  # big 2 everywhere vs small (1, 2, 3, 4, 5)
    assert [p2[f"delta_{d}"] for d in DIMENSIONS] == [1, 0, -1, -2, -3] and p2["delta_aggregate"] == -1.0
    assert p2["direction"] == "correct->correct" and rows["p4"]["direction"] == "wrong->correct"
    assert pairs["pair_id"].to_list() == sorted(pairs["pair_id"])  # deterministic row order
    assert metrics["prompts_available"] == 4 and metrics["prompts_dropped_unjudged"] == 1
    assert metrics["pairs"] == 3 and metrics["algorithm"] == "dpo"
    assert metrics["direction_counts"] == {"correct->wrong": 1, "wrong->correct": 1, "wrong->wrong": 0,
                                           "correct->correct": 1}
    agg = metrics["deltas"]["delta_aggregate"]  # p1 +1, p2 -1, p4 2-4 = -2
    assert (agg["min"], agg["median"], agg["max"], agg["mean"]) == (-2.0, -1.0, 1.0, round(-2 / 3, 4))
    assert set(metrics["deltas"]) == {f"delta_{d}" for d in DIMENSIONS} | {"delta_aggregate"}
    assert set(agg) == {"mean", "q25", "median", "q75", "min", "max"} and agg["q25"] == -1.5


def test_pick_best_breaks_ties_by_sample_index(world):
    pairs, _, _ = build(world, {"best": {"chosen": "big", "rejected": "small", "pick": "best"}})
    rows = by_prompt(pairs)
    assert rows["p1"]["chosen_trace_id"] == "big.p1.2"  # 5 beats 3; sample 0 is unjudged
    assert rows["p2"]["chosen_trace_id"] == "big.p2.1"  # 4 ties 4 -> lower sample index
    assert rows["p2"]["rejected_trace_id"] == "small.p2.0"  # mean 3 beats 1, 1
    assert rows["p1"]["rejected_trace_id"] == "small.p1.0"  # 2 ties 2 -> sample 0 (sample 1 scores 1)
    assert rows["p4"]["rejected_trace_id"] == "small.p4.0"


def test_zero_delta_control_picks_two_different_traces(world):
    for pick in ("first", "best", "random"):
        pairs, _, metrics = build(world, {"zero": {"chosen": "big", "rejected": "big", "pick": pick}})
        rows = by_prompt(pairs)
        assert set(rows) == {"p1", "p2", "p3", "p5"}  # p4: big has one usable trace
        assert all(r["chosen_trace_id"] != r["rejected_trace_id"] for r in rows.values())
        assert set(pairs["chosen_generator"]) == set(pairs["rejected_generator"]) == {"big"}
        assert (pairs["generator_delta"] == 0.0).all() and metrics["generator_delta"] == 0.0
        assert metrics["prompts_available"] == 5 and metrics["prompts_dropped_unjudged"] == 1
        if pick == "first":
            assert (rows["p1"]["chosen_trace_id"], rows["p1"]["rejected_trace_id"]) == ("big.p1.1", "big.p1.2")
            assert (rows["p2"]["chosen_trace_id"], rows["p2"]["rejected_trace_id"]) == ("big.p2.0", "big.p2.1")
        if pick == "best":  # best, then the best of the rest: never a negative aggregate delta
            assert (rows["p2"]["chosen_trace_id"], rows["p2"]["rejected_trace_id"]) == ("big.p2.1", "big.p2.2")
            assert (pairs["delta_aggregate"] >= 0).all()


def test_pick_random_is_seeded_per_prompt_and_reproducible(tmp_path):
    prompts = {f"q{i}": f"question {i}" for i in range(40)}
    rows = [trace(g, p, i, i % 2 == 0, 3) for g in ("big", "small") for p in prompts for i in range(4)]
    rows[1]["scores"] = None  # big q0 sample 1 is unjudged: never picked
    write_inputs(tmp_path, rows, prompts)

    def picks(seed: int) -> dict[str, tuple[int, int]]:
        pairs, _, _ = build(tmp_path, {"r": {"chosen": "big", "rejected": "big", "pick": "random", "pick_seed": seed}})
        return {r["prompt_id"]: (r["chosen_sample_index"], r["rejected_sample_index"]) for r in pairs.iter_rows(named=True)}

    first, again, other = picks(0), picks(0), picks(1)
    assert first == again and first != other
    assert all(c != r for c, r in first.values())
    assert 1 not in first["q0"]
    # picks are spread over the samples (sample 0 is not privileged) ...
    assert {c for c, _ in first.values()} == {0, 1, 2, 3}
    # ... and each prompt's pick depends only on its own seed: dropping other prompts changes nothing
    write_inputs(tmp_path, [r for r in rows if r["prompt"] in ("q5", "q6")], {"q5": "question 5", "q6": "question 6"})
    assert picks(0) == {k: first[k] for k in ("q5", "q6")}


# --- selections ---------------------------------------------------------------------------------------


def light_pairs(deltas: list[float]) -> pl.DataFrame:
    ids = [content_id("pair", str(i), "x") for i in range(len(deltas))]
    return pl.DataFrame({"pair_id": ids, "delta_aggregate": deltas,
                         "delta_step_coherence": [-d for d in deltas]}).sort("pair_id")


def test_selection_sizes_round_half_up_and_at_least_one():
    assert pairing.sample_size(Selection(method="top_k", fraction=0.5), 5) == 3  # 2.5 -> 3
    assert pairing.sample_size(Selection(method="top_k", fraction=0.3), 5) == 2  # 1.5 -> 2
    assert pairing.sample_size(Selection(method="top_k", fraction=0.1), 4) == 1  # 0.4 -> at least 1
    assert pairing.sample_size(Selection(method="top_k", fraction=0.3), 50000) == 15000
    assert pairing.sample_size(Selection(method="top_k", count=7), 5) == 5  # capped at what exists
    assert pairing.sample_size(Selection(method="random_k", count=2), 5) == 2


def test_top_bottom_ties_broken_by_pair_id():
    pairs = light_pairs([1.0, 2.0, 2.0, 2.0, 0.0, -1.0])
    twos = sorted(pairs.filter(pl.col("delta_aggregate") == 2.0)["pair_id"])
    top = pairing.select(pairs, Selection(method="top_k", count=2))
    assert top["pair_id"].to_list() == sorted(twos[:2])  # three tie at 2.0: the two smallest pair_ids
    assert top["pair_id"].to_list() == sorted(top["pair_id"])
    bottom = pairing.select(pairs, Selection(method="bottom_k", fraction=0.5))
    assert sorted(bottom["delta_aggregate"]) == [-1.0, 0.0, 1.0]
    by_dim = pairing.select(pairs, Selection(method="top_k", count=1, by="step_coherence"))
    assert by_dim["delta_aggregate"].to_list() == [-1.0]
    assert pairing.select(pairs, Selection(method="threshold", threshold=1.0))["delta_aggregate"].sort().to_list() == [
        1.0, 2.0, 2.0, 2.0]
    assert pairing.select(pairs, Selection()).equals(pairs)


def test_random_k_is_seeded_and_sized():
    pairs = light_pairs([float(i % 5) for i in range(40)])
    a = pairing.select(pairs, Selection(method="random_k", fraction=0.25, seed=3))
    assert a.height == 10 and a.equals(pairing.select(pairs, Selection(method="random_k", fraction=0.25, seed=3)))
    assert not a.equals(pairing.select(pairs, Selection(method="random_k", fraction=0.25, seed=4)))
    assert a["pair_id"].to_list() == sorted(a["pair_id"]) and a["pair_id"].is_in(pairs["pair_id"].implode()).all()


def test_selections_end_to_end(world):
    ablations = {
        "top": {"chosen": "big", "rejected": "small", "selection": {"method": "top_k", "fraction": 0.5}},
        "top_dim": {"chosen": "big", "rejected": "small",
                    "selection": {"method": "top_k", "count": 1, "by": "numerical_precision"}},
        "bottom": {"chosen": "big", "rejected": "small", "selection": {"method": "bottom_k", "count": 1}},
        "thr": {"chosen": "big", "rejected": "small", "selection": {"method": "threshold", "threshold": -1.0}},
        "rnd": {"chosen": "big", "rejected": "small", "selection": {"method": "random_k", "count": 2, "seed": 5}},
    }
    # deltas (first pick): p1 +1 (every dim), p2 (1, 0, -1, -2, -3) -> -1, p4 -2 (every dim)
    got = {name: build(world, ablations, name) for name in ablations}
    prompts = lambda name: sorted(got[name][0]["prompt_id"])
    assert prompts("top") == ["p1", "p2"]  # 1.5 -> 2 pairs: +1 and -1
    assert prompts("top_dim") == ["p1"]  # numerical_precision: +1, -2, -2
    assert prompts("bottom") == ["p4"]
    assert prompts("thr") == ["p1", "p2"]  # >= -1.0 keeps -1.0 itself
    assert len(prompts("rnd")) == 2
    metrics = got["top"][2]
    assert metrics["pairs"] == 2 and metrics["pairs_candidates"] == 3 and metrics["selection"]["method"] == "top_k"


def test_direction_filter(world):
    pairs, _, metrics = build(world, {"fix": {"chosen": "big", "rejected": "small",
                                              "directions": ["wrong->correct", "correct->wrong"]}})
    assert sorted(pairs["prompt_id"]) == ["p1", "p4"]
    assert set(pairs["direction"]) == {"wrong->correct", "correct->wrong"}
    assert metrics["pairs_paired"] == 3 and metrics["pairs_candidates"] == 2


def test_one_direction_picks_among_the_traces_that_can_make_it(world):
    # `first` alone pairs big's sample 1 (right) with small's sample 0 (wrong) on p1; wrong->wrong picks big's
    # wrong sample 2 instead, and on p4 small's only wrong usable sample (2).
    pairs, _, _ = build(world, {"ww": {"chosen": "big", "rejected": "small", "directions": ["wrong->wrong"]}})
    got = {r["prompt_id"]: (r["chosen_sample_index"], r["rejected_sample_index"]) for r in pairs.iter_rows(named=True)}
    assert got == {"p1": (2, 0), "p4": (1, 2)} and set(pairs["direction"]) == {"wrong->wrong"}
    cc, _, _ = build(world, {"cc": {"chosen": "big", "rejected": "small", "directions": ["correct->correct"]}})
    assert sorted(cc["prompt_id"]) == ["p1", "p2"] and set(cc["direction"]) == {"correct->correct"}


# --- generator delta ------------------------------------------------------------------------------------


def test_generator_delta_over_common_prompts(world):
    pairs, _, metrics = build(world, {"gap": {"chosen": "big", "rejected": "small"}})
    # common prompts p1-p4, all sampled traces (judged or not): big 8/12 correct, small 5/12 (p5 left out)
    assert metrics["chosen_accuracy"] == round(8 / 12, 6) and metrics["rejected_accuracy"] == round(5 / 12, 6)
    assert metrics["generator_delta"] == round(3 / 12, 6)
    assert pairs["generator_delta"].to_list() == pytest.approx([0.25] * 3)
    reverse, _, m2 = build(world, {"rev": {"chosen": "small", "rejected": "big"}})
    assert m2["generator_delta"] == -metrics["generator_delta"]
    assert set(reverse["chosen_generator"]) == {"small"}


# --- errors, determinism, outputs --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "ablation, words",
    [
        ({"selection": {"method": "threshold", "threshold": 3.0}}, "threshold"),
        # p2 only: big is always right there, so no prompt can make a wrong->wrong pair
        ({"directions": ["wrong->wrong"]}, "directions wrong->wrong: none of the 1 prompts"),
    ],
)
def test_zero_pairs_is_a_one_line_error_and_no_file(tmp_path, ablation, words):
    world = tmp_path
    write_inputs(world, [t for t in BASE if t["prompt"] == "p2"])
    write_params(world, {"empty": {"chosen": "big", "rejected": "small", **ablation}})
    proc = cli(world, "empty", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ablations.empty: selection leaves 0 pairs (")
    assert words in lines[0]
    assert not (world / "out").exists() or not any((world / "out").iterdir())


def test_missing_inputs_are_user_errors(world):
    params = load_params(write_params(world, {"gap": {"chosen": "big", "rejected": "small"}}))
    (world / "judgments" / "small.parquet").unlink()
    with pytest.raises(UserError, match="judgments of generator 'small' not found"):
        stage.run("gap", params, world / "prompts.parquet", world / "traces", world / "judgments",
                  world / "o.parquet", world / "o.kto.parquet", world / "o.json")
    with pytest.raises(UserError, match="ablations.nope: not defined"):
        stage.run("nope", params, world / "prompts.parquet", world / "traces", world / "judgments",
                  world / "o.parquet", world / "o.kto.parquet", world / "o.json")
    assert not (world / "o.parquet").exists()
    write_inputs(world, BASE, {k: v for k, v in QUESTIONS.items() if k != "p2"})  # a prompt table that does not match
    with pytest.raises(UserError, match=r"ablations.gap: 1 pair\(s\) have no prompt in the prompt table"):
        stage.run("gap", params, world / "prompts.parquet", world / "traces", world / "judgments",
                  world / "o.parquet", world / "o.kto.parquet", world / "o.json")
    assert not (world / "o.parquet").exists()


@pytest.mark.integration
def test_cli_reruns_are_byte_identical(world):
    write_params(world, {"gap": {"chosen": "big", "rejected": "small", "pick": "random",
                                 "selection": {"method": "random_k", "count": 2}}})
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((world / "out").iterdir())}
    proc = cli(world, "gap")
    assert proc.stdout.strip().startswith("pairs gap: wrote") and len(proc.stdout.strip().splitlines()) == 1
    first = digest()
    assert set(first) == {"gap.parquet", "gap.kto.parquet", "gap.json"}
    cli(world, "gap")
    assert digest() == first


def test_planning_needs_no_files(world):
    """deltalab.pairing plans and assembles from frames in memory; the stage only reads and writes."""
    ablations = {"a": {"chosen": "big", "rejected": "small", "pick": "best"},
                 "z": {"chosen": "small", "rejected": "small", "selection": {"method": "top_k", "count": 1}}}
    params = load_params(write_params(world, ablations))
    frames = {g: (pl.read_parquet(world / "traces" / f"{g}.parquet"), pl.read_parquet(world / "judgments" / f"{g}.parquet"))
              for g in ("big", "small")}
    light = {g: pairing.light(t.lazy(), j.lazy()) for g, (t, j) in frames.items()}
    texts = {g: t.select("trace_id", "completion") for g, (t, _) in frames.items()}
    prompts = pairing.prompt_messages(pl.read_parquet(world / "prompts.parquet"), params)
    for name, abl in ablations.items():
        plan = pairing.plan(name, params, light[abl["chosen"]], light[abl["rejected"]])
        pairs, kto = pairing.assemble(plan, texts, prompts)
        written, written_kto, metrics = build(world, ablations, name)
        assert pairs.equals(written) and kto.equals(written_kto) and plan.metrics == metrics


def test_kto_view(world):
    pairs, kto, _ = build(world, {"k": {"chosen": "big", "rejected": "small", "algorithm": "kto"}})
    assert kto.columns[:3] == ["prompt", "completion", "label"] and "pair_id" in kto.columns
    assert kto.height == 2 * pairs.height
    assert kto["label"].to_list() == [True, False] * pairs.height  # chosen row, then its rejected row
    assert kto["pair_id"].to_list() == [p for p in pairs["pair_id"] for _ in range(2)]
    assert kto["completion"].to_list()[0::2] == pairs["chosen"].to_list()
    assert kto["completion"].to_list()[1::2] == pairs["rejected"].to_list()
    assert kto["prompt"].to_list()[0::2] == pairs["prompt"].to_list()


def test_pair_ids_match_content_id():
    plain = pl.Series(["ab12", "cd34"]), pl.Series(["ef56", "0"])
    odd = pl.Series(['quo"te', "sp ace"]), pl.Series(["ü", "x"])
    for chosen, rejected in (plain, odd):
        got = pairing.pair_ids(chosen, rejected).to_list()
        assert got == [content_id("pair", a, b) for a, b in zip(chosen, rejected)]


def test_datasets_loads_pairs_and_kto(world):
    import datasets

    build(world, {"gap": {"chosen": "big", "rejected": "small"}})
    ds = datasets.load_dataset("parquet", data_files=str(world / "data/pairs/gap.parquet"), split="train")
    assert ds.num_rows == 3 and ds[0]["prompt"][0]["role"] == "user" and ds[0]["chosen"][0]["role"] == "assistant"
    kto = datasets.load_dataset("parquet", data_files=str(world / "data/pairs/gap.kto.parquet"), split="train")
    assert kto.num_rows == 6 and isinstance(kto[0]["label"], bool)


def test_dpo_trainer_runs_two_steps_on_a_pairs_file(world, tmp_path):
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from deltalab.micro.tokenizer import build_tokenizer
    from deltalab.micro.train import build_model, save

    build(world, {"gap": {"chosen": "big", "rejected": "small"}})
    torch.manual_seed(0)
    tok = build_tokenizer()
    model_dir = tmp_path / "micro"
    save(build_model("llama", 32, 1, 2, tok, 128), tok, model_dir)
    # Loaded from its directory, so TRL can rebuild the reference model from config._name_or_path.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = datasets.load_dataset("parquet", data_files=str(world / "data/pairs/gap.parquet"), split="train")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), use_cpu=True, bf16=False, max_steps=2,
                     per_device_train_batch_size=2, report_to=[], logging_steps=1, save_strategy="no",
                     activation_checkpointing=False, max_length=64, dataset_num_proc=None, seed=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(model_dir))
    result = trainer.train()
    assert result.global_step == 2
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)  # finite, positive


def test_pairs_per_prompt_pairs_picks_in_order(world):
    pairs, kto, metrics = build(world, {"many": {"chosen": "big", "rejected": "small", "pairs_per_prompt": 2}}, "many")
    # i-th usable pick vs i-th usable pick; p4 has one usable big trace (one pair), p3 none on small
    got = sorted(zip(pairs["prompt_id"], pairs["chosen_sample_index"], pairs["rejected_sample_index"]))
    assert got == [("p1", 1, 0), ("p1", 2, 1), ("p2", 0, 0), ("p2", 1, 1), ("p4", 1, 0)]
    assert metrics["pairs_per_prompt"] == 2 and metrics["prompts_dropped_unjudged"] == 1
    assert pairs["pair_id"].n_unique() == 5 and kto.height == 10
    zero, _, _ = build(world, {"zero2": {"chosen": "big", "rejected": "big", "pairs_per_prompt": 2}}, "zero2")
    # the control pairs picks 1-2 and 3-4: with at most three usable samples, one pair per prompt
    got = sorted(zip(zero["prompt_id"], zero["chosen_sample_index"], zero["rejected_sample_index"]))
    assert got == [("p1", 1, 2), ("p2", 0, 1), ("p3", 0, 1), ("p5", 0, 1)]
