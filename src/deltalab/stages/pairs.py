"""pairs: build one ablation's preference pairs (chosen generator vs rejected generator).

For every prompt both generators answered, one trace per side is picked (or the first k picks of each
side, paired in order, with `pairs_per_prompt: k`), the pair's per-dimension
judged delta is computed, an optional correctness-direction filter and a `selection` are applied, and
the survivors are written in TRL's conversational preference format with their delta metadata, plus
the unpaired KTO view and a metrics summary (schemas: docs/data.md).

Picking: only traces with an ok judgment (status ok, five scores) can be picked. `first` takes the
lowest ok-judged sample index, `best` the highest aggregate (mean of the five scores; ties: lowest
sample index), `random` orders a prompt's samples by a key derived from
derive_seed(pick_seed, "pick", generator, prompt_id), so a prompt's pick depends on nothing else. The
zero-delta control (same generator on both sides) takes the first two traces in that order. Prompts
without a pickable trace on a side (two, for the control) are dropped and counted in the metrics.

Work is split so that the ~2 KB completions are never all in memory: pairs are planned and selected
on light columns (ids, sample index, verdict, scores); only then is the completion text of the
selected traces read, one generator file at a time, with the filter pushed into the parquet scan.
`build` plans several ablations at once and reads each generator's text once for all of them
(bench/pairs.py, docs/performance.md); `run` is `build` for one ablation and writes the same bytes.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import polars as pl

from deltalab import prompting
from deltalab.config import DIMENSIONS, Ablation, Params, Selection
from deltalab.errors import UserError
from deltalab.io import atomic_path, content_id, derive_seed, write_json
from deltalab.progress import summary

DIRECTIONS = ("correct->wrong", "wrong->correct", "wrong->wrong", "correct->correct")
DELTAS = [f"delta_{d}" for d in DIMENSIONS] + ["delta_aggregate"]
TRACE_COLUMNS = ("trace_id", "prompt_id", "sample_index", "correct", "completion")
JUDGMENT_COLUMNS = ("trace_id", "status", *DIMENSIONS)
_PLAIN_ID = re.compile(r"^[0-9A-Za-z_.:-]*$")
ZSTD_LEVEL = 1
# Ablations assembled but not yet written (their pairs); bounds the parquet writers' buffers (~4 KB a pair).
PAIRS_IN_FLIGHT = 100_000


# --- inputs -----------------------------------------------------------------------------------------


class Inputs:
    """The stage's input files, each read once and shared by every ablation planned from it."""

    def __init__(self, prompts_path: Path, traces_dir: Path, judgments_dir: Path):
        self.prompts_path = Path(prompts_path)
        self.traces_dir = Path(traces_dir)
        self.judgments_dir = Path(judgments_dir)
        self._light: dict[str, pl.DataFrame] = {}
        self.scoring: dict[str, str | None] = {}  # per generator: the LLM judge's scoring mode (None: the verifier)
        self.pairings: dict[tuple, Pairing] = {}  # shared by ablations with the same generators and pick

    def release(self) -> None:
        """Drop the light frames once every ablation is planned."""
        self._light.clear()
        self.pairings.clear()

    def trace_path(self, gen: str) -> Path:
        return self.traces_dir / f"{gen}.parquet"

    def light(self, gen: str) -> pl.DataFrame:
        """Every sampled trace of `gen` without its text: ids, verdict, judged scores, `ok`, `aggregate`."""
        if gen not in self._light:
            traces = self.trace_path(gen)
            judgments = self.judgments_dir / f"{gen}.parquet"
            _need(traces, TRACE_COLUMNS, f"traces of generator {gen!r}", "generate")
            _need(judgments, JUDGMENT_COLUMNS, f"judgments of generator {gen!r}", "judge")
            judged = pl.scan_parquet(judgments)
            names = judged.collect_schema().names()
            if judged.select(pl.col("trace_id").is_duplicated().any()).collect().item():
                raise UserError(f"{judgments}: a trace is judged more than once (rerun the judge stage)")
            # Probability scoring: the expected score (a float) is the score; integer judges keep Int8.
            continuous = all(f"{d}_expected" in names for d in DIMENSIONS) and judged.select(
                pl.col(f"{DIMENSIONS[0]}_expected").is_not_null().any()).collect().item()
            if continuous:
                judged = judged.with_columns(pl.col(f"{d}_expected").alias(d) for d in DIMENSIONS)
            self.scoring[gen] = judged.select(pl.first("scoring")).collect().item() if "scoring" in names else None
            judged = judged.select(JUDGMENT_COLUMNS)
            scores = [pl.col(d).cast(pl.Float64 if continuous else pl.Int8) for d in DIMENSIONS]
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

    def prompts(self, prompt_ids: pl.Series, params: Params) -> pl.DataFrame:
        """(prompt_id, prompt): each prompt as the student's chat messages (deltalab.prompting)."""
        _need(self.prompts_path, ("prompt_id", "question", "family", "metadata"), "prompt table", "prompts")
        rows = (
            pl.scan_parquet(self.prompts_path)
            .select("prompt_id", "question", "family", "metadata")
            .filter(pl.col("prompt_id").is_in(prompt_ids.implode()))
            .unique("prompt_id", keep="first", maintain_order=True)
            .collect()
        )
        override = params.student.prompt if params.student else None
        templates = prompting.for_families(params, rows["family"], override, "student")
        if all(t.bare for t in templates.values()):  # the question as one user turn, column-wise
            return rows.select("prompt_id", _message("user", "question").alias("prompt"))
        msgs = [prompting.messages(templates[r["family"]], r) for r in rows.iter_rows(named=True)]
        return rows.select("prompt_id").with_columns(prompt=pl.Series(msgs, dtype=MESSAGES))

    def texts(self, gen: str, trace_ids: pl.Series) -> pl.DataFrame:
        """(trace_id, completion) of just these traces: the filter is pushed into the parquet scan, so
        pages are decoded and dropped batch by batch and only the kept text stays in memory."""
        return (
            pl.scan_parquet(self.trace_path(gen))
            .select("trace_id", "completion")
            .filter(pl.col("trace_id").is_in(trace_ids.unique().implode()))
            .collect(engine="streaming")
            # One chunk: joins against it then share its string buffers instead of copying the text.
            .rechunk()
        )


def _need(path: Path, columns: Sequence[str], what: str, stage: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found (run the {stage} stage first)")
    try:
        schema = pl.read_parquet_schema(path)
    except pl.exceptions.PolarsError as err:
        raise UserError(f"{path}: {what} unreadable ({str(err).strip().splitlines()[0]})") from None
    missing = [c for c in columns if c not in schema]
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
    ties: dict | None = None  # cutoff_ties, for the summary line


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


def _mix64(x: np.ndarray) -> np.ndarray:
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
        return pl.Series("rkey", _mix64(_mix64(x)), dtype=pl.UInt64)


def picked(light: pl.DataFrame, gen: str, abl: Ablation, common: pl.Series, keep: int) -> list[pl.DataFrame]:
    """Per prompt, the `keep` first usable traces in pick order: [first choice, second choice, ...],
    each with one row per prompt (prompts without enough usable traces are missing from the later ones)."""
    usable = light.filter(pl.col("ok") & pl.col("prompt_id").is_in(common.implode()))
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


def pairing_key(abl: Ablation) -> tuple:
    return abl.chosen, abl.rejected, abl.pick, abl.pick_seed if abl.pick == "random" else 0, abl.pairs_per_prompt


def pairing(abl: Ablation, inputs: Inputs) -> Pairing:
    same = abl.chosen == abl.rejected
    lc, lr = inputs.light(abl.chosen), inputs.light(abl.rejected)
    common = lc["prompt_id"].unique()
    if not same:
        common = common.filter(common.is_in(lr["prompt_id"].unique().implode()))

    def accuracy(light: pl.DataFrame) -> float:
        got = light.filter(pl.col("prompt_id").is_in(common.implode()))["correct"].cast(pl.Float64).mean()
        return float(got) if got is not None else float("nan")

    k = abl.pairs_per_prompt
    if same:
        picks = picked(lc, abl.chosen, abl, common, keep=2 * k)
        sides = [(picks[2 * i], picks[2 * i + 1]) for i in range(k)]
    else:
        sides = list(zip(picked(lc, abl.chosen, abl, common, keep=k), picked(lr, abl.rejected, abl, common, keep=k)))
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
    return Pairing(pairs, common.len(), accuracy(lc), accuracy(lr))


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


def plan(name: str, params: Params, inputs: Inputs) -> Plan:
    """Pair, filter and select ablation `name` on light columns; raise UserError when nothing is left."""
    if name not in params.ablations:
        raise UserError(f"ablations.{name}: not defined (defined: {', '.join(params.ablations) or 'none'})")
    abl = params.ablations[name]

    def empty(why: str) -> UserError:
        return UserError(f"ablations.{name}: selection leaves 0 pairs ({why})")

    key = pairing_key(abl)
    if key not in inputs.pairings:
        inputs.pairings[key] = pairing(abl, inputs)
    got = inputs.pairings[key]
    same = abl.chosen == abl.rejected
    if got.common == 0:
        raise empty(f"{abl.chosen} and {abl.rejected} answered no common prompt")
    gen_delta = 0.0 if same else got.accuracy_chosen - got.accuracy_rejected
    pairs = got.pairs
    if pairs.height == 0:
        need = "two ok-judged traces" if same else "an ok-judged trace on both sides"
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
    if (scoring := inputs.scoring.get(abl.chosen)) is not None:
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


# --- text and output --------------------------------------------------------------------------------

META = [
    "pair_id", "prompt_id", "chosen_generator", "rejected_generator", "chosen_scale", "rejected_scale",
    "generator_delta", "chosen_trace_id", "rejected_trace_id", "chosen_sample_index", "rejected_sample_index",
    "chosen_correct", "rejected_correct", "direction", *DELTAS,
]


MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def _message(role: str, content: str) -> pl.Expr:
    return pl.concat_list(pl.struct(role=pl.lit(role, pl.String), content=pl.col(content)))


def assemble(p: Plan, texts: Mapping[str, pl.DataFrame], prompts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The TRL preference table and its KTO view, both in pair_id order."""
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


def _plan_order(plans: list[Plan]) -> list[Plan]:
    """An order that keeps few generators' texts in memory at once: greedily take the ablation needing
    the fewest newly read generators, then the one that lets a generator's text go, then the one whose
    new generator is needed least often afterwards (ties: the given order). Outputs do not depend on it."""
    gens = lambda p: {p.ablation.chosen, p.ablation.rejected}
    remaining, loaded, order = list(plans), set(), []
    while remaining:
        uses = Counter(g for p in remaining for g in gens(p))

        def cost(item: tuple[int, Plan]) -> tuple:
            i, p = item
            new = gens(p) - loaded
            return len(new), -sum(uses[g] == 1 for g in gens(p)), sum(uses[g] for g in new), i

        i, p = min(enumerate(remaining), key=cost)
        order.append(remaining.pop(i))
        loaded = (loaded | gens(p)) - {g for g in gens(p) if uses[g] == 1}
    return order


def _ties_note(ties: dict | None) -> str:
    if not ties or ties["tied"] <= ties["kept"]:
        return ""
    return f"; {ties['kept']} of {ties['tied']} pairs tied at the cutoff delta {ties['delta']:+g} kept, by pair_id"


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Atomic, fixed-option parquet (zstd, no statistics) like io.write_parquet, but at zstd level 1:
    these tables are almost all text, and on 2 cores level 1 compresses it ~1.7x faster than polars'
    default level 3 (the ten-ablation benchmark: 8.3 s instead of 10.4 s) for files ~12% larger."""
    with atomic_path(path, ".parquet") as tmp:
        df.write_parquet(tmp, compression="zstd", compression_level=ZSTD_LEVEL, statistics=False)


def build(
    names: Sequence[str],
    params: Params,
    prompts_path: Path,
    traces_dir: Path,
    judgments_dir: Path,
    outputs: Mapping[str, tuple[Path, Path, Path]],
) -> dict[str, dict]:
    """Build several ablations, reading each input file once.

    All ablations are planned on light columns first (an error stops the build before any file is
    written). Then each generator's needed completions are read once, on background threads while
    earlier ablations are written; an ablation's tables share that text (no copy), and its pairs file
    and KTO view compress on two threads. Each ablation's metrics are written once its tables are.
    """
    for name in names:
        if name not in params.ablations:
            raise UserError(f"ablations.{name}: not defined (defined: {', '.join(params.ablations) or 'none'})")
    inputs = Inputs(prompts_path, traces_dir, judgments_dir)
    known = [params.ablations[n] for n in names]
    with ThreadPoolExecutor(2) as pool:  # polars releases the GIL: two pairings build at once
        gens = list(dict.fromkeys(g for a in known for g in (a.chosen, a.rejected)))
        list(pool.map(inputs.light, gens))
        todo = {pairing_key(a): a for a in known}
        inputs.pairings.update(zip(todo, pool.map(lambda a: pairing(a, inputs), todo.values())))
    plans = _plan_order([plan(n, params, inputs) for n in names])
    inputs.release()
    gens_of = lambda p: (p.ablation.chosen, p.ablation.rejected)
    need: dict[str, list[pl.Series]] = {}
    for p in plans:
        need.setdefault(p.ablation.chosen, []).append(p.pairs["chosen_trace_id"])
        need.setdefault(p.ablation.rejected, []).append(p.pairs["rejected_trace_id"])
    prompts = inputs.prompts(pl.concat([p.pairs["prompt_id"] for p in plans]).unique(), params)
    loading: dict[str, Future] = {}
    in_flight: deque[tuple[Plan, list[Future]]] = deque()  # ablations being written

    def finish(p: Plan, writes: list[Future]) -> None:
        for f in writes:
            f.result()
        out, kto_out, metrics_path = outputs[p.name]
        write_json(p.metrics, metrics_path)
        m = p.metrics
        summary(f"pairs {p.name}: wrote {out} ({m['pairs']} of {m['pairs_candidates']} pairs, {m['chosen']} vs "
                f"{m['rejected']}, generator delta {m['generator_delta']:+.3f}, mean aggregate delta "
                f"{m['deltas']['delta_aggregate']['mean']:+.3f}; {m['prompts_dropped_unjudged']} of "
                f"{m['prompts_available']} prompts dropped for lack of ok judgments{_ties_note(p.ties)}), {kto_out} "
                f"and {metrics_path}")

    with ThreadPoolExecutor(2) as reader, ThreadPoolExecutor(2) as writer:

        def load(g: str) -> None:
            if g not in loading:
                loading[g] = reader.submit(inputs.texts, g, pl.concat(need.pop(g)))

        for i, p in enumerate(plans):
            for g in gens_of(p):
                load(g)
            if i + 1 < len(plans):
                for g in gens_of(plans[i + 1]):  # prefetch: read while earlier ablations are written
                    load(g)
            texts = {g: loading[g].result() for g in gens_of(p)}
            # Bound the tables waiting for (or in) the writers, whose buffers hold their text.
            while in_flight and sum(q.pairs.height for q, _ in in_flight) + p.pairs.height > PAIRS_IN_FLIGHT:
                finish(*in_flight.popleft())
            pairs, kto = assemble(p, texts, prompts)
            out, kto_out, _ = outputs[p.name]
            in_flight.append((p, [writer.submit(write_table, pairs, out), writer.submit(write_table, kto, kto_out)]))
            del pairs, kto, texts
            later = {g for q in plans[i + 1:] for g in gens_of(q)}
            for g in [g for g in loading if g not in later]:
                del loading[g]  # freed once the tables sharing it are written
        while in_flight:
            finish(*in_flight.popleft())
    return {name: next(p.metrics for p in plans if p.name == name) for name in names}


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
