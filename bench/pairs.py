"""Benchmark: build ten ablations from 1M judged traces (~2 KB of text each).

Goal: <= 10 s wall and <= 1.5 GB peak RSS on 2 cores, all ten ablations written as parquet (pairs
file and KTO view). Synthetic data (5 generators x 50k prompts x 4 samples, per-generator traces and
judgments parquet files, ~0.7 GB on disk) is generated once into a temporary directory, outside the
timed part. Every variant then runs in a fresh subprocess; its wall time and its own peak RSS
(`os.wait4`) are measured, and so is the CPU other processes used meanwhile (a shared machine makes
timings noisy, so it is printed with each run).

Variants:
- `deltalab`        deltalab.stages.pairs.run, the code `deltalab pairs` runs, once per ablation in
                    one process (light-column planning; only the selected traces' text is read), so
                    without the ten process start-ups of `deltalab-cli`.
- `deltalab-zstd3`  the same at zstd level 3 (the io.write_parquet default), to show what level 1 buys.
- `deltalab-cli`    ten `deltalab pairs NAME` processes one after the other, as DVC runs them (each
                    rereads its two generators' text); `deltalab-cli-j2`: two at a time, as Snakemake
                    runs them on 2 cores (peak RSS: the largest sum over processes alive at once).
- `pandas`          a plain pandas version: per ablation read both generators' tables, merge, pick,
                    pair, select, build message lists, `to_parquet` (pyarrow's zstd, level 1).
- `polars-lazy`     a straightforward polars lazy version: per ablation scan + join traces and
                    judgments (completions included), pick, pair, select, collect, io.write_parquet
                    (zstd level 3).

Every variant writes the same ten pairs files and KTO views (checked: the pair ids of every variant
and every run must equal deltalab's); the baselines' metrics JSON is simpler.

    .venv/bin/python bench/pairs.py [--prompts 50000] [--generators 5] [--samples 4]
        [--variants deltalab,deltalab-zstd3,deltalab-cli,deltalab-cli-j2,pandas,polars-lazy]
        [--repeat 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

GOAL_S, GOAL_GB = 10.0, 1.5
ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = {  # the mix: all, top_k 30% by aggregate, top_k by a dimension, random_k, threshold, bottom_k,
    # a zero-delta control, direction filters
    "delta_m": {"chosen": "gen2", "rejected": "gen0"},
    "top30_agg": {"chosen": "gen4", "rejected": "gen0", "pick": "best",
                  "selection": {"method": "top_k", "fraction": 0.3}},
    "top_step": {"chosen": "gen3", "rejected": "gen0",
                 "selection": {"method": "top_k", "count": 10000, "by": "step_coherence"}},
    "random30": {"chosen": "gen4", "rejected": "gen0", "pick": "best",
                 "selection": {"method": "random_k", "fraction": 0.3, "seed": 1}},
    "threshold": {"chosen": "gen3", "rejected": "gen1", "selection": {"method": "threshold", "threshold": 1.0}},
    "bottom30": {"chosen": "gen4", "rejected": "gen0", "pick": "best",
                 "selection": {"method": "bottom_k", "fraction": 0.3}},
    "zero_delta": {"chosen": "gen0", "rejected": "gen0", "pick": "random", "pick_seed": 3},
    "c2w": {"chosen": "gen4", "rejected": "gen1", "directions": ["correct->wrong"]},
    "delta_s": {"chosen": "gen1", "rejected": "gen0", "selection": {"method": "top_k", "fraction": 0.5}},
    "c2c_top": {"chosen": "gen2", "rejected": "gen1", "pick": "best", "directions": ["correct->correct"],
                "selection": {"method": "top_k", "fraction": 0.3}},
}
DIMS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision", "signal_to_noise")


# --- synthetic data (not timed) -----------------------------------------------------------------------


def _text_pool(rng: np.random.Generator, size: int, words: int = 400) -> pl.Series:
    """Reasoning-like filler: Zipf-distributed pseudo-words, ~2 KB per text, zstd ratio ~2.6-3."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = ["".join(map(chr, rng.choice(letters, n))) for n in rng.integers(2, 10, 6000)]
    vocab[:10] = ["=", "+", "-", "so", "the", "step", "\n", "we", "is", "answer"]
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    idx = rng.choice(len(vocab), size=(size, words), p=p / p.sum())
    table = np.array(vocab, dtype=object)
    return pl.Series([" ".join(row) for row in table[idx]])


def make_data(root: Path, gens: int, prompts: int, samples: int) -> None:
    from deltalab.io import write_parquet
    from deltalab.judge import JUDGMENT_SCHEMA
    from deltalab.stages.generate import SCHEMA

    rng = np.random.default_rng(0)
    pool = _text_pool(rng, 20000)
    pids = [f"{x:016x}" for x in rng.integers(0, 2**62, prompts)]
    write_parquet(pl.DataFrame({
        "prompt_id": pids, "split": "train", "family": "chain_sum", "source": "synthetic",
        "source_index": np.arange(prompts), "question": [f"{i} + {i * 7 % 97} - 3 =" for i in range(prompts)],
        "answer": "0", "metadata": "{}", "verifier": "math_verify"}), root / "prompts.parquet")
    rows = prompts * samples
    for g in range(gens):
        name = f"gen{g}"
        tid = pl.Series([f"{x:016x}" for x in rng.integers(0, 2**62, rows)])
        correct = rng.random(rows) < 0.2 + 0.15 * g  # a capability ladder
        text = pl.Series(tid + " " + pool.gather(rng.integers(0, len(pool), rows)))
        traces = pl.DataFrame({
            "trace_id": tid, "prompt_id": np.repeat(np.array(pids, dtype=object), samples).tolist(),
            "family": "chain_sum", "generator": name, "model": f"m/{name}", "model_revision": "0" * 16,
            "backend": "transformers", "decoding": "sample", "sampling": "{}",
            "seed": rng.integers(0, 2**31, rows), "sample_index": np.tile(np.arange(samples), prompts),
            "completion": text, "prompt_tokens": 12, "completion_tokens": 500, "finish_reason": "stop",
            "answer": "1", "score": correct.astype(float), "correct": correct, "format_ok": True,
            "step_correct": None, "step_accuracy": rng.random(rows),
        }).cast(SCHEMA).select(list(SCHEMA))
        write_parquet(traces, root / "traces" / f"{name}.parquet")
        del traces, text
        ok = rng.random(rows) > 0.01  # 1% failed judgments
        scores = {d: np.clip(np.round(rng.normal(2 + 0.5 * g + correct, 1.0)), 1, 5).astype(np.int8) for d in DIMS}
        judged = pl.DataFrame({
            "trace_id": tid, "prompt_id": np.repeat(np.array(pids, dtype=object), samples).tolist(),
            "generator": name, "judge": "verifier", "template_version": "verifier-v1",
            "status": np.where(ok, "ok", "parse_error"), "reason": None, **scores,
            "rationale": None, "raw_response": None, "cache_key": tid, "prompt_tokens": 0, "completion_tokens": 0,
            **{f"verifier_{d}": scores[d] for d in DIMS},
        }).with_columns(
            [pl.when(pl.col("status") == "ok").then(pl.col(d)).alias(d) for d in DIMS]
            + [pl.when(pl.col("status") != "ok").then(pl.lit("unparseable")).alias("reason")]
        ).cast(JUDGMENT_SCHEMA).select(list(JUDGMENT_SCHEMA))
        write_parquet(judged, root / "judgments" / f"{name}.parquet")
        print(f"  data: {name} written", flush=True)


def write_params(root: Path, gens: int) -> Path:
    params = {
        "tasks": {"chain_sum": {"source": "reasoning_gym", "dataset": "chain_sum"}},
        "prompt": {"default": {"user": "{{ question }}"}},  # the bare question, as the pandas variants
        "prompts": {"train": {"chain_sum": 10}, "eval_id": {"chain_sum": 2}},
        "generators": {f"gen{g}": {"model": f"m/gen{g}", "scale": f"L{g}"} for g in range(gens)},
        "ablations": ABLATIONS,
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# --- variants (each runs in its own process) -----------------------------------------------------------


def outputs(out: Path, names) -> dict:
    return {n: (out / f"{n}.parquet", out / f"{n}.kto.parquet", out / f"{n}.json") for n in names}


def variant_deltalab(data: Path, out: Path, level: int = 1) -> None:
    from deltalab.config import load_params
    from deltalab.stages import pairs

    pairs.ZSTD_LEVEL = level
    params = load_params(data / "params.yaml")
    for name, paths in outputs(out, params.ablations).items():
        pairs.run(name, params, data / "prompts.parquet", data / "traces", data / "judgments", *paths)


def _mix_keys(prompt_ids, sample_index, gen: str, seed: int) -> np.ndarray:
    """The stage's random pick key (derive_seed per prompt, mixed with the sample index), so the
    baselines make the same random picks."""
    from deltalab.io import derive_seed
    from deltalab.pairing import mix64

    seeds = {p: derive_seed(seed, "pick", gen, p) for p in set(prompt_ids)}
    s = np.array([seeds[p] for p in prompt_ids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(mix64(s * np.uint64(0x9E3779B97F4A7C15) + np.asarray(sample_index, dtype=np.uint64)))


def _size(sel: dict, n: int) -> int:
    from decimal import ROUND_HALF_UP, Decimal

    if "count" in sel:
        return min(sel["count"], n)
    return min(max(int((Decimal(str(sel["fraction"])) * n).quantize(Decimal(1), rounding=ROUND_HALF_UP)), 1), n)


def variant_pandas(data: Path, out: Path) -> None:
    import pandas as pd

    from deltalab.io import content_id, derive_seed

    params = yaml.safe_load((data / "params.yaml").read_text())
    questions = pd.read_parquet(data / "prompts.parquet", columns=["prompt_id", "question"])
    out.mkdir(parents=True, exist_ok=True)
    for name, a in params["ablations"].items():
        def load(g):
            t = pd.read_parquet(data / "traces" / f"{g}.parquet",
                                columns=["trace_id", "prompt_id", "sample_index", "correct", "completion"])
            j = pd.read_parquet(data / "judgments" / f"{g}.parquet", columns=["trace_id", "status", *DIMS])
            df = t.merge(j, on="trace_id", how="left")
            df["ok"] = (df["status"] == "ok") & df[list(DIMS)].notna().all(axis=1)
            df["aggregate"] = df[list(DIMS)].sum(axis=1) / 5
            return df

        same = a["chosen"] == a["rejected"]
        c = load(a["chosen"])
        r = c if same else load(a["rejected"])
        common = set(c["prompt_id"]) & set(r["prompt_id"])
        acc = lambda df: df.loc[df["prompt_id"].isin(common), "correct"].mean()
        gen_delta = 0.0 if same else acc(c) - acc(r)

        def ranked(df, g):
            u = df[df["ok"] & df["prompt_id"].isin(common)].copy()
            pick = a.get("pick", "first")
            if pick == "first":
                u = u.sort_values(["prompt_id", "sample_index"])
            elif pick == "best":
                u = u.sort_values(["prompt_id", "aggregate", "sample_index"], ascending=[True, False, True])
            else:
                u["rkey"] = _mix_keys(u["prompt_id"].tolist(), u["sample_index"].to_numpy(), g, a.get("pick_seed", 0))
                u = u.sort_values(["prompt_id", "rkey", "sample_index"])
            u["rank"] = u.groupby("prompt_id").cumcount()
            return u

        cols = ["prompt_id", "trace_id", "sample_index", "correct", "completion", *DIMS]
        rc = ranked(c, a["chosen"])
        if same:
            cs, rs = rc[rc["rank"] == 0][cols], rc[rc["rank"] == 1][cols]
        else:
            rr = ranked(r, a["rejected"])
            cs, rs = rc[rc["rank"] == 0][cols], rr[rr["rank"] == 0][cols]
        p = cs.merge(rs, on="prompt_id", suffixes=("_c", "_r"))
        p["pair_id"] = [content_id("pair", x, y) for x, y in zip(p["trace_id_c"], p["trace_id_r"])]
        for d in DIMS:
            p[f"delta_{d}"] = (p[f"{d}_c"] - p[f"{d}_r"]).astype("int8")
        p["delta_aggregate"] = p[[f"delta_{d}" for d in DIMS]].astype(int).sum(axis=1) / 5
        verdict = lambda s: np.where(s, "correct", "wrong")
        p["direction"] = pd.Series(verdict(p["correct_c"]), index=p.index) + "->" + verdict(p["correct_r"])
        p = p.sort_values("pair_id")
        if a.get("directions"):
            p = p[p["direction"].isin(a["directions"])]
        sel = a.get("selection", {"method": "all"})
        col = f"delta_{sel.get('by', 'aggregate')}"
        if sel["method"] in ("top_k", "bottom_k"):
            p = p.sort_values([col, "pair_id"], ascending=[sel["method"] == "bottom_k", True]).head(_size(sel, len(p)))
        elif sel["method"] == "threshold":
            p = p[p[col] >= sel["threshold"]]
        elif sel["method"] == "random_k":
            rows = sorted(random.Random(derive_seed(sel.get("seed", 0), "random_k")).sample(range(len(p)), _size(sel, len(p))))
            p = p.iloc[rows]
        p = p.sort_values("pair_id").merge(questions, on="prompt_id", how="left")
        msg = lambda role, texts: [[{"role": role, "content": t}] for t in texts]
        table = pd.DataFrame({
            "prompt": msg("user", p["question"]), "chosen": msg("assistant", p["completion_c"]),
            "rejected": msg("assistant", p["completion_r"]), "pair_id": p["pair_id"], "prompt_id": p["prompt_id"],
            "chosen_generator": a["chosen"], "rejected_generator": a["rejected"], "generator_delta": gen_delta,
            "chosen_trace_id": p["trace_id_c"], "rejected_trace_id": p["trace_id_r"],
            "chosen_correct": p["correct_c"], "rejected_correct": p["correct_r"], "direction": p["direction"],
            **{f"delta_{d}": p[f"delta_{d}"] for d in DIMS}, "delta_aggregate": p["delta_aggregate"],
        })
        table.to_parquet(out / f"{name}.parquet", compression="zstd", index=False)
        kto = pd.DataFrame({
            "prompt": [m for m in table["prompt"] for _ in range(2)],
            "completion": [m for pair in zip(table["chosen"], table["rejected"]) for m in pair],
            "label": [True, False] * len(table), "pair_id": [x for x in table["pair_id"] for _ in range(2)],
        })
        kto.to_parquet(out / f"{name}.kto.parquet", compression="zstd", index=False)
        stats = {c: table[c].describe().to_dict() for c in table.columns if c.startswith("delta_")}
        (out / f"{name}.json").write_text(json.dumps({"pairs": len(table), "generator_delta": gen_delta, **stats}))


def variant_polars_lazy(data: Path, out: Path) -> None:
    from deltalab.io import content_id, derive_seed, write_parquet

    params = yaml.safe_load((data / "params.yaml").read_text())
    questions = pl.scan_parquet(data / "prompts.parquet").select("prompt_id", "question")
    for name, a in params["ablations"].items():
        def scan(g):
            judged = pl.scan_parquet(data / "judgments" / f"{g}.parquet").select("trace_id", "status", *DIMS)
            return (
                pl.scan_parquet(data / "traces" / f"{g}.parquet")
                .select("trace_id", "prompt_id", "sample_index", "correct", "completion")
                .join(judged, on="trace_id", how="left")
                .with_columns(ok=(pl.col("status") == "ok") & pl.all_horizontal(pl.col(d).is_not_null() for d in DIMS),
                              aggregate=pl.sum_horizontal(DIMS) / 5)
            )

        same = a["chosen"] == a["rejected"]
        c, r = scan(a["chosen"]), scan(a["rejected"])
        common = c.select("prompt_id").unique().join(r.select("prompt_id").unique(), on="prompt_id")
        acc = lambda lf: lf.join(common, on="prompt_id").select(pl.col("correct").mean()).collect().item()
        gen_delta = 0.0 if same else acc(c) - acc(r)

        def ranked(lf, g):
            u = lf.filter(pl.col("ok")).join(common, on="prompt_id")
            pick = a.get("pick", "first")
            if pick == "first":
                keys, desc = ["sample_index"], [False]
            elif pick == "best":
                keys, desc = ["aggregate", "sample_index"], [True, False]
            else:
                seed = a.get("pick_seed", 0)
                u = u.with_columns(rkey=pl.struct("prompt_id", "sample_index").map_batches(
                    lambda s: pl.Series(_mix_keys(s.struct.field("prompt_id").to_list(),
                                                  s.struct.field("sample_index").to_numpy(), g, seed)),
                    return_dtype=pl.UInt64))
                keys, desc = ["rkey", "sample_index"], [False, False]
            return u.sort(["prompt_id", *keys], descending=[False, *desc]).with_columns(
                rank=pl.int_range(pl.len()).over("prompt_id"))

        side = lambda lf, k, s: lf.filter(pl.col("rank") == k).select(
            "prompt_id", *[pl.col(x).alias(f"{x}_{s}") for x in ("trace_id", "sample_index", "correct", "completion", *DIMS)])
        rc = ranked(c, a["chosen"])
        pairs = side(rc, 0, "c").join(side(rc if same else ranked(r, a["rejected"]), 1 if same else 0, "r"), on="prompt_id")
        verdict = lambda s: pl.when(pl.col(f"correct_{s}")).then(pl.lit("correct")).otherwise(pl.lit("wrong"))
        pairs = pairs.with_columns(
            pl.struct("trace_id_c", "trace_id_r").map_batches(
                lambda s: pl.Series([content_id("pair", x, y) for x, y in zip(
                    s.struct.field("trace_id_c").to_list(), s.struct.field("trace_id_r").to_list())]),
                return_dtype=pl.String).alias("pair_id"),
            pl.concat_str([verdict("c"), verdict("r")], separator="->").alias("direction"),
            *[(pl.col(f"{d}_c") - pl.col(f"{d}_r")).cast(pl.Int8).alias(f"delta_{d}") for d in DIMS],
        ).with_columns(delta_aggregate=pl.sum_horizontal(pl.col(f"delta_{d}").cast(pl.Int32) for d in DIMS) / 5)
        if a.get("directions"):
            pairs = pairs.filter(pl.col("direction").is_in(a["directions"]))
        sel = a.get("selection", {"method": "all"})
        col = f"delta_{sel.get('by', 'aggregate')}"
        if sel["method"] in ("top_k", "bottom_k"):
            n = pairs.select(pl.len()).collect().item()
            pairs = pairs.sort([col, "pair_id"], descending=[sel["method"] == "top_k", False]).head(_size(sel, n))
        elif sel["method"] == "threshold":
            pairs = pairs.filter(pl.col(col) >= sel["threshold"])
        elif sel["method"] == "random_k":
            n = pairs.select(pl.len()).collect().item()
            rows = sorted(random.Random(derive_seed(sel.get("seed", 0), "random_k")).sample(range(n), _size(sel, n)))
            pairs = pairs.sort("pair_id").with_row_index("_i").filter(pl.col("_i").is_in(rows)).drop("_i")
        msg = lambda role, col: pl.concat_list(pl.struct(role=pl.lit(role), content=pl.col(col)))
        table = pairs.sort("pair_id").join(questions, on="prompt_id", how="left").select(
            msg("user", "question").alias("prompt"), msg("assistant", "completion_c").alias("chosen"),
            msg("assistant", "completion_r").alias("rejected"), "pair_id", "prompt_id",
            chosen_generator=pl.lit(a["chosen"]), rejected_generator=pl.lit(a["rejected"]),
            generator_delta=pl.lit(gen_delta), chosen_trace_id="trace_id_c", rejected_trace_id="trace_id_r",
            chosen_correct="correct_c", rejected_correct="correct_r", direction="direction",
            **{f"delta_{d}": f"delta_{d}" for d in DIMS}, delta_aggregate="delta_aggregate",
        ).collect()
        write_parquet(table, out / f"{name}.parquet")
        kto = pl.concat([
            table.select("prompt", completion="chosen", label=pl.lit(True), pair_id="pair_id", _o=pl.int_range(pl.len()) * 2),
            table.select("prompt", completion="rejected", label=pl.lit(False), pair_id="pair_id",
                         _o=pl.int_range(pl.len()) * 2 + 1),
        ]).sort("_o").drop("_o")
        write_parquet(kto, out / f"{name}.kto.parquet")
        stats = table.select(pl.col(c).mean() for c in table.columns if c.startswith("delta_")).row(0, named=True)
        (out / f"{name}.json").write_text(json.dumps({"pairs": table.height, "generator_delta": gen_delta, **stats}))


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def variant_cli(data: Path, out: Path, jobs: int = 1) -> None:
    """Ten `deltalab pairs NAME` processes, `jobs` at a time, as Snakemake/DVC run them. The peak is the
    largest sum of the RSS of the processes alive at once (sampled every 10 ms) or the largest single
    process peak, whichever is higher; it is handed to the parent in a file."""
    names = list(yaml.safe_load((data / "params.yaml").read_text())["ablations"])
    cli = str(Path(sys.executable).parent / "deltalab")
    todo, alive, peak = list(names), {}, 0
    while todo or alive:
        while todo and len(alive) < jobs:
            n = todo.pop(0)
            alive[subprocess.Popen(
                [cli, "pairs", n, "--params", str(data / "params.yaml"), "--prompts", str(data / "prompts.parquet"),
                 "--traces-dir", str(data / "traces"), "--judgments-dir", str(data / "judgments"),
                 "--out", str(out / f"{n}.parquet"), "--kto-out", str(out / f"{n}.kto.parquet"),
                 "--metrics", str(out / f"{n}.json")], stdout=subprocess.DEVNULL).pid] = n
        peak = max(peak, sum(_rss_kb(pid) for pid in alive))
        for pid in list(alive):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                if status:
                    raise SystemExit(f"deltalab pairs {alive[pid]} failed ({status})")
                peak = max(peak, usage.ru_maxrss)
                del alive[pid]
        time.sleep(0.01)
    (out / ".peak_kb").write_text(str(peak))


VARIANTS = {
    "deltalab": lambda d, o: variant_deltalab(d, o),
    "deltalab-zstd3": lambda d, o: variant_deltalab(d, o, level=3),
    "deltalab-cli": variant_cli,
    "deltalab-cli-j2": lambda d, o: variant_cli(d, o, jobs=2),
    "pandas": variant_pandas,
    "polars-lazy": variant_polars_lazy,
}


# --- driver -------------------------------------------------------------------------------------------


def _busy_jiffies() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def measure(variant: str, data: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    busy, start = _busy_jiffies(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--run-variant", variant, "--data", str(data), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status:
        raise SystemExit(f"variant {variant} failed ({status})")
    hz = os.sysconf("SC_CLK_TCK")
    cpu = usage.ru_utime + usage.ru_stime
    other = max(0.0, (_busy_jiffies() - busy) / hz - cpu) / wall  # cores used by everything else meanwhile
    peak_kb = usage.ru_maxrss
    if (out / ".peak_kb").exists():
        peak_kb = max(peak_kb, int((out / ".peak_kb").read_text()))
    files = sorted(out.glob("*.parquet"))
    ids = {}
    for f in files:
        if not f.name.endswith(".kto.parquet"):
            got = pl.read_parquet(f, columns=["pair_id"])["pair_id"].sort()
            ids[f.stem] = hashlib.sha256("\n".join(got).encode()).hexdigest()
    return {"variant": variant, "seconds": wall, "cpu_seconds": cpu, "other_load": other, "peak_gb": peak_kb / 2**20,
            "files": len(files), "bytes": sum(f.stat().st_size for f in files), "pair_ids": ids,
            "pairs": sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files
                         if not f.name.endswith(".kto.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=50000)
    ap.add_argument("--generators", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--variants", default="deltalab,deltalab-zstd3,deltalab-cli,deltalab-cli-j2,pandas,polars-lazy")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per variant: the fastest time and the largest peak are reported")
    ap.add_argument("--keep", type=Path, help="generate the data here and keep it (reused when present)")
    ap.add_argument("--run-variant", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_variant:
        VARIANTS[args.run_variant](args.data, args.out)
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pairs-"))
    try:
        data = work / "data"
        if not (data / "params.yaml").exists():
            print(f"generating {args.generators} x {args.prompts} x {args.samples} traces in {data} ...", flush=True)
            start = time.perf_counter()
            make_data(data, args.generators, args.prompts, args.samples)
            write_params(data, args.generators)
            print(f"  data ready in {time.perf_counter() - start:.0f} s "
                  f"({sum(f.stat().st_size for f in data.rglob('*.parquet')) / 2**30:.2f} GiB)", flush=True)
        rows = []
        for variant in args.variants.split(","):
            runs = []
            for i in range(args.repeat):
                runs.append(measure(variant, data, work / "out"))
                r = runs[-1]
                print(f"  {variant} run {i + 1}: {r['seconds']:.1f} s, {r['peak_gb']:.2f} GB, "
                      f"other load {r['other_load']:.2f} cores", flush=True)
            best = min(runs, key=lambda r: r["seconds"])  # fastest time, but the largest peak of all runs
            best["runs"] = [round(r["seconds"], 1) for r in runs]
            best["peak_gb"] = max(r["peak_gb"] for r in runs)
            best["same"] = all(r["pair_ids"] == runs[0]["pair_ids"] for r in runs)
            rows.append(best)
        shutil.rmtree(work / "out", ignore_errors=True)
        ref = next((r["pair_ids"] for r in rows if r["variant"] == "deltalab"), rows[0]["pair_ids"])
        print(f"\n{'variant':<15} {'seconds':>8} {'cpu s':>6} {'peak GB':>8} {'other load':>10} {'pairs':>8} "
              f"{'out GB':>7} {'same pairs':>10}  goals (<= {GOAL_S:.0f} s, <= {GOAL_GB} GB)")
        for r in rows:
            goals = ("time ok" if r["seconds"] <= GOAL_S else "time MISSED") + ", " + (
                "memory ok" if r["peak_gb"] <= GOAL_GB else "memory MISSED")
            print(f"{r['variant']:<15} {r['seconds']:8.1f} {r['cpu_seconds']:6.1f} {r['peak_gb']:8.2f} "
                  f"{r['other_load']:10.2f} {r['pairs']:8d} {r['bytes'] / 2**30:7.2f} "
                  f"{'yes' if r['pair_ids'] == ref and r['same'] else 'NO':>10}  {goals}   runs: {r['runs']}")
        print(f"({os.cpu_count()} cores; 'other load' = cores busy with other processes during the run; "
              f"ten ablations, each written as pairs + KTO view)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
