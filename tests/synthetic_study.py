"""A synthetic study for the report: params.yaml with the default study's ablation shapes, and the files
the report reads (data/eval, metrics/eval, data/pairs, metrics/pairs, data/judgments) with planted effects.

Evaluation rows have the evaluate stage's schema and its metrics come from its own `summarise`. A model
answers a prompt correctly when the prompt's ease plus a small per-seed jitter lies below the model's
accuracy (shared by every model, as easy prompts are easy for all): two models of the same planted
accuracy then answer alike, and a planted difference is what their paired comparison sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from deltalab.config import DIMENSIONS, load_params
from deltalab.io import content_id, derive_seed
from deltalab.stages.evaluate import summarise

GENERATORS = {  # name: (family, measured accuracy on the training prompts)
    "gen_xs": ("llama", 0.10), "gen_s": ("llama", 0.30), "gen_m": ("llama", 0.50), "gen_l": ("llama", 0.70),
    "gen_g": ("gpt2", 0.52),
}
AXIS = {"zero_delta": "gen_xs", "delta_s": "gen_s", "delta_m": "gen_m", "delta_l": "gen_l"}  # chosen vs gen_xs
DIRECTIONS = {"dir_cw": "correct->wrong", "dir_wc": "wrong->correct", "dir_ww": "wrong->wrong", "dir_cc": "correct->correct"}
BASE = 0.30  # the untrained student's accuracy on both splits
SPLITS = {"eval_id": "chain_sum", "eval_ood": "chain_sum_long"}

# Planted gains over base, (in-domain, out-of-domain); ablations not named gain 0.
GAINS = {
    "zero_delta": (0.0, 0.0), "delta_s": (0.02, 0.04), "delta_m": (0.04, 0.08), "delta_l": (0.10, 0.12),
    # SFT twins: imitation explains all of it but at the largest delta, where DPO adds 6 points
    "zero_delta_sft": (0.0, 0.0), "delta_s_sft": (0.02, 0.04), "delta_m_sft": (0.04, 0.08), "delta_l_sft": (0.04, 0.06),
    # the rejected axis: gen_l against stronger rejected generators gains the same (imitation)
    "rej_s": (0.10, 0.12), "rej_m": (0.10, 0.12),
    # family: as delta_m (matched delta) in-domain, 6 points more out-of-domain
    "family_gpt2": (0.04, 0.14),
    # directions: clear gain, small gain, none, harm
    "dir_cw": (0.08, 0.08), "dir_wc": (0.03, 0.03), "dir_ww": (0.0, 0.0), "dir_cc": (-0.06, -0.06),
    "delta_l_kto": (0.05, 0.05),
}
# Planted mean sample-level delta per unit generator delta: step coherence rises, signal_to_noise is flat.
DIMENSION_SLOPES = {"factuality": 2.0, "strategy_coherence": 1.0, "step_coherence": 3.0, "numerical_precision": 2.0,
                    "signal_to_noise": 0.0}


def ablations(names: list[str] | None = None) -> dict:
    """The default study's ablation shapes (discovered by structure, so names do not matter)."""
    out: dict = {n: {"chosen": g, "rejected": "gen_xs"} for n, g in AXIS.items()}
    out |= {f"{n}_sft": {**a, "algorithm": "sft"} for n, a in list(out.items())}
    out["delta_l_sft"]["train"] = {"seeds": [0]}  # a control with fewer seeds is still the twin (as in tests/tiny)
    out |= {"rej_s": {"chosen": "gen_l", "rejected": "gen_s"}, "rej_m": {"chosen": "gen_l", "rejected": "gen_m"},
            "family_gpt2": {"chosen": "gen_g", "rejected": "gen_xs"},
            "delta_l_kto": {"chosen": "gen_l", "rejected": "gen_xs", "algorithm": "kto"}}
    out |= {n: {"chosen": "gen_l", "rejected": "gen_xs", "pairs_per_prompt": 4, "directions": [d],
                "selection": {"method": "random_k", "count": 100}} for n, d in DIRECTIONS.items()}
    return {n: a for n, a in out.items() if names is None or n in names}


def params(abl: dict, bootstrap: int = 400) -> dict:
    task = {"source": "reasoning_gym", "dataset": "chain_sum", "question_format": "{expression} ="}
    return {
        "tasks": {"chain_sum": {**task, "config": {"min_terms": 2, "max_terms": 3}},
                  "chain_sum_long": {**task, "config": {"min_terms": 5, "max_terms": 5}}},
        "prompts": {"seed": 0, "train": {"chain_sum": 300}, "eval_id": {"chain_sum": 500},
                    "eval_ood": {"chain_sum_long": 500}},
        "generators": {n: {"model": f"models/{n}", "family": f, "scale": n} for n, (f, _) in GENERATORS.items()},
        "ablations": abl,
        "student": {"model": "models/student"},
        "train": {"seeds": [0, 1]},
        "evaluate": {"bootstrap": bootstrap, "confidence": 0.95},
    }


def _eval_rows(name: str, seeds: list[int], accuracy: dict[str, float], ease: dict, jitter: dict) -> pl.DataFrame:
    rows = []
    for split, family in SPLITS.items():
        for seed in seeds:
            correct = ease[split] + jitter[split][seed] < accuracy[split]
            for i, ok in enumerate(correct):
                rows.append(dict(seed=seed, split=split, family=family, prompt_id=f"{split}-{i:04d}",
                                 completion=f"A:{i}", completion_tokens=8 + i % 5, finish_reason="stop",
                                 answer=str(i), score=float(ok), correct=bool(ok), format_ok=True,
                                 step_correct=[bool(ok)], step_accuracy=float(ok)))
    return pl.DataFrame(rows)


def _pairs(name: str, a: dict, prompts: int, rng: np.random.Generator) -> tuple[pl.DataFrame, dict]:
    chosen, rejected = a["chosen"], a["rejected"]
    delta = 0.0 if chosen == rejected else GENERATORS[chosen][1] - GENERATORS[rejected][1]
    k = a.get("pairs_per_prompt", 1)
    ids = [f"train-{i:04d}" for i in range(prompts) for _ in range(k)]
    cols = {f"delta_{d}": np.clip(np.rint(rng.normal(s * delta, 1.0, len(ids))), -4, 4).astype(np.int8)
            for d, s in DIMENSION_SLOPES.items()}
    direction = a.get("directions", ["correct->wrong"])[0]
    df = pl.DataFrame({
        "pair_id": [content_id(name, i, j) for i, j in enumerate(ids)], "prompt_id": ids,
        "chosen_generator": chosen, "rejected_generator": rejected, "chosen_scale": chosen, "rejected_scale": rejected,
        "generator_delta": delta, "direction": direction, **cols,
    }).with_columns(delta_aggregate=pl.sum_horizontal(pl.col(f"delta_{d}").cast(pl.Int32) for d in DIMENSIONS)
                    .cast(pl.Float64) / len(DIMENSIONS))
    sel = a.get("selection", {})
    if sel.get("count"):
        df = df.head(sel["count"])
    stats = {c: {"mean": round(float(df[c].cast(pl.Float64).mean()), 4)} for c in df.columns if c.startswith("delta_")}
    metrics = {"ablation": name, "algorithm": a.get("algorithm", "dpo"), "chosen": chosen, "rejected": rejected,
               "pairs": df.height, "generator_delta": round(delta, 6), "deltas": stats}
    return df, metrics


RATIONALE = "gen_l"
"""The one generator whose judgments carry a rationale (as an LLM judge's would; the verifier gives none)."""


def _browsable(name: str, a: dict, df: pl.DataFrame, judged: dict[str, list[dict]]) -> pl.DataFrame:
    """The pair browser's columns (texts as chat messages, trace ids, verdicts, a direction that
    follows them) and each side's judgment rows in `judged`, whose scores differ by the pair's deltas.
    Its own random stream, so the planted deltas are as they were."""
    rng = np.random.default_rng(derive_seed(0, "browsable", name))
    n = df.height
    ok = {side: rng.random(n) < GENERATORS[a[side]][1] for side in ("chosen", "rejected")}
    if a.get("directions"):  # the direction the ablation keeps, with verdicts that agree
        c, r = a["directions"][0].split("->")
        ok = {"chosen": np.full(n, c == "correct"), "rejected": np.full(n, r == "correct")}
    direction = [f"{'correct' if c else 'wrong'}->{'correct' if r else 'wrong'}" for c, r in zip(ok["chosen"], ok["rejected"])]
    out = {"direction": direction, "prompt": [], "chosen": [], "rejected": [], "chosen_trace_id": [], "rejected_trace_id": []}
    for i, row in enumerate(df.iter_rows(named=True)):
        x, y = i % 50, i % 7
        out["prompt"].append([{"role": "user", "content": f"{x} + {y} ="}])
        for side in ("chosen", "rejected"):
            answer = x + y if ok[side][i] else x + y + 1 + i % 3
            out[side].append([{"role": "assistant", "content": f"S1:{x}+{y}={answer}\nA:{answer}"}])
            out[f"{side}_trace_id"].append(tid := content_id(name, side, row["pair_id"]))
            # both sides' scores in 1..5, chosen - rejected = the pair's delta
            scores = {d: 1 + max(0, -row[f"delta_{d}"]) + (side == "chosen") * row[f"delta_{d}"] for d in DIMENSIONS}
            judged.setdefault(a[side], []).append({"trace_id": tid, "status": "ok", **scores,
                                                   "rationale": f"{side} {name} {i}: steps checked" if a[side] == RATIONALE else None})
    return df.with_columns(**{k: pl.Series(v) for k, v in out.items()},
                           chosen_correct=pl.Series(ok["chosen"]), rejected_correct=pl.Series(ok["rejected"]))


def write_study(root: Path, names: list[str] | None = None, gains: dict | None = None, bootstrap: int = 400) -> Path:
    """Write the study under root and return its params.yaml."""
    abl = ablations(names)
    gains = {**GAINS, **(gains or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params(abl, bootstrap), sort_keys=False))
    p = load_params(root / "params.yaml")
    rng = np.random.default_rng(0)
    n = {s: sum(getattr(p.prompts, s).values()) for s in SPLITS}
    ease = {s: rng.random(n[s]) for s in SPLITS}
    jitter = {s: {seed: rng.normal(0, 0.01, n[s]) for seed in (-1, 0, 1)} for s in SPLITS}
    for d in ("data/eval", "metrics/eval", "data/pairs", "metrics/pairs", "data/judgments"):
        (root / d).mkdir(parents=True, exist_ok=True)
    base = _eval_rows("base", [-1], {s: BASE for s in SPLITS}, ease, jitter)
    models = {"base": base}
    for name in abl:
        g = gains.get(name, (0.0, 0.0))
        models[name] = _eval_rows(name, p.train_for(name).seeds, {s: BASE + x for s, x in zip(SPLITS, g)}, ease, jitter)
    for name, items in models.items():
        items.write_parquet(root / f"data/eval/{name}.parquet")
        summary = {"ablation": name, "seeds": sorted(items["seed"].unique().to_list()),
                   **summarise(items, None if name == "base" else base, p)}
        (root / f"metrics/eval/{name}.json").write_text(json.dumps(summary, indent=2))
    judged: dict[str, list[dict]] = {}
    for name, a in abl.items():
        pairs, metrics = _pairs(name, a, p.prompts.train["chain_sum"], rng)
        pairs = _browsable(name, a, pairs, judged)
        pairs.write_parquet(root / f"data/pairs/{name}.parquet")
        (root / f"metrics/pairs/{name}.json").write_text(json.dumps(metrics, indent=2))
    schema = {"trace_id": pl.String, "status": pl.String, **{d: pl.Int8 for d in DIMENSIONS}, "rationale": pl.String}
    for gen in GENERATORS:
        pl.DataFrame(judged.get(gen, []), schema=schema).write_parquet(root / f"data/judgments/{gen}.parquet")
    return root / "params.yaml"
