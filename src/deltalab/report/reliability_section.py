"""The report's "Judge reliability" section, from metrics/reliability.json (the reliability stage).

The verdict on each ranked selection (RULE), over the bootstrap CI [lo, hi] of the Jaccard overlap of
the pairs the two judges select, with threshold T = STABLE_JACCARD, first match wins:

1. *stable* -- lo >= T: the whole CI is at or above T.
2. *unstable* -- hi < T: the whole CI is below T.
3. *inconclusive* -- otherwise (lo < T <= hi).

At the boundaries lo == T is stable and hi == T is inconclusive. T = 0.5: for two selections of the
same size k, Jaccard I / (2k - I) >= 0.5 means I >= 2k/3, i.e. at least two thirds of the pairs one judge
keeps the other keeps too. As for the study's other verdicts (deltalab.verdicts), a label is flagged
*borderline* when a bound it depends on lies within BORDERLINE_SES Monte Carlo standard errors of T.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltalab.config import DIMENSIONS
from deltalab.errors import UserError
from deltalab.verdicts import BORDERLINE_SES, INCONCLUSIVE

STABLE_JACCARD = 0.5
STABLE = "stable"
UNSTABLE = "unstable"
NOT_AVAILABLE = "not available"
RULE = (f"**{STABLE}** when the {{conf:.0%}} CI of the Jaccard overlap lies at or above {STABLE_JACCARD:g} (at "
        f"least two thirds of the pairs one judge keeps, the other keeps too); **{UNSTABLE}** when it lies below "
        f"{STABLE_JACCARD:g}; **{INCONCLUSIVE}** otherwise. A label is flagged *borderline* when a CI bound it "
        f"depends on lies within {BORDERLINE_SES:g} Monte Carlo standard errors of {STABLE_JACCARD:g}.")
PAPER = ("The paper scored every trace with one judge (GPT-OSS-120b) and reports no second judge, no agreement "
         "and no selection stability; its top-30% selection by a per-step-accuracy delta showed no reliable "
         "difference from a random 30%.")


def verdict(ci: list[float] | None, se: list[float] | None, threshold: float = STABLE_JACCARD) -> dict:
    """The rule's label for a Jaccard CI (see the module docstring), and its borderline flag."""
    if ci is None:
        return {"label": NOT_AVAILABLE, "borderline": False}
    (lo, hi), (se_lo, se_hi) = ci, se or (0.0, 0.0)
    near_lo, near_hi = abs(lo - threshold) < BORDERLINE_SES * se_lo, abs(hi - threshold) < BORDERLINE_SES * se_hi
    if lo >= threshold:
        return {"label": STABLE, "borderline": near_lo}
    if hi < threshold:
        return {"label": UNSTABLE, "borderline": near_hi}
    return {"label": INCONCLUSIVE, "borderline": near_lo or near_hi}


def load(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: judge reliability metrics not found (params has `reliability`: run the "
                        f"reliability stage first)")
    return json.loads(path.read_text())


def verdicts(metrics: dict) -> dict:
    """Per ranked ablation: its Jaccard, CI and the rule's label (for metrics/report.json)."""
    out = {}
    for name, s in metrics["selections"].items():
        ci = s.get("jaccard_ci") if s["available"] else None
        out[name] = {"jaccard": s.get("jaccard"), "ci": ci["ci"] if ci else None,
                     **verdict(ci["ci"] if ci else None, ci["se"] if ci else None)}
    return out


def _ci(block: dict | None) -> str:
    return f"[{block['ci'][0]:.3f}, {block['ci'][1]:.3f}]" if block else "n/a"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ties(t: dict | None) -> str:
    if not t:
        return "none"
    return f"{t['kept']} of {t['tied']} at {t['delta']:+g}"


def lines(metrics: dict) -> list[str]:
    """The section's markdown lines."""
    second, conf = metrics["second_judge"], metrics["confidence"]
    agreed = metrics["agreement"]
    out = ["## Judge reliability", "",
           f"First judge: `{metrics['first_judge']}` (the study's judge: its scores made the pairs). Second judge: "
           f"`{second['label']}`, {second['description']}. Both scored {agreed['n']} traces ok "
           f"(first {metrics['traces']['first_ok']}, second {metrics['traces']['second_ok']} of "
           f"{metrics['traces']['total']}); {conf:.0%} bootstrap CIs over traces ({metrics['bootstrap']} resamples). "
           f"Exact agreement: the two scores equal after rounding half up (aggregate: all five dimensions equal).", "",
           "| dimension | Spearman | CI | exact agreement | CI | mean abs. difference |",
           "|---|---|---|---|---|---|"]
    for dim in (*DIMENSIONS, "aggregate"):
        b = agreed["scores"][dim]
        out.append(f"| {dim} | {_num(b['spearman'])} | {_ci(b['spearman_ci'])} | {_num(b['exact'])} | "
                   f"{_ci(b['exact_ci'])} | {_num(b['mad'])} |")
    out += ["", "Selection stability: each ranked (top-k / bottom-k) ablation's candidate pairs, held fixed, are "
                "re-scored with the second judge and selected again by the same rule; the Jaccard overlap of the two "
                f"selections, with a {conf:.0%} bootstrap CI over candidate pairs.", ""]
    verdict_of = verdicts(metrics)
    if not metrics["selections"]:
        out += ["No ablation ranks its pairs by a judged delta: nothing to check.", ""]
    else:
        out += ["| ablation | selection | candidates (unscored) | kept | Jaccard | CI | ties at cut-off: first / second judge "
                "| verdict |", "|---|---|---|---|---|---|---|---|"]
        for name, s in metrics["selections"].items():
            sel = s["selection"]
            size = f"{sel['method']} {sel.get('fraction', sel.get('count'))} by {sel['by']}"
            v = verdict_of[name]
            flag = " (borderline)" if v["borderline"] else ""
            if not s["available"]:
                out.append(f"| {name} | {size} | {s['candidates_all']} ({s['candidates_unscored']}) | - | n/a | n/a | - "
                           f"| {NOT_AVAILABLE}: {s['reason']} |")
                continue
            out.append(f"| {name} | {size} | {s['candidates_all']} ({s['candidates_unscored']}) | "
                       f"{s['selected_a']} / {s['selected_b']} | {_num(s['jaccard'])} | {_ci(s['jaccard_ci'])} | "
                       f"{_ties(s['ties_a'])} / {_ties(s['ties_b'])} | {v['label']}{flag} |")
        breaks = sorted({s["tie_break"] for s in metrics["selections"].values() if s.get("tie_break")})
        out += [""] + [f"Ties at the cut-off are broken by {b}." for b in breaks]
    out += ["", "Rule: " + RULE.format(conf=conf), "", "Paper: " + PAPER, ""]
    return out
