"""reports/index.html: the study report as one self-contained page that opens from disk.

The page is summary.md's own text rendered to HTML (so every section of it is there, written once),
each plot the report drew embedded as a data: URI, and a pair browser per ablation whose data is JSON
in the page (deltalab.report.browser). CSS and JS are inline (templates/), and a Content-Security-Policy
forbids the page any request but data: images: nothing leaves it. Deterministic: sorted keys, no
timestamps, so two runs write the same bytes.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt

from deltalab.io import atomic_path

READS = ("templates",)
"""The page template, its CSS and JS (code dependencies of the report stage: deltalab.imports)."""
PAGE, STYLE, SCRIPT = "index.html.jinja", "report.css", "browser.js"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def slug(text: str, taken: set[str]) -> str:
    """An id for a heading: lower-case words joined by dashes, made unique on the page."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name)
    return name


def markdown_html(text: str, plots: dict[str, Path]) -> tuple[str, list[dict], list[str]]:
    """(HTML of the markdown, its level-2 headings as {id, title}, the plots it shows). An image whose
    file is in `plots` (by its name, as summary.md refers to it) is embedded; one the report did not
    draw this run becomes a note, never a link to a file that may be stale or absent."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    taken: set[str] = {"pair-browser"}
    headings, shown = [], []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            title = tokens[i + 1].content
            tok.attrSet("id", slug(title, taken))
            if tok.tag == "h2":
                headings.append({"id": tok.attrGet("id"), "title": title})
        for child in tok.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src"))
            if src in plots:
                child.attrSet("src", data_uri(plots[src]))
                shown.append(src)
            else:
                child.type, child.tag, child.children = "text", "", None
                child.content = f"(plot not drawn: {child.content or src})"
    return md.renderer.render(tokens, md.options, {}), headings, shown


def page_json(data: dict) -> str:
    """JSON for a <script type="application/json"> block: `<` escaped, so no text can end the block."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c")


def render(summary: str, drawn: list[Path], pairs: dict) -> str:
    """The page: `summary` (summary.md's text), the PNGs drawn this run, the pair data (browser.load)."""
    plots = {p.name: p for p in drawn}
    body, headings, shown = markdown_html(summary, plots)
    extra = [{"name": n, "src": data_uri(p)} for n, p in plots.items() if n not in shown]
    env = jinja2.Environment(loader=jinja2.PackageLoader("deltalab.report", READS[0]), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    # The CSS and JS go in verbatim (not as templates: their braces are not Jinja's).
    css, js = (env.loader.get_source(env, name)[0] for name in (STYLE, SCRIPT))
    return env.get_template(PAGE).render(
        csp=CSP, css=css, js=js, summary=body, headings=headings, extra_plots=extra, ablations=pairs["ablations"],
        deltas=pairs["deltas"], views=pairs["views"], data=page_json(pairs))


def write(path: Path, summary: str, drawn: list[Path], pairs: dict) -> None:
    text = render(summary, drawn, pairs)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
