"""reports/index.html, the report as one self-contained page: read back as text (unit tier), and opened
from disk in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), where the summary
table, the plots and every ablation's pair browser must render, its direction filter and sort must change
the rows, and no request may leave the page.

The study is the synthetic one (tests/synthetic_study.py: real files, planted effects) through the report
stage in-process; tests/test_evaluate_report.py checks the page of the tiny study run through the CLI.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from html_page import local, parse
from synthetic_study import RATIONALE, write_study
from deltalab import paths
from deltalab.config import load_params
from deltalab.errors import UserError
from deltalab.report import browser, html
from deltalab.report.study import DELTA_COLUMNS
from deltalab.stages import report

NAMES = ["zero_delta", "delta_s", "delta_m", "delta_l", "dir_cw", "dir_wc"]
CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no GPU, no QUIC, no first-run, update, sync or background traffic of its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def run_report(root: Path) -> Path:
    p = load_params(root / "params.yaml")
    report.run(p, root / "data/eval", root / "metrics/eval", root / "data/pairs", root / "metrics/pairs",
               root / "reports", root / "metrics/report.json", judgments_dir=root / "data/judgments")
    return root / paths.REPORT_HTML


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The synthetic study's root, its report written."""
    root = tmp_path_factory.mktemp("html")
    write_study(root, names=NAMES, bootstrap=200)
    run_report(root)
    return root


# --- the page as text --------------------------------------------------------------------------------


def test_page_loads_nothing_and_has_every_section_of_the_summary(built):
    text = (built / paths.REPORT_HTML).read_text()
    page = parse(text)
    assert page.urls and all(local(v) for _, _, v in page.urls), [u for u in page.urls if not local(u[2])]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "link" not in page.tags and "iframe" not in page.tags
    assert page.csp == html.CSP and "default-src 'none'" in page.csp  # the browser forbids the page any request
    summary = (built / paths.SUMMARY).read_text()
    sections = [line.lstrip("#").strip() for line in summary.splitlines() if line.startswith("#")]
    assert len(sections) >= 8 and all(s in page.headings for s in sections)
    for name in ("base", *NAMES):  # the summary table, row by row
        assert f"<td>{name}</td>" in text


def test_every_drawn_plot_is_embedded_and_an_undrawn_one_is_a_note(built):
    page = parse((built / paths.REPORT_HTML).read_text())
    drawn = sorted((built / "reports").glob("*.png"))
    # no top_k ablation in this study: no accuracy-vs-fraction curve, though summary.md names the file
    assert [p.name for p in drawn] == ["gain_vs_generator_delta.png", "sample_delta_distributions.png",
                                       "sample_vs_generator_delta.png"]
    assert sorted(page.images) == sorted(html.data_uri(p) for p in drawn)
    assert "(plot not drawn: accuracy vs fraction)" in (built / paths.REPORT_HTML).read_text()


def test_each_ablation_has_a_browser_with_both_sides_judgments(built):
    data = parse((built / paths.REPORT_HTML).read_text()).pair_data
    assert [a["name"] for a in data["ablations"]] == NAMES and data["columns"] == browser.COLUMNS
    col = {c: i for i, c in enumerate(data["columns"])}
    for a in data["ablations"]:
        pairs = pl.read_parquet(built / f"data/pairs/{a['name']}.parquet")
        assert a["total"] == pairs.height and a["embedded"] == len(a["rows"]) <= 3 * browser.PER_VIEW
        by_id = {r["pair_id"]: r for r in pairs.iter_rows(named=True)}
        for row in a["rows"]:
            pair = by_id[row[col["pair_id"]]]
            assert data["texts"][row[col["chosen"]]] == pair["chosen"][0]["content"]
            for d in ("factuality", "step_coherence"):  # the judged scores differ by the pair's delta
                assert row[col[f"chosen_{d}"]] - row[col[f"rejected_{d}"]] == pair[f"delta_{d}"]
            for side, gen in (("chosen", pair["chosen_generator"]), ("rejected", pair["rejected_generator"])):
                assert (row[col[f"{side}_rationale"]] is not None) == (gen == RATIONALE)
    cw = next(a for a in data["ablations"] if a["name"] == "dir_cw")
    assert cw["directions"] == {"correct->wrong": cw["total"]}


def test_sample_is_top_bottom_and_seeded_random_of_10k():
    rng = np.random.default_rng(0)
    light = pl.DataFrame({"pair_id": [f"{i:05d}" for i in range(10_000)],
                          **{c: rng.integers(-4, 5, 10_000).astype(float) for c in DELTA_COLUMNS}})
    views = browser.sample(light, "delta_step_coherence", seed=3)
    n = browser.PER_VIEW
    assert all(len(ids) == n for ids in views.values())
    ranked = light.sort(["delta_step_coherence", "pair_id"], descending=[True, False])["pair_id"].to_list()
    assert views["top"] == ranked[:n]
    assert views["bottom"] == light.sort(["delta_step_coherence", "pair_id"])["pair_id"].to_list()[:n]
    assert views == browser.sample(light.reverse(), "delta_step_coherence", seed=3)  # the order read is no input
    assert views["random"] != browser.sample(light, "delta_step_coherence", seed=4)["random"]


def test_page_data_cannot_end_its_script_block():
    text = html.page_json({"t": "</script><script>alert(1)</script>", "u": "<!--"})
    assert "<" not in text and json.loads(text)["t"].startswith("</script>")


@pytest.mark.parametrize("broken, words", [
    ("judgments", r"data/judgments/gen_s.parquet: judgments of generator 'gen_s' not found \(run the judge stage"),
    ("texts", r"data/pairs/delta_s.parquet: pairs lack column\(s\) prompt, chosen_trace_id$"),
])
def test_a_missing_input_stops_the_report_before_it_writes(built, tmp_path, broken, words):
    root = tmp_path / "study"
    shutil.copytree(built, root, ignore=shutil.ignore_patterns("reports"))
    if broken == "judgments":
        (root / "data/judgments/gen_s.parquet").unlink()
    else:  # a pair table of an older version, without what the browser shows
        pairs = root / "data/pairs/delta_s.parquet"
        pl.read_parquet(pairs).drop("prompt", "chosen_trace_id").write_parquet(pairs)
    with pytest.raises(UserError, match=words):
        run_report(root)
    assert not (root / "reports").exists()


# --- the page in a real headless Chromium ------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `test` extra)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium with apt-get where it can "
                    "(run scripts/install-chromium to see why it could not)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def rows(section) -> list[dict]:
    return section.locator("article.pair").evaluate_all(
        "els => els.map(e => ({id: e.dataset.pairId, direction: e.dataset.direction,"
        " step: Number(e.getAttribute('data-delta_step_coherence')),"
        " aggregate: Number(e.getAttribute('data-delta_aggregate')), text: e.innerText}))")


@pytest.mark.integration
def test_page_renders_from_disk_and_requests_nothing(built, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((built / paths.REPORT_HTML).as_uri(), wait_until="load")

    # the summary table (base and every ablation) and every plot, decoded
    assert page.locator("#summary table").first.locator("tbody tr").count() == 1 + len(NAMES)
    widths = page.eval_on_selector_all("#summary img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 3 and all(w > 0 for w in widths)

    # every ablation's browser rendered its first page of pairs
    for name in NAMES:
        section = page.locator(f"#pairs-{name}")
        section.evaluate("e => { e.open = true; }")
        got = rows(section)
        assert 0 < len(got) <= 20 and section.locator("p.count").inner_text().startswith(f"Showing {len(got)} of")

    # delta_l's verdicts are drawn at random: several directions; the filter keeps one
    section = page.locator("#pairs-delta_l")
    section.locator("button[data-view=all]").click()
    before = rows(section)
    assert len({r["direction"] for r in before}) > 1 and before == sorted(before, key=lambda r: -r["aggregate"])
    section.locator("select.direction").select_option("wrong->correct")
    filtered = rows(section)
    assert filtered and {r["direction"] for r in filtered} == {"wrong->correct"}

    # sort by one dimension's delta, then ascending
    section.locator("select.direction").select_option("")
    section.locator("select.sort").select_option("delta_step_coherence")
    by_step = rows(section)
    assert [r["step"] for r in by_step] == sorted((r["step"] for r in by_step), reverse=True) and by_step != before
    section.locator("button.order").click()
    up = rows(section)
    assert [r["step"] for r in up] == sorted(r["step"] for r in up) and up[0]["step"] < by_step[0]["step"]

    # the judge's rationale shows where the judge gave one (gen_l's side) and only there
    assert "judge: chosen delta_l" in up[0]["text"] and "judge: rejected" not in up[0]["text"]

    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    assert not errors
    section.scroll_into_view_if_needed()
    shot = page.screenshot(path=tmp_path / "pair_browser.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()
