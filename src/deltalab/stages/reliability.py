"""reliability: a second judge re-scores every trace; how far it agrees with the study's judge, and how
stable each ranked (top_k / bottom_k) selection is when its candidate pairs are re-scored by it.

The first judge is always the study's `judge:` (its judgments made the pairs the students trained on);
the second is `reliability.second_judge` (config.SecondJudge): the noisy micro-world judge, the
verifier (scores only step-checkable traces), or an LLM judge (openai / transformers), which goes
through the judge's response cache (runtime.judge.cache_dir), so a rerun sends no request.

Selection stability holds the candidates fixed: each ranked ablation's candidate pairs are planned
from the first judge's judgments exactly as the pairs stage plans them (checked against its pairs
file), then re-scored with the second judge's scores of the same two traces. Pairs the second judge
did not score on both sides are left out of both selections (counted). The metrics hold no request
counts, so a rerun from the cache writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from deltalab import pairing
from deltalab.config import DIMENSIONS, Params, SecondJudge
from deltalab.errors import UserError
from deltalab.io import atomic_dir, write_json, write_parquet
from deltalab.progress import summary
from deltalab.reliability import agreement, agreement_ci, noise_model, noisy_judge, overlap_ci, rescore, selection_overlap
from deltalab.judge.runner import judge_all

# What a derived second judge (noisy, verifier) writes per trace; LLM judges write the judge's full rows.
DERIVED_COLUMNS = ("trace_id", "prompt_id", "generator", "judge", "status", "reason", *DIMENSIONS)


def _read_first(params: Params, judgments_dir: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for name in params.generators:
        path = judgments_dir / f"{name}.parquet"
        if not path.is_file():
            raise UserError(f"{path}: judgments of generator {name!r} not found (run the judge stage first)")
        out[name] = pl.read_parquet(path)
    return out


def label(second: SecondJudge) -> str:
    if second.backend == "noisy":
        return f"noisy:sd={second.noise:g},seed={second.seed}"
    if second.backend == "verifier":
        return "verifier"
    return f"{second.backend}:{second.model}"


def describe(second: SecondJudge) -> str:
    """What the second judge is, in words (the report prints it)."""
    if second.backend == "noisy":
        return noise_model(second.noise, second.seed)
    if second.backend == "verifier":
        return ("the verifier: exact scores from the micro-world step checks, for the step-checkable traces "
                "(micro-model generators) only")
    return (f"an LLM judge ({second.backend} backend, model {second.model}, template {second.template}, "
            f"{second.scoring} scoring)")


def second_judgments(params: Params, second: SecondJudge, first: dict[str, pl.DataFrame], prompts_path: Path,
                     traces_dir: Path) -> tuple[dict[str, pl.DataFrame], str]:
    """The second judge's table per generator, and a summary of its requests (LLM judges)."""
    name = label(second)
    if second.backend == "noisy":
        return {g: noisy_judge(t, second.noise, second.seed).with_columns(judge=pl.lit(name)).select(DERIVED_COLUMNS)
                for g, t in first.items()}, ""
    if second.backend == "verifier":
        out = {}
        for g, t in first.items():
            scored = pl.all_horizontal(pl.col(f"verifier_{d}").is_not_null() for d in DIMENSIONS)
            out[g] = t.with_columns(
                judge=pl.lit(name),
                status=pl.when(scored).then(pl.lit("ok")).otherwise(pl.lit("unscorable")),
                reason=pl.when(scored).then(pl.lit(None, pl.String)).otherwise(pl.lit("no step checks")),
                **{d: pl.col(f"verifier_{d}") for d in DIMENSIONS},
            ).select(DERIVED_COLUMNS)
        return out, ""
    llm = params.model_copy(update={"judge": second.as_judge()})
    tables, judge = judge_all(llm, prompts_path, traces_dir, section="reliability.second_judge")
    stats = judge.stats
    return dict(zip(params.generators, tables)), f"; {stats['requests']} requests, {stats['cache_hits']} cache hits"


def _candidates(params: Params, name: str, traces_dir: Path, judgments_dir: Path, pairs_dir: Path) -> pl.DataFrame:
    """An ablation's candidate pairs (before the selection) with the first judge's deltas, planned as the
    pairs stage plans them; its selection must give the pairs file's pair ids."""
    abl = params.ablations[name]
    light = {}
    for g in dict.fromkeys((abl.chosen, abl.rejected)):
        traces = traces_dir / f"{g}.parquet"
        if not traces.is_file():
            raise UserError(f"{traces}: traces of generator {g!r} not found (run the generate stage first)")
        light[g] = pairing.light(pl.scan_parquet(traces), pl.scan_parquet(judgments_dir / f"{g}.parquet"))
    cands = pairing.pair(abl, light[abl.chosen], light[abl.rejected]).pairs
    if abl.directions is not None:
        cands = cands.filter(pl.col("direction").is_in(abl.directions))
    path = pairs_dir / f"{name}.parquet"
    if not path.is_file():
        raise UserError(f"{path}: pairs of ablation {name!r} not found (run the pairs stage first)")
    written = pl.read_parquet(path, columns=["pair_id"])["pair_id"].sort()
    if not pairing.select(cands, abl.selection)["pair_id"].sort().equals(written):
        raise UserError(f"{path}: its pairs are not the selection of the current judgments and traces "
                        f"(rerun the pairs stage; are the inputs from the same run?)")
    return cands


def stability(params: Params, name: str, cands: pl.DataFrame, second: pl.DataFrame) -> dict:
    """selection_overlap of one ranked ablation on the candidates both judges scored, with its CI."""
    rel, sel = params.reliability, params.ablations[name].selection
    b = rescore(cands, second)
    a = cands.filter(pl.col("pair_id").is_in(b["pair_id"].implode()))
    head = {"selection": sel.model_dump(exclude_none=True), "candidates_all": cands.height,
            "candidates_unscored": cands.height - b.height}
    if b.height == 0:
        return head | {"available": False,
                       "reason": "the second judge scored both traces of none of the candidate pairs"}
    got = selection_overlap(a, b, sel)
    return head | {"available": True, **got,
                   "jaccard_ci": overlap_ci(a, b, sel, rel.bootstrap, rel.confidence, rel.seed, name)}


def run(params: Params, prompts_path: Path, traces_dir: Path, judgments_dir: Path, pairs_dir: Path, out_dir: Path,
        metrics_path: Path) -> dict:
    rel = params.reliability
    if rel is None:
        raise UserError("reliability: not set in the params (the stage needs a `reliability.second_judge`)")
    second = rel.second_judge
    first = _read_first(params, judgments_dir)
    tables, requests = second_judgments(params, second, first, prompts_path, traces_dir)
    # One directory output, replaced whole, as the judge stage writes its own.
    with atomic_dir(out_dir) as tmp:
        for name, table in tables.items():
            write_parquet(table, tmp / f"{name}.parquet")
    a, b = pl.concat(first.values(), how="diagonal_relaxed"), pl.concat(tables.values(), how="diagonal_relaxed")
    agreed = agreement(a, b)
    cis = agreement_ci(a, b, rel.bootstrap, rel.confidence, rel.seed)
    for dim, block in agreed["scores"].items():
        block |= {"exact_ci": cis[dim]["exact"], "spearman_ci": cis[dim]["spearman"]}
    firsts = sorted({j for t in first.values() if t.height for j in t["judge"].unique().to_list()})
    selections = {}
    for name in params.ranked_ablations():
        cands = _candidates(params, name, traces_dir, judgments_dir, pairs_dir)
        selections[name] = stability(params, name, cands, b)
    metrics = {
        "first_judge": ", ".join(firsts),
        "second_judge": {"backend": second.backend, "label": label(second), "description": describe(second)},
        "bootstrap": rel.bootstrap,
        "confidence": rel.confidence,
        "traces": {"first_ok": int((a["status"] == "ok").sum()), "second_ok": int((b["status"] == "ok").sum()),
                   "total": a.height},
        "agreement": agreed,
        "selections": selections,
    }
    write_json(metrics, metrics_path)
    jac = ", ".join(f"{n} {s['jaccard']}" for n, s in selections.items() if s["available"]) or "no ranked selection"
    summary(f"reliability ({label(second)} vs {metrics['first_judge']}): wrote {out_dir} and {metrics_path} "
            f"({agreed['n']} traces compared, aggregate Spearman {agreed['scores']['aggregate']['spearman']}; "
            f"Jaccard {jac}{requests})")
    return metrics
