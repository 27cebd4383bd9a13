"""Benchmark: reports/index.html with 10k pairs per ablation (issue 15: "keep it fast with 10k pairs per
ablation"). Scales a finished study's pair tables: every ablation's pairs are tiled to N rows (fresh pair
ids; each copy's texts made distinct, so the page's text table cannot share them; optionally padded to
real-model lengths), then times what the report stage does for the page — read the pairs and judgments
(deltalab.report.browser.load) and render and write it (deltalab.report.html.write) — and prints the page's
size. Where Debian's Chromium and Playwright are installed, it also opens the page from disk and times the
load, the first rows of every pair browser, and a sort and a filter on a 10k-pair ablation.

    .venv/bin/python bench/html_report.py [--study .] [--pairs 10000] [--text-chars 0] [--repeat 3]

Run after a study (`make run`); nothing under the study is written (a temporary directory holds the copy).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from deltalab import paths
from deltalab.config import load_params
from deltalab.report import PNGS, browser, html

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def scale(src: Path, dst: Path, n: int, chars: int) -> int:
    """src's pairs tiled to n rows into dst; returns how many pairs were written."""
    dst.mkdir(parents=True)
    total = 0
    for path in sorted(src.glob("*.parquet")):
        if path.name.endswith(".kto.parquet"):
            continue
        df = pl.read_parquet(path)
        copies = []
        for k in range(-(-n // df.height)):
            tag = f"\n[copy {k}]"
            content = (pl.element().struct.field("content") + tag)
            if chars:
                content = content.str.pad_end(chars, ".")
            texts = {side: pl.col(side).list.eval(pl.struct(pl.element().struct.field("role"), content.alias("content")))
                     for side in ("chosen", "rejected")}
            copies.append(df.with_columns(pair_id=pl.col("pair_id") + f"-{k}", **texts))
        big = pl.concat(copies).head(n)
        big.write_parquet(dst / path.name)
        total += big.height
    return total


def open_in_chromium(page_path: Path, ablation: str) -> dict | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load")
        loaded = time.perf_counter() - t
        rows = page.locator("article.pair").count()
        section = page.locator(f"#pairs-{ablation}")
        section.evaluate("e => { e.open = true; }")
        t = time.perf_counter()
        section.locator("button[data-view=all]").click()
        section.locator("select.sort").select_option("delta_step_coherence")
        section.locator("select.direction").select_option("wrong->wrong")
        interact = time.perf_counter() - t
        heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        b.close()
    return {"load_s": loaded, "rows": rows, "interact_s": interact, "heap_mb": heap / 1e6 if heap else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, default=Path("."))
    ap.add_argument("--pairs", type=int, default=10_000, help="pairs per ablation")
    ap.add_argument("--text-chars", type=int, default=0, help="pad every trace to this many characters (0: as is)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    study = args.study.resolve()
    params = load_params(study / "params.yaml")
    summary = (study / paths.SUMMARY).read_text()
    drawn = [p for p in (study / paths.at(paths.REPORT_PNG, n) for n in PNGS) if p.exists()]
    with tempfile.TemporaryDirectory(prefix="html-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        total = scale(study / paths.PAIRS_DIR, tmp / "pairs", args.pairs, args.text_chars)
        print(f"scaled {len(params.ablations)} ablations to {args.pairs} pairs each ({total} pairs, "
              f"texts {'as is' if not args.text_chars else f'padded to {args.text_chars} chars'}) in "
              f"{time.perf_counter() - t:.1f} s (not timed below)")
        times, load_s = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            data = browser.load(params, tmp / "pairs", study / paths.JUDGMENTS_DIR)
            load_s.append(time.perf_counter() - t)
            html.write(tmp / "index.html", summary, drawn, data)
            times.append(time.perf_counter() - t)
        size = (tmp / "index.html").stat().st_size
        pngs = sum(len(html.data_uri(p)) for p in drawn)
        embedded = sum(a["embedded"] for a in data["ablations"])
        print(f"page: {size / 1e6:.2f} MB ({pngs / 1e6:.2f} MB of it the {len(drawn)} plots), {embedded} pairs embedded "
              f"of {total}, {len(data['texts'])} distinct texts")
        print(f"write: median {statistics.median(times):.2f} s (min {min(times):.2f}, of it reading pairs and "
              f"judgments {statistics.median(load_s):.2f} s) over {args.repeat} runs; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
        got = open_in_chromium(tmp / "index.html", next(iter(params.ablations)))
        if got is None:
            print("chromium: not measured (needs /usr/bin/chromium and playwright)")
        else:
            heap = f", JS heap {got['heap_mb']:.0f} MB" if got["heap_mb"] else ""
            print(f"chromium: load {got['load_s']:.2f} s with {got['rows']} cards rendered{heap}; "
                  f"all embedded + sort + filter on one ablation {got['interact_s']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
