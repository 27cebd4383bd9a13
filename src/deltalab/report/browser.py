"""The pair browser's data: per ablation, a bounded sample of its pairs with their texts, both sides'
judged scores and rationales, for reports/index.html (deltalab.report.html).

What is embedded: the PER_VIEW pairs with the largest and the PER_VIEW with the smallest sample-level
delta (the ablation's `selection.by` where it ranks by one, else the aggregate; ties by pair_id), and
PER_VIEW drawn at random (seeded), each pair once. So a 10k-pair ablation embeds at most 3 * PER_VIEW
pairs, and the page says how many of how many. Texts are stored once per page (a trace recurs across
ablations) and cut at TEXT_CHARS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.io import derive_seed
from deltalab.pairing import DIRECTIONS, probability_scored
from deltalab.report import paired_generators
from deltalab.report.study import DELTA_COLUMNS

PER_VIEW = 200
"""Pairs per view (top, bottom, random) embedded per ablation."""
TEXT_CHARS = 4000
"""A longer prompt, trace or rationale is cut here (the page says so in the text)."""
VIEWS = ("top", "bottom", "random")
SIDES = ("chosen", "rejected")
PAIR_COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "chosen_generator", "rejected_generator",
                "chosen_correct", "rejected_correct", "direction", *DELTA_COLUMNS]
"""What the browser shows of a pair table (data/pairs/<ablation>.parquet); it also reads the trace ids."""
TRACE_IDS = [f"{s}_trace_id" for s in SIDES]


class Texts:
    """The page's text table: each distinct text once, referred to by its index."""

    def __init__(self):
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def ref(self, text: str | None) -> int | None:
        if text is None:
            return None
        if len(text) > TEXT_CHARS:
            text = text[:TEXT_CHARS] + f"\n… [cut here: {len(text) - TEXT_CHARS} more characters]"
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


def messages_text(messages: list[dict] | None) -> str:
    """A chat as one text: a lone message is its content; several are `role: content` blocks."""
    messages = messages or []
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def rank_column(params: Params, name: str) -> str:
    """The delta that orders the top and bottom views: the one the ablation's selection ranks by."""
    sel = params.ablations[name].selection
    return f"delta_{sel.by}" if sel.method in ("top_k", "bottom_k", "threshold") else "delta_aggregate"


def judgment_files(params: Params, judgments_dir: Path) -> dict[str, Path]:
    """The judgments of every generator an ablation pairs, checked before the report writes anything."""
    files = {g: judgments_dir / f"{g}.parquet" for g in paired_generators(params)}
    for g, path in files.items():
        if not path.is_file():
            raise UserError(f"{path}: judgments of generator {g!r} not found (run the judge stage first)")
    return files


def _scores(path: Path, trace_ids: pl.Series) -> pl.DataFrame:
    """trace_id, the five scores (a probability-scoring judge's expected scores) and the rationale."""
    scan = pl.scan_parquet(path)
    if probability_scored(scan):
        scores = [pl.col(f"{d}_expected").round(2).alias(d) for d in DIMENSIONS]
    else:
        scores = [pl.col(d) for d in DIMENSIONS]
    rationale = pl.col("rationale") if "rationale" in scan.collect_schema().names() else pl.lit(None, pl.String)
    return (scan.filter(pl.col("trace_id").is_in(trace_ids.implode()))
            .select("trace_id", *scores, rationale.alias("rationale")).unique("trace_id", keep="first").collect())


def sample(light: pl.DataFrame, rank: str, seed: int) -> dict[str, list[str]]:
    """Each view's pair ids: largest and smallest `rank` (ties by pair_id), and a seeded random draw."""
    light = light.sort("pair_id")
    n = min(PER_VIEW, light.height)
    rng = np.random.default_rng(seed)
    return {
        "top": light.sort([rank, "pair_id"], descending=[True, False]).head(n)["pair_id"].to_list(),
        "bottom": light.sort([rank, "pair_id"]).head(n)["pair_id"].to_list(),
        "random": light[np.sort(rng.choice(light.height, n, replace=False)).tolist()]["pair_id"].to_list(),
    }


COLUMNS = [*PAIR_COLUMNS, *(f"{s}_{d}" for s in SIDES for d in (*DIMENSIONS, "rationale")), "views"]
"""An embedded pair's fields, in the order of its row (the page carries them as `columns`)."""
TEXT_FIELDS = ("prompt", "chosen", "rejected", "chosen_rationale", "rejected_rationale")


def _value(column: str, v, texts: Texts):
    if column in ("prompt", "chosen", "rejected"):
        return texts.ref(messages_text(v))
    if column in TEXT_FIELDS:
        return texts.ref(v)
    return round(v, 4) if isinstance(v, float) else v


def ablation(params: Params, name: str, pairs: Path, judgments: dict[str, Path], texts: Texts) -> dict:
    """One ablation's browser: its header and its embedded pairs as rows of COLUMNS."""
    if not pairs.is_file():
        raise UserError(f"{pairs}: pairs not built (run `deltalab pairs {name}` first)")
    missing = [c for c in (*PAIR_COLUMNS, *TRACE_IDS) if c not in pl.read_parquet_schema(pairs)]
    if missing:
        raise UserError(f"{pairs}: pairs lack column(s) {', '.join(missing)}")
    rank = rank_column(params, name)
    light = pl.read_parquet(pairs, columns=["pair_id", "direction", *DELTA_COLUMNS])
    views = {v: set(ids) for v, ids in sample(light, rank, derive_seed(params.evaluate.seed, "pair_browser", name)).items()}
    rows = (pl.scan_parquet(pairs).select(*PAIR_COLUMNS, *TRACE_IDS)
            .filter(pl.col("pair_id").is_in(sorted(set().union(*views.values())))).collect().sort("pair_id"))
    a = params.ablations[name]
    for side, gen in zip(SIDES, (a.chosen, a.rejected)):
        got = _scores(judgments[gen], rows[f"{side}_trace_id"])
        rows = rows.join(got.select(pl.col("trace_id").alias(f"{side}_trace_id"),
                                    *(pl.col(c).alias(f"{side}_{c}") for c in (*DIMENSIONS, "rationale"))),
                         on=f"{side}_trace_id", how="left", maintain_order="left")
    rows = rows.with_columns(views=pl.col("pair_id").map_elements(
        lambda pid: [v for v in VIEWS if pid in views[v]], return_dtype=pl.List(pl.String)))
    counts = dict(light["direction"].value_counts().iter_rows())
    return {
        "name": name, "chosen": a.chosen, "rejected": a.rejected, "algorithm": a.algorithm,
        "total": light.height, "embedded": rows.height, "per_view": min(PER_VIEW, light.height), "rank": rank,
        "directions": {d: counts[d] for d in (*DIRECTIONS, *sorted(set(counts) - set(DIRECTIONS))) if d in counts},
        "rows": [[_value(c, r[c], texts) for c in COLUMNS] for r in rows.iter_rows(named=True)],
    }


def load(params: Params, pairs_dir: Path, judgments_dir: Path) -> dict:
    """The page's pair data: the text table and one browser per ablation, in params order."""
    judgments = judgment_files(params, judgments_dir)
    texts = Texts()
    browsers = [ablation(params, n, pairs_dir / f"{n}.parquet", judgments, texts) for n in params.ablations]
    return {"columns": COLUMNS, "texts": texts.items, "ablations": browsers, "dimensions": list(DIMENSIONS),
            "deltas": DELTA_COLUMNS, "views": list(VIEWS)}
