"""Pair planning for one ablation: pick, pair, select, summarise. Pure functions over polars frames;
reading the inputs and writing the tables is the pairs stage's (deltalab.stages.pairs).

Picking: only traces with an ok judgment (status ok, five scores) can be picked. `first` takes the
lowest ok-judged sample index, `best` the highest aggregate (mean of the five scores; ties: lowest
sample index), `random` orders a prompt's samples by a key derived from
derive_seed(pick_seed, "pick", generator, prompt_id), so a prompt's pick depends on nothing else. The
zero-delta control (same generator on both sides) takes the first two traces in that order. With
`pairs_per_prompt: k` the first k picks of each side are paired in order. With `directions`, each side
picks only among traces whose verdict some allowed direction has on that side (then pairs outside the
directions are dropped), so a rare direction gets every prompt that can make one. Prompts without a pickable
trace on a side (two, for the control) are dropped and counted in the metrics.

Everything up to the selection runs on light columns (ids, sample index, verdict, scores); the
completion text joins in only at `assemble`, for the selected pairs.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import polars as pl

from deltalab import prompting
from deltalab.config import DIMENSIONS, Ablation, Params, Selection
from deltalab.errors import UserError
from deltalab.io import content_id, derive_seed

DIRECTIONS = ("correct->wrong", "wrong->correct", "wrong->wrong", "correct->correct")
DELTAS = [f"delta_{d}" for d in DIMENSIONS] + ["delta_aggregate"]
# What planning reads of the traces (the text last: it is read only for the selected pairs) and judgments.
TRACE_COLUMNS = ("trace_id", "prompt_id", "sample_index", "correct", "completion")
JUDGMENT_COLUMNS = ("trace_id", "status", *DIMENSIONS)
PROMPT_COLUMNS = ("prompt_id", "question", "family", "metadata")
META = [
    "pair_id", "prompt_id", "chosen_generator", "rejected_generator", "chosen_scale", "rejected_scale",
    "generator_delta", "chosen_trace_id", "rejected_trace_id", "chosen_sample_index", "rejected_sample_index",
    "chosen_correct", "rejected_correct", "direction", *DELTAS,
]
MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
_PLAIN_ID = re.compile(r"^[0-9A-Za-z_.:-]*$")


def ablation(name: str, params: Params) -> Ablation:
    if name not in params.ablations:
        raise UserError(f"ablations.{name}: not defined (defined: {', '.join(params.ablations) or 'none'})")
    return params.ablations[name]


def probability_scored(judged: pl.LazyFrame | pl.DataFrame) -> bool:
    """Whether a judgment table comes from a probability-scoring judge, whose expected scores
    (`<dimension>_expected`, floats) are its scores."""
    lazy = judged.lazy()
    names = lazy.collect_schema().names()
    return all(f"{d}_expected" in names for d in DIMENSIONS) and lazy.select(
        pl.col(f"{DIMENSIONS[0]}_expected").is_not_null().any()).collect().item()


def light(traces: pl.LazyFrame, judged: pl.LazyFrame) -> pl.DataFrame:
    """Every sampled trace of one generator without its text: ids, verdict, judged scores, `ok`,
    `aggregate`. `traces` has TRACE_COLUMNS but the text, `judged` JUDGMENT_COLUMNS (and, from a
    probability-scoring judge, `<dimension>_expected`); lazy scans read only what is used."""
    # Probability scoring: the expected score (a float) is the score; integer judges keep Int8.
    continuous = probability_scored(judged)
    if continuous:
        judged = judged.with_columns(pl.col(f"{d}_expected").alias(d) for d in DIMENSIONS)
    judged = judged.select(JUDGMENT_COLUMNS)
    scores = [pl.col(d).cast(pl.Float64 if continuous else pl.Int8) for d in DIMENSIONS]
    return (
        traces
        .select(TRACE_COLUMNS[:-1])
        .join(judged, on="trace_id", how="left", maintain_order="left")
        .with_columns(
            ok=((pl.col("status") == "ok") & pl.all_horizontal(s.is_not_null() for s in scores)).fill_null(False),
            aggregate=pl.sum_horizontal(scores).cast(pl.Float64) / len(DIMENSIONS),
            sample_index=pl.col("sample_index").cast(pl.Int64),
        )
        .drop("status")
        .collect()
    )


# --- pick and pair ---------------------------------------------------------------------------------


def pair_ids(chosen: pl.Series, rejected: pl.Series) -> pl.Series:
    """content_id("pair", chosen, rejected) per row. Plain ids (hex, as the generate stage writes) need no
    JSON escaping, so the JSON text is built column-wise; anything else goes through content_id."""
    plain = pl.select(
        pl.lit(chosen).str.contains(_PLAIN_ID.pattern).all() & pl.lit(rejected).str.contains(_PLAIN_ID.pattern).all()
    ).item()
    if plain or chosen.len() == 0:
        blobs = pl.select(pl.concat_str([pl.lit('["pair","'), pl.lit(chosen), pl.lit('","'), pl.lit(rejected), pl.lit('"]')]))
        sha = hashlib.sha256
        out = [sha(b).hexdigest()[:16] for b in blobs.to_series().cast(pl.Binary).to_list()]
    else:
        out = [content_id("pair", a, b) for a, b in zip(chosen.to_list(), rejected.to_list())]
    return pl.Series("pair_id", out, dtype=pl.String)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a fixed, portable bijection of uint64 (numpy wraps on overflow)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _random_keys(usable: pl.DataFrame, gen: str, seed: int) -> pl.Series:
    """A random sort key per trace: the prompt's own seed, derive_seed(pick_seed, "pick", generator,
    prompt_id), mixed with the sample index, so a prompt's random order never depends on other rows."""
    prompts = usable["prompt_id"].unique()
    seeds = pl.DataFrame({
        "prompt_id": prompts,
        "_seed": pl.Series([derive_seed(seed, "pick", gen, pid) for pid in prompts.to_list()], dtype=pl.UInt64),
    })
    joined = usable.select("prompt_id", "sample_index").join(seeds, on="prompt_id", how="left", maintain_order="left")
    with np.errstate(over="ignore"):
        x = joined["_seed"].to_numpy() * np.uint64(0x9E3779B97F4A7C15) + joined["sample_index"].cast(pl.UInt64).to_numpy()
        return pl.Series("rkey", mix64(mix64(x)), dtype=pl.UInt64)


def picked(light: pl.DataFrame, gen: str, abl: Ablation, common: pl.Series, keep: int,
           verdicts: set[bool] | None = None) -> list[pl.DataFrame]:
    """Per prompt, the `keep` first usable traces in pick order: [first choice, second choice, ...],
    each with one row per prompt (prompts without enough usable traces are missing from the later ones).
    `verdicts`: only traces with these verdicts are usable (a direction filter's side)."""
    usable = light.filter(pl.col("ok") & pl.col("prompt_id").is_in(common.implode()))
    if verdicts is not None:
        usable = usable.filter(pl.col("correct").is_in(sorted(verdicts)))
    if abl.pick == "first":
        keys, desc = ["sample_index"], [False]
    elif abl.pick == "best":
        keys, desc = ["aggregate", "sample_index"], [True, False]
    else:
        usable = usable.with_columns(_random_keys(usable, gen, abl.pick_seed))
        keys, desc = ["rkey", "sample_index"], [False, False]
    # Within a prompt the keys are distinct (sample indices are), so the order inside a prompt is fixed.
    usable = usable.sort(keys, descending=desc)
    out = []
    for i in range(keep):
        # `unique(keep="first")` on rows sorted by the pick order takes each prompt's best-ranked trace.
        out.append(usable.unique("prompt_id", keep="first"))
        if i + 1 < keep:
            usable = usable.filter(~pl.col("trace_id").is_in(out[-1]["trace_id"].implode()))
    return out


def side_verdicts(directions: list[str] | None, side: int) -> set[bool] | None:
    """The verdicts (correct = True) that `directions` allow on side 0 (chosen) or 1 (rejected)."""
    return None if directions is None else {d.split("->")[side] == "correct" for d in directions}


def _side(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    return frame.select(
        "prompt_id",
        *[pl.col(c).alias(f"{prefix}_{c}") for c in ("trace_id", "sample_index", "correct", *DIMENSIONS)],
    )


@dataclass
class Pairing:
    """Every candidate pair of (chosen, rejected, pick) before directions and selection."""

    pairs: pl.DataFrame  # sorted by pair_id
    common: int  # prompts both generators answered (available)
    accuracy_chosen: float
    accuracy_rejected: float


def pair(abl: Ablation, chosen: pl.DataFrame, rejected: pl.DataFrame) -> Pairing:
    """Pick on both sides (light frames of the chosen and the rejected generator) and pair the picks."""
    same = abl.chosen == abl.rejected
    common = chosen["prompt_id"].unique()
    if not same:
        common = common.filter(common.is_in(rejected["prompt_id"].unique().implode()))

    def accuracy(light: pl.DataFrame) -> float:
        got = light.filter(pl.col("prompt_id").is_in(common.implode()))["correct"].cast(pl.Float64).mean()
        return float(got) if got is not None else float("nan")

    k = abl.pairs_per_prompt
    if same:
        picks = picked(chosen, abl.chosen, abl, common, keep=2 * k)
        sides = [(picks[2 * i], picks[2 * i + 1]) for i in range(k)]
    else:
        # A direction filter picks on each side among the traces of the verdicts it allows, so a rare
        # direction (wrong->correct on a large delta) gets every prompt that can make one.
        sides = list(zip(picked(chosen, abl.chosen, abl, common, keep=k, verdicts=side_verdicts(abl.directions, 0)),
                         picked(rejected, abl.rejected, abl, common, keep=k, verdicts=side_verdicts(abl.directions, 1))))
    pairs = pl.concat([_side(c, "chosen").join(_side(r, "rejected"), on="prompt_id", how="inner") for c, r in sides])
    verdict = lambda side: pl.when(pl.col(f"{side}_correct")).then(pl.lit("correct")).otherwise(pl.lit("wrong"))
    continuous = pairs.schema[f"chosen_{DIMENSIONS[0]}"] == pl.Float64
    if continuous:  # expected scores: rounded, so a delta of equal scores is exactly 0
        deltas = [(pl.col(f"chosen_{d}") - pl.col(f"rejected_{d}")).round(4).alias(f"delta_{d}") for d in DIMENSIONS]
        aggregate = (pl.sum_horizontal(pl.col(f"delta_{d}") for d in DIMENSIONS) / len(DIMENSIONS)).round(4)
    else:
        deltas = [(pl.col(f"chosen_{d}") - pl.col(f"rejected_{d}")).cast(pl.Int8).alias(f"delta_{d}") for d in DIMENSIONS]
        aggregate = pl.sum_horizontal(pl.col(f"delta_{d}").cast(pl.Int32) for d in DIMENSIONS).cast(pl.Float64) / len(DIMENSIONS)
    pairs = (
        pairs.with_columns(
            pair_ids(pairs["chosen_trace_id"], pairs["rejected_trace_id"]),
            pl.concat_str([verdict("chosen"), verdict("rejected")], separator="->").alias("direction"),
            *deltas,
        )
        .with_columns(delta_aggregate=aggregate)
        .select(
            "pair_id", "prompt_id",
            "chosen_trace_id", "rejected_trace_id", "chosen_sample_index", "rejected_sample_index",
            "chosen_correct", "rejected_correct", "direction", *DELTAS,
        )
        .sort("pair_id")
    )
    return Pairing(pairs, common.len(), accuracy(chosen), accuracy(rejected))


# --- select and summarise ----------------------------------------------------------------------------


def sample_size(sel: Selection, n: int) -> int:
    if sel.count is not None:
        return min(sel.count, n)
    k = int((Decimal(str(sel.fraction)) * n).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return min(max(k, 1), n)


def select(pairs: pl.DataFrame, sel: Selection) -> pl.DataFrame:
    """Apply a selection to pairs sorted by pair_id; ties are broken by pair_id (ascending)."""
    col = f"delta_{sel.by}"
    if sel.method == "all":
        return pairs
    if sel.method == "threshold":
        return pairs.filter(pl.col(col) >= sel.threshold)
    k = sample_size(sel, pairs.height)
    if sel.method == "top_k":
        return pairs.sort([col, "pair_id"], descending=[True, False]).head(k).sort("pair_id")
    if sel.method == "bottom_k":
        return pairs.sort([col, "pair_id"]).head(k).sort("pair_id")
    rows = sorted(random.Random(derive_seed(sel.seed, "random_k")).sample(range(pairs.height), k))
    return pairs[rows]


def cutoff_ties(pairs: pl.DataFrame, sel: Selection, selected: pl.DataFrame) -> dict | None:
    """top_k / bottom_k: the candidates whose delta equals the last one kept, and how many of them were
    kept (ties are broken by pair_id, i.e. arbitrarily). Integer scores tie often; expected scores rarely."""
    if sel.method not in ("top_k", "bottom_k") or selected.height == 0:
        return None
    col = f"delta_{sel.by}"
    edge = selected[col].min() if sel.method == "top_k" else selected[col].max()
    return {"delta": float(edge), "tied": int((pairs[col] == edge).sum()), "kept": int((selected[col] == edge).sum())}


def _stats(s: pl.Series) -> dict:
    s = s.cast(pl.Float64)
    q = {f: round(float(s.quantile(p, "linear")), 4) for f, p in (("q25", 0.25), ("median", 0.5), ("q75", 0.75))}
    return {"mean": round(float(s.mean()), 4), **q, "min": round(float(s.min()), 4), "max": round(float(s.max()), 4)}


@dataclass
class Plan:
    """One ablation after pairing and selection, before any completion text is read."""

    name: str
    ablation: Ablation
    pairs: pl.DataFrame  # light pair rows, sorted by pair_id
    metrics: dict
    ties: dict | None = None  # cutoff_ties, for the summary line


def plan(name: str, params: Params, chosen: pl.DataFrame, rejected: pl.DataFrame, scoring: str | None = None) -> Plan:
    """Pair, filter and select ablation `name` on the light frames of its two generators (the same frame
    twice for the zero-delta control); raise UserError when nothing is left. `scoring`: the LLM judge's
    scoring mode of the chosen generator's judgments (None: the verifier)."""
    abl = ablation(name, params)

    def empty(why: str) -> UserError:
        return UserError(f"ablations.{name}: selection leaves 0 pairs ({why})")

    got = pair(abl, chosen, rejected)
    same = abl.chosen == abl.rejected
    if got.common == 0:
        raise empty(f"{abl.chosen} and {abl.rejected} answered no common prompt")
    gen_delta = 0.0 if same else got.accuracy_chosen - got.accuracy_rejected
    pairs = got.pairs
    if pairs.height == 0:
        need = "two ok-judged traces" if same else "an ok-judged trace on both sides"
        if abl.directions is not None and not same:
            raise empty(f"directions {', '.join(abl.directions)}: none of the {got.common} prompts both generators "
                        f"answered has an ok-judged trace of the verdict they need on both sides")
        raise empty(f"none of the {got.common} prompts both generators answered has {need}")
    paired = pairs.height
    pairs_prompts = pairs["prompt_id"].n_unique()

    if abl.directions is not None:
        found = dict(pairs["direction"].value_counts().iter_rows())
        pairs = pairs.filter(pl.col("direction").is_in(abl.directions))
        if pairs.height == 0:
            have = ", ".join(f"{d} {found[d]}" for d in DIRECTIONS if d in found)
            raise empty(f"directions {', '.join(abl.directions)} match none of the {paired} pairs ({have})")
    candidates = pairs.height

    selected = select(pairs, abl.selection)
    if selected.height == 0:  # only a threshold can empty a non-empty set
        col = f"delta_{abl.selection.by}"
        raise empty(f"threshold: no pair has {col} >= {abl.selection.threshold}; "
                    f"the largest of the {candidates} candidates is {pairs[col].max()}")

    gens, scale = params.generators, lambda g: params.generators[g].scale
    directions = dict(selected["direction"].value_counts().iter_rows())
    metrics = {
        "ablation": name,
        "algorithm": abl.algorithm,
        "chosen": abl.chosen,
        "rejected": abl.rejected,
        "chosen_scale": gens[abl.chosen].scale,
        "rejected_scale": gens[abl.rejected].scale,
        "pick": abl.pick,
        "selection": abl.selection.model_dump(exclude_none=True),
        "directions_filter": list(abl.directions) if abl.directions is not None else None,
        "prompts_available": got.common,
        "prompts_dropped_unjudged": got.common - pairs_prompts,
        "pairs_per_prompt": abl.pairs_per_prompt,
        "pairs_paired": paired,
        "pairs_candidates": candidates,
        "pairs": selected.height,
        "chosen_accuracy": round(got.accuracy_chosen, 6),
        "rejected_accuracy": round(got.accuracy_rejected, 6),
        "generator_delta": round(gen_delta, 6),
        "deltas": {c: _stats(selected[c]) for c in DELTAS},
        "direction_counts": {d: directions.get(d, 0) for d in DIRECTIONS},
    }
    ties = cutoff_ties(pairs, abl.selection, selected)
    if scoring is not None:
        # LLM judges only: the verifier's pair metrics keep their shape (and the micro-world its bytes).
        metrics |= {"judge_scoring": scoring, "ties_at_cutoff": ties}
    selected = selected.with_columns(
        chosen_generator=pl.lit(abl.chosen, pl.String),
        rejected_generator=pl.lit(abl.rejected, pl.String),
        chosen_scale=pl.lit(scale(abl.chosen), pl.String),
        rejected_scale=pl.lit(scale(abl.rejected), pl.String),
        generator_delta=pl.lit(gen_delta, pl.Float64),
    )
    return Plan(name, abl, selected, metrics, ties)


# --- the output tables ---------------------------------------------------------------------------------


def _message(role: str, content: str) -> pl.Expr:
    return pl.concat_list(pl.struct(role=pl.lit(role, pl.String), content=pl.col(content)))


def prompt_messages(rows: pl.DataFrame, params: Params) -> pl.DataFrame:
    """(prompt_id, prompt): each prompt row (PROMPT_COLUMNS) as the student's chat messages
    (deltalab.prompting)."""
    override = params.student.prompt if params.student else None
    templates = prompting.for_families(params, rows["family"], override, "student")
    if all(t.bare for t in templates.values()):  # the question as one user turn, column-wise
        return rows.select("prompt_id", _message("user", "question").alias("prompt"))
    msgs = [prompting.messages(templates[r["family"]], r) for r in rows.iter_rows(named=True)]
    return rows.select("prompt_id").with_columns(prompt=pl.Series(msgs, dtype=MESSAGES))


def assemble(p: Plan, texts: Mapping[str, pl.DataFrame], prompts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The TRL preference table and its KTO view, both in pair_id order. `texts`: per generator,
    (trace_id, completion) of at least the selected traces; `prompts`: as prompt_messages returns."""
    abl = p.ablation
    joined = (
        p.pairs.join(prompts, on="prompt_id", how="left", maintain_order="left")
        .join(texts[abl.chosen].rename({"trace_id": "chosen_trace_id", "completion": "chosen_text"}),
              on="chosen_trace_id", how="left", maintain_order="left")
        .join(texts[abl.rejected].rename({"trace_id": "rejected_trace_id", "completion": "rejected_text"}),
              on="rejected_trace_id", how="left", maintain_order="left")
    )
    for col, what in (("prompt", "the prompt table"), ("chosen_text", "its traces"), ("rejected_text", "its traces")):
        missing = joined.filter(pl.col(col).is_null())
        if missing.height:
            raise UserError(f"ablations.{p.name}: {missing.height} pair(s) have no {col.replace('_text', ' completion')} "
                            f"in {what} (e.g. prompt {missing['prompt_id'][0]}); are the inputs from the same run?")
    pairs = joined.select(
        "prompt",
        _message("assistant", "chosen_text").alias("chosen"),
        _message("assistant", "rejected_text").alias("rejected"),
        *META,
    )
    side = lambda s, label, order: joined.select(
        "prompt",
        _message("assistant", f"{s}_text").alias("completion"),
        pl.lit(label).alias("label"),
        "pair_id",
        pl.col(f"{s}_trace_id").alias("trace_id"),
        (pl.int_range(pl.len(), dtype=pl.Int64) * 2 + order).alias("_order"),
    )
    kto = pl.concat([side("chosen", True, 0), side("rejected", False, 1)]).sort("_order").drop("_order")
    return pairs, kto
