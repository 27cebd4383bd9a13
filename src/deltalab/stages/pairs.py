"""pairs: build one ablation's preference pairs (chosen generator vs rejected generator).

Reads the two generators' traces and judgments, has deltalab.pairing pick, pair and select them (the
rules are there), and writes the survivors in TRL's conversational preference format with their delta
metadata, plus the unpaired KTO view and a metrics summary (schemas: docs/data.md).

The ~2 KB completions are never all in memory: planning reads only light columns (ids, sample index,
verdict, scores); then the completion text of just the selected traces is read, one generator file
at a time, with the filter pushed into the parquet scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from deltalab import pairing
from deltalab.config import Params
from deltalab.errors import UserError
from deltalab.io import atomic_path, write_json
from deltalab.pairing import JUDGMENT_COLUMNS, PROMPT_COLUMNS, TRACE_COLUMNS
from deltalab.progress import summary

ZSTD_LEVEL = 1


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


def read_light(traces: Path, judgments: Path, gen: str) -> tuple[pl.DataFrame, str | None]:
    """pairing.light of one generator's files, and its judge's scoring mode (None: the verifier)."""
    _need(traces, TRACE_COLUMNS, f"traces of generator {gen!r}", "generate")
    _need(judgments, JUDGMENT_COLUMNS, f"judgments of generator {gen!r}", "judge")
    judged = pl.scan_parquet(judgments)
    if judged.select(pl.col("trace_id").is_duplicated().any()).collect().item():
        raise UserError(f"{judgments}: a trace is judged more than once (rerun the judge stage)")
    scoring = judged.select(pl.first("scoring")).collect().item() if "scoring" in judged.collect_schema().names() else None
    return pairing.light(pl.scan_parquet(traces), judged), scoring


def read_prompts(path: Path, prompt_ids: pl.Series, params: Params) -> pl.DataFrame:
    """(prompt_id, prompt) of these prompts, as the student's chat messages."""
    _need(path, PROMPT_COLUMNS, "prompt table", "prompts")
    rows = (
        pl.scan_parquet(path)
        .select(PROMPT_COLUMNS)
        .filter(pl.col("prompt_id").is_in(prompt_ids.implode()))
        .unique("prompt_id", keep="first", maintain_order=True)
        .collect()
    )
    return pairing.prompt_messages(rows, params)


def read_texts(traces: Path, trace_ids: pl.Series) -> pl.DataFrame:
    """(trace_id, completion) of just these traces: the filter is pushed into the parquet scan, so
    pages are decoded and dropped batch by batch and only the kept text stays in memory."""
    return (
        pl.scan_parquet(traces)
        .select("trace_id", "completion")
        .filter(pl.col("trace_id").is_in(trace_ids.unique().implode()))
        .collect(engine="streaming")
        # One chunk: joins against it then share its string buffers instead of copying the text.
        .rechunk()
    )


def write_table(df: pl.DataFrame, path: Path) -> None:
    """Atomic, fixed-option parquet (zstd, no statistics) like io.write_parquet, but at zstd level 1:
    these tables are almost all text, and on 2 cores level 1 compresses it ~1.7x faster than polars'
    default level 3 for files ~12% larger (docs/performance.md)."""
    with atomic_path(path, ".parquet") as tmp:
        df.write_parquet(tmp, compression="zstd", compression_level=ZSTD_LEVEL, statistics=False)


def _ties_note(ties: dict | None) -> str:
    if not ties or ties["tied"] <= ties["kept"]:
        return ""
    return f"; {ties['kept']} of {ties['tied']} pairs tied at the cutoff delta {ties['delta']:+g} kept, by pair_id"


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
    """Plan on light columns (an error stops the stage before any file is written), then read the
    selected completions and write the pairs, the KTO view and the metrics. Polars releases the GIL,
    so the two generators are read, and the two tables compressed, on two threads."""
    abl = pairing.ablation(name, params)
    gens = list(dict.fromkeys((abl.chosen, abl.rejected)))
    paths = lambda g: (traces_dir / f"{g}.parquet", judgments_dir / f"{g}.parquet")
    with ThreadPoolExecutor(2) as pool:
        light = dict(zip(gens, pool.map(lambda g: read_light(*paths(g), g), gens)))
        plan = pairing.plan(name, params, light[abl.chosen][0], light[abl.rejected][0], light[abl.chosen][1])
        del light
        ids = {g: [] for g in gens}
        ids[abl.chosen].append(plan.pairs["chosen_trace_id"])
        ids[abl.rejected].append(plan.pairs["rejected_trace_id"])
        prompts = read_prompts(prompts_path, plan.pairs["prompt_id"].unique(), params)
        texts = dict(zip(gens, pool.map(lambda g: read_texts(paths(g)[0], pl.concat(ids[g])), gens)))
        pairs, kto = pairing.assemble(plan, texts, prompts)
        del texts
        list(pool.map(write_table, (pairs, kto), (out, kto_out)))
    write_json(plan.metrics, metrics_path)
    m = plan.metrics
    summary(f"pairs {name}: wrote {out} ({m['pairs']} of {m['pairs_candidates']} pairs, {m['chosen']} vs "
            f"{m['rejected']}, generator delta {m['generator_delta']:+.3f}, mean aggregate delta "
            f"{m['deltas']['delta_aggregate']['mean']:+.3f}; {m['prompts_dropped_unjudged']} of "
            f"{m['prompts_available']} prompts dropped for lack of ok judgments{_ties_note(plan.ties)}), {kto_out} "
            f"and {metrics_path}")
    return plan.metrics
