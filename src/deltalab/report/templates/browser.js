// The pair browser: one per <details class="browser">, over the JSON in #pair-data
// (deltalab.report.browser). Vanilla JS, no network; texts go in as textContent, never as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("pair-data").textContent);
  const col = Object.fromEntries(data.columns.map((c, i) => [c, i]));
  const PAGE = 20;
  const text = (i) => (i === null ? null : data.texts[i]);
  // Integer scores and deltas print as integers; a mean (`fixed`) or an expected score with two decimals.
  const plain = (v, fixed) => (v === null ? "–" : Number.isInteger(v) && !fixed ? String(v) : v.toFixed(2));
  const signed = (v, fixed) => (v === null ? "–" : (v > 0 ? "+" : "") + plain(v, fixed));
  const mean = (c) => c === "delta_aggregate" || c === "aggregate";
  const name = (c) => c.replace(/^delta_/, "");

  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function side(r, which) {
    const ok = r[col[which + "_correct"]];
    const box = el("div", "side " + which);
    box.append(el("h4", "", `${which} · ${r[col[which + "_generator"]]} · ${ok ? "✓ correct" : "✗ wrong"}`));
    box.append(el("pre", "", text(r[col[which]])));
    const rationale = text(r[col[which + "_rationale"]]);
    if (rationale !== null) box.append(el("p", "rationale", "judge: " + rationale));
    return box;
  }

  function scores(r, sortBy) {
    const table = el("table", "scores");
    const head = table.createTHead().insertRow();
    for (const h of ["dimension", "chosen", "rejected", "Δ"]) head.append(el("th", "", h));
    const body = table.createTBody();
    for (const d of [...data.dimensions, "aggregate"]) {
      const row = body.insertRow();
      if ("delta_" + d === sortBy) row.className = "sorted";
      const score = (s) => {  // a side's aggregate: the mean of its five scores (none if one is missing)
        if (d !== "aggregate") return r[col[`${s}_${d}`]];
        const all = data.dimensions.map((x) => r[col[`${s}_${x}`]]);
        return all.includes(null) ? null : all.reduce((t, x) => t + x, 0) / all.length;
      };
      row.append(el("td", "", d.replaceAll("_", " ")), el("td", "", plain(score("chosen"), mean(d))),
                 el("td", "", plain(score("rejected"), mean(d))), el("td", "", signed(r[col["delta_" + d]], mean(d))));
    }
    return table;
  }

  function card(r, rank, sortBy) {
    const node = el("article", "pair");
    node.dataset.pairId = r[col.pair_id];
    node.dataset.direction = r[col.direction];
    for (const c of data.deltas) node.setAttribute("data-" + c, r[col[c]]);
    const deltas = [...new Set([sortBy, "delta_aggregate"])].map((c) => `Δ ${name(c)} ${signed(r[col[c]], mean(c))}`);
    node.append(el("header", "", [`#${rank}`, r[col.direction], ...deltas, `pair ${r[col.pair_id]}`].join(" · ")));
    const prompt = el("div", "prompt");
    prompt.append(el("h4", "", "prompt"), el("pre", "", text(r[col.prompt])));  // side by side: one line, often
    const sides = el("div", "sides");
    sides.append(side(r, "chosen"), side(r, "rejected"), scores(r, sortBy));
    node.append(prompt, sides);
    return node;
  }

  function setup(root, ab) {
    const state = { view: "top", direction: "", sort: ab.rank, desc: true, shown: PAGE };
    const q = (s) => root.querySelector(s);
    const render = () => {
      const c = col[state.sort], sign = state.desc ? -1 : 1;
      const rows = ab.rows.filter((r) => (state.view === "all" || r[col.views].includes(state.view)) &&
                                         (!state.direction || r[col.direction] === state.direction));
      rows.sort((a, b) => sign * (a[c] - b[c]) || (a[col.pair_id] < b[col.pair_id] ? -1 : 1));
      root.querySelectorAll("[data-view]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.view === state.view)));
      q("button.order").textContent = state.desc ? "descending" : "ascending";
      q("div.pairs").replaceChildren(...rows.slice(0, state.shown).map((r, i) => card(r, i + 1, state.sort)));
      const view = state.view === "all" ? "all embedded" : `${state.view} ${ab.per_view}`;
      q("p.count").textContent = `Showing ${Math.min(state.shown, rows.length)} of the ${rows.length} pairs in view ` +
        `${view}${state.direction ? ", direction " + state.direction : ""}, by Δ ${name(state.sort)} ` +
        `${state.desc ? "descending" : "ascending"} (${ab.embedded} of ${ab.total} pairs embedded).`;
      q("button.more").hidden = rows.length <= state.shown;
    };
    root.querySelectorAll("[data-view]").forEach((b) => b.addEventListener("click", () => {
      state.view = b.dataset.view;
      state.desc = state.view !== "bottom";  // bottom: the smallest deltas first
      state.shown = PAGE;
      render();
    }));
    q("select.direction").addEventListener("change", (e) => { state.direction = e.target.value; state.shown = PAGE; render(); });
    q("select.sort").addEventListener("change", (e) => { state.sort = e.target.value; state.shown = PAGE; render(); });
    q("button.order").addEventListener("click", () => { state.desc = !state.desc; render(); });
    q("button.more").addEventListener("click", () => { state.shown += PAGE; render(); });
    render();
  }

  document.querySelectorAll("details.browser").forEach((root) => setup(root, data.ablations[Number(root.dataset.ablation)]));
})();
