"""pairs: build one ablation's preference pairs (chosen generator vs rejected generator).

For every prompt both generators answered, one trace per side is picked (`pick`: first, random or
best-judged; only traces with an ok judgment count), the pair's per-dimension judged delta is
computed, an optional correctness-direction filter and a `selection` are applied, and the survivors
are written in TRL's conversational preference format with their delta metadata, plus the unpaired
KTO view and a metrics summary.

Work is split so that the ~2 KB completions are never all in memory: pairs are planned and selected
on light columns (ids, sample index, verdict, scores); only then is the completion text of the
selected traces read, one generator file at a time, with a predicate pushed into the parquet scan.
`build` plans several ablations at once and reads each generator's text once for all of them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import polars as pl

from deltalab.config import DIMENSIONS, Ablation, Params, Selection
from deltalab.errors import UserError
from deltalab.io import content_id, derive_seed, write_json, write_parquet
from deltalab.progress import summary

DIRECTIONS = ("correct->wrong", "wrong->correct", "wrong->wrong", "correct->correct")
DELTAS = [f"delta_{d}" for d in DIMENSIONS] + ["delta_aggregate"]
TRACE_COLUMNS = ("trace_id", "prompt_id", "sample_index", "correct", "completion")
JUDGMENT_COLUMNS = ("trace_id", "status", *DIMENSIONS)
_PLAIN_ID = re.compile(r"^[0-9A-Za-z_.:-]*$")


# --- inputs -----------------------------------------------------------------------------------------


class Inputs:
    """The stage's input files, each read once and shared by every ablation planned from it."""

    def __init__(self, prompts_path: Path, traces_dir: Path, judgments_dir: Path):
        self.prompts_path = Path(prompts_path)
        self.traces_dir = Path(traces_dir)
        self.judgments_dir = Path(judgments_dir)
        self._light: dict[str, pl.DataFrame] = {}

    def trace_path(self, gen: str) -> Path:
        return self.traces_dir / f"{gen}.parquet"

    def light(self, gen: str) -> pl.DataFrame:
        """Every sampled trace of `gen` without its text: ids, verdict, judged scores, `ok`, `aggregate`."""
        if gen not in self._light:
            traces = self.trace_path(gen)
            judgments = self.judgments_dir / f"{gen}.parquet"
            _need(traces, TRACE_COLUMNS, f"traces of generator {gen!r}", "generate")
            _need(judgments, JUDGMENT_COLUMNS, f"judgments of generator {gen!r}", "judge")
            judged = pl.scan_parquet(judgments).select(JUDGMENT_COLUMNS)
            if judged.select(pl.col("trace_id").is_duplicated().any()).collect().item():
                raise UserError(f"{judgments}: a trace is judged more than once (rerun the judge stage)")
            scores = [pl.col(d).cast(pl.Int8) for d in DIMENSIONS]
            self._light[gen] = (
                pl.scan_parquet(traces)
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
        return self._light[gen]

    def questions(self, prompt_ids: pl.Series) -> pl.DataFrame:
        _need(self.prompts_path, ("prompt_id", "question"), "prompt table", "prompts")
        return (
            pl.scan_parquet(self.prompts_path)
            .select("prompt_id", "question")
            .filter(pl.col("prompt_id").is_in(prompt_ids.implode()))
            .unique("prompt_id", keep="first", maintain_order=True)
            .collect()
        )

    def texts(self, gen: str, trace_ids: pl.Series) -> pl.DataFrame:
        """(trace_id, completion) of just these traces: the filter is pushed into the parquet scan, so
        pages are decoded and dropped batch by batch and only the kept text stays in memory."""
        return (
            pl.scan_parquet(self.trace_path(gen))
            .select("trace_id", "completion")
            .filter(pl.col("trace_id").is_in(trace_ids.unique().implode()))
            .unique("trace_id", keep="first")
            .collect(engine="streaming")
        )


def _need(path: Path, columns: Sequence[str], what: str, stage: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found (run the {stage} stage first)")
    missing = [c for c in columns if c not in pl.read_parquet_schema(path)]
    if missing:
        raise UserError(f"{path}: {what} lack column(s) {', '.join(missing)}")


# --- planning on light columns ------------------------------------------------------------------------


@dataclass
class Plan:
    """One ablation after pairing and selection, before any completion text is read."""

    name: str
    ablation: Ablation
    pairs: pl.DataFrame  # light pair rows, sorted by pair_id
    metrics: dict


def pair_ids(chosen: pl.Series, rejected: pl.Series) -> pl.Series:
    """content_id("pair", chosen, rejected) per row; plain ids skip json.dumps (same bytes, faster)."""
    c, r = chosen.to_list(), rejected.to_list()
    if all(_PLAIN_ID.match(x) for x in c) and all(_PLAIN_ID.match(x) for x in r):
        sha = hashlib.sha256
        out = [sha(f'["pair","{a}","{b}"]'.encode()).hexdigest()[:16] for a, b in zip(c, r)]
    else:
        out = [content_id("pair", a, b) for a, b in zip(c, r)]
    return pl.Series("pair_id", out, dtype=pl.String)


def _random_keys(usable: pl.DataFrame, gen: str, seed: int) -> pl.DataFrame:
    """A seeded random order of the sample indices per prompt: (prompt_id, sample_index, rkey)."""
    n = int(usable["sample_index"].max()) + 1
    prompts = usable["prompt_id"].unique().sort().to_list()
    perms: list[int] = []
    for pid in prompts:
        perms.extend(random.Random(derive_seed(seed, "pick", gen, pid)).sample(range(n), n))
    return pl.DataFrame(
        {
            "prompt_id": pl.Series(prompts, dtype=pl.String).gather(pl.int_range(0, len(prompts) * n, eager=True) // n),
            "sample_index": pl.Series(perms, dtype=pl.Int64),
            "rkey": pl.int_range(0, n, eager=True).cast(pl.Int64).to_list() * len(prompts),
        }
    )


def ranked(light: pl.DataFrame, gen: str, abl: Ablation, common: pl.Series, keep: int) -> pl.DataFrame:
    """The `keep` best-ranked usable traces per prompt under the pick rule, with their `rank` (0-based)."""
    usable = light.filter(pl.col("ok") & pl.col("prompt_id").is_in(common.implode()))
    if abl.pick == "first":
        keys, desc = ["sample_index"], [False]
    elif abl.pick == "best":
        keys, desc = ["aggregate", "sample_index"], [True, False]
    else:
        usable = usable.join(_random_keys(usable, gen, abl.pick_seed), on=["prompt_id", "sample_index"], how="left")
        keys, desc = ["rkey"], [False]
    return (
        usable.sort(["prompt_id", *keys], descending=[False, *desc])
        .with_columns(rank=pl.int_range(pl.len()).over("prompt_id"))
        .filter(pl.col("rank") < keep)
    )


def _side(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
    return frame.select(
        "prompt_id",
        *[pl.col(c).alias(f"{prefix}_{c}") for c in ("trace_id", "sample_index", "correct", *DIMENSIONS)],
    )


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


def _stats(s: pl.Series) -> dict:
    s = s.cast(pl.Float64)
    q = {f: round(float(s.quantile(p, "linear")), 4) for f, p in (("q25", 0.25), ("median", 0.5), ("q75", 0.75))}
    return {"mean": round(float(s.mean()), 4), **q, "min": round(float(s.min()), 4), "max": round(float(s.max()), 4)}


def plan(name: str, params: Params, inputs: Inputs) -> Plan:
    """Pair, filter and select ablation `name` on light columns; raise UserError when nothing is left."""
    if name not in params.ablations:
        raise UserError(f"ablations.{name}: not defined (defined: {', '.join(params.ablations) or 'none'})")
    abl = params.ablations[name]
    key = f"ablations.{name}"

    def empty(why: str) -> UserError:
        return UserError(f"{key}: selection leaves 0 pairs ({why})")

    same = abl.chosen == abl.rejected
    lc, lr = inputs.light(abl.chosen), inputs.light(abl.rejected)
    common = lc["prompt_id"].unique()
    if not same:
        common = common.filter(common.is_in(lr["prompt_id"].unique().implode()))
    common = common.sort()
    if common.len() == 0:
        raise empty(f"{abl.chosen} and {abl.rejected} answered no common prompt")

    def accuracy(light: pl.DataFrame) -> float:
        return float(light.filter(pl.col("prompt_id").is_in(common.implode()))["correct"].cast(pl.Float64).mean())

    acc_c, acc_r = accuracy(lc), accuracy(lr)
    gen_delta = 0.0 if same else acc_c - acc_r

    if same:
        top2 = ranked(lc, abl.chosen, abl, common, keep=2)
        c = _side(top2.filter(pl.col("rank") == 0), "chosen")
        r = _side(top2.filter(pl.col("rank") == 1), "rejected")
    else:
        c = _side(ranked(lc, abl.chosen, abl, common, keep=1), "chosen")
        r = _side(ranked(lr, abl.rejected, abl, common, keep=1), "rejected")
    pairs = c.join(r, on="prompt_id", how="inner")
    if pairs.height == 0:
        need = "two ok-judged traces" if same else "an ok-judged trace on both sides"
        raise empty(f"none of the {common.len()} prompts both generators answered has {need}")

    verdict = lambda side: pl.when(pl.col(f"{side}_correct")).then(pl.lit("correct")).otherwise(pl.lit("wrong"))
    deltas = [(pl.col(f"chosen_{d}") - pl.col(f"rejected_{d}")).cast(pl.Int8).alias(f"delta_{d}") for d in DIMENSIONS]
    pairs = pairs.with_columns(
        pair_ids(pairs["chosen_trace_id"], pairs["rejected_trace_id"]),
        pl.concat_str([verdict("chosen"), verdict("rejected")], separator="->").alias("direction"),
        *deltas,
    ).with_columns(
        delta_aggregate=pl.sum_horizontal(pl.col(f"delta_{d}").cast(pl.Int32) for d in DIMENSIONS).cast(pl.Float64)
        / len(DIMENSIONS)
    )
    pairs = pairs.select(
        "pair_id", "prompt_id",
        "chosen_trace_id", "rejected_trace_id", "chosen_sample_index", "rejected_sample_index",
        "chosen_correct", "rejected_correct", "direction", *DELTAS,
    ).sort("pair_id")
    paired = pairs.height

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
        "prompts_common": common.len(),
        "prompts_dropped_unjudged": common.len() - paired,
        "pairs_before_filter": paired,
        "pairs_candidates": candidates,
        "pairs": selected.height,
        "chosen_accuracy": round(acc_c, 6),
        "rejected_accuracy": round(acc_r, 6),
        "generator_delta": round(gen_delta, 6),
        "deltas": {c: _stats(selected[c]) for c in DELTAS},
        "direction_counts": {d: directions.get(d, 0) for d in DIRECTIONS},
    }
    selected = selected.with_columns(
        chosen_generator=pl.lit(abl.chosen, pl.String),
        rejected_generator=pl.lit(abl.rejected, pl.String),
        chosen_scale=pl.lit(scale(abl.chosen), pl.String),
        rejected_scale=pl.lit(scale(abl.rejected), pl.String),
        generator_delta=pl.lit(gen_delta, pl.Float64),
    )
    return Plan(name, abl, selected, metrics)


# --- text and output --------------------------------------------------------------------------------

META = [
    "pair_id", "prompt_id", "chosen_generator", "rejected_generator", "chosen_scale", "rejected_scale",
    "generator_delta", "chosen_trace_id", "rejected_trace_id", "chosen_sample_index", "rejected_sample_index",
    "chosen_correct", "rejected_correct", "direction", *DELTAS,
]


def _message(role: str, content: str) -> pl.Expr:
    return pl.concat_list(pl.struct(role=pl.lit(role, pl.String), content=pl.col(content)))


def assemble(p: Plan, texts: Mapping[str, pl.DataFrame], questions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The TRL preference table and its KTO view, both in pair_id order."""
    abl = p.ablation
    joined = (
        p.pairs.join(questions, on="prompt_id", how="left", maintain_order="left")
        .join(texts[abl.chosen].rename({"trace_id": "chosen_trace_id", "completion": "chosen_text"}),
              on="chosen_trace_id", how="left", maintain_order="left")
        .join(texts[abl.rejected].rename({"trace_id": "rejected_trace_id", "completion": "rejected_text"}),
              on="rejected_trace_id", how="left", maintain_order="left")
    )
    for col, what in (("question", "the prompt table"), ("chosen_text", "its traces"), ("rejected_text", "its traces")):
        missing = joined.filter(pl.col(col).is_null())
        if missing.height:
            raise UserError(f"ablations.{p.name}: {missing.height} pair(s) have no {col.replace('_text', ' completion')} "
                            f"in {what} (e.g. prompt {missing['prompt_id'][0]}); are the inputs from the same run?")
    pairs = joined.select(
        _message("user", "question").alias("prompt"),
        _message("assistant", "chosen_text").alias("chosen"),
        _message("assistant", "rejected_text").alias("rejected"),
        *META,
    )
    side = lambda s, label, order: joined.select(
        _message("user", "question").alias("prompt"),
        _message("assistant", f"{s}_text").alias("completion"),
        pl.lit(label).alias("label"),
        "pair_id",
        pl.col(f"{s}_trace_id").alias("trace_id"),
        (pl.int_range(pl.len(), dtype=pl.Int64) * 2 + order).alias("_order"),
    )
    kto = pl.concat([side("chosen", True, 0), side("rejected", False, 1)]).sort("_order").drop("_order")
    return pairs, kto


def _plan_order(plans: list[Plan]) -> list[Plan]:
    """Order ablations so a generator's text leaves memory early: those sharing generators run together."""
    uses: dict[str, int] = {}
    for p in plans:
        for g in {p.ablation.chosen, p.ablation.rejected}:
            uses[g] = uses.get(g, 0) + 1
    key = lambda p: sorted((-uses[g], g) for g in {p.ablation.chosen, p.ablation.rejected})
    return sorted(plans, key=key)


def build(
    names: Sequence[str],
    params: Params,
    prompts_path: Path,
    traces_dir: Path,
    judgments_dir: Path,
    outputs: Mapping[str, tuple[Path, Path, Path]],
) -> dict[str, dict]:
    """Build several ablations, reading each input file once: plan all of them on light columns (any
    error stops the build before a file is written), read each generator's needed completions once,
    then write every ablation's pairs, KTO view and metrics."""
    inputs = Inputs(prompts_path, traces_dir, judgments_dir)
    plans = _plan_order([plan(n, params, inputs) for n in names])
    inputs._light.clear()
    need: dict[str, list[pl.Series]] = {}
    for p in plans:
        need.setdefault(p.ablation.chosen, []).append(p.pairs["chosen_trace_id"])
        need.setdefault(p.ablation.rejected, []).append(p.pairs["rejected_trace_id"])
    questions = inputs.questions(pl.concat([p.pairs["prompt_id"] for p in plans]).unique())
    texts: dict[str, pl.DataFrame] = {}
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for i, p in enumerate(plans):
            for g in (p.ablation.chosen, p.ablation.rejected):
                if g not in texts:
                    texts[g] = inputs.texts(g, pl.concat(need.pop(g)))
            pairs, kto = assemble(p, texts, questions)
            out, kto_out, metrics_path = outputs[p.name]
            # Two files compress on two threads (polars releases the GIL while writing).
            list(pool.map(lambda job: write_parquet(*job), [(pairs, out), (kto, kto_out)]))
            del pairs, kto
            write_json(p.metrics, metrics_path)
            later = {g for q in plans[i + 1:] for g in (q.ablation.chosen, q.ablation.rejected)}
            for g in [g for g in texts if g not in later]:
                del texts[g]
            results[p.name] = p.metrics
            m = p.metrics
            summary(f"pairs {p.name}: wrote {out} ({m['pairs']} pairs of {m['pairs_candidates']} candidates, "
                    f"{m['chosen']} vs {m['rejected']}, generator delta {m['generator_delta']:+.3f}, "
                    f"mean aggregate delta {m['deltas']['delta_aggregate']['mean']:+.3f}, "
                    f"{m['prompts_dropped_unjudged']} prompts dropped for lack of ok judgments), {kto_out} and {metrics_path}")
    return results


def run(
    name: str,
    params: Params,
    prompts_path: Path,
    traces_dir: Path,
    judgments_dir: Path,
    out: Path,
    kto_out: Path,
    metrics_path: Path,
) -> dict:
    return build([name], params, prompts_path, traces_dir, judgments_dir, {name: (out, kto_out, metrics_path)})[name]
