"""Check: does any verdict label depend on the bootstrap seed? (issue 14: "re-running the report with
another bootstrap seed changes no label"). After a study run, re-runs the report in-process with
`evaluate.seed` = 0..N-1 on the study's evaluations and pairs, each into a temporary directory (never
reports/ or metrics/), collects every `label` in each run's report JSON, and prints one row per label
with its value per seed (`*`: flagged borderline, i.e. undecided inside Monte Carlo error) and whether
they agree. Exit code 1 when a label changes between seeds.

    .venv/bin/python bench/label_stability.py [--params params.yaml] [--seeds 4]

Run it in the study's root (the report's default input paths are relative to it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from deltalab import cli
from deltalab.errors import UserError
from deltalab.verdicts import LABELS

KEYS = ("top", "ablation", "name", "contrast", "dimension", "direction", "split")
"""Fields that name a list entry of the report JSON (e.g. a Q2 row: its top-k ablation and split)."""


def labels(node, path: str = "") -> dict[str, str]:
    """Every verdict label in a report JSON, by where it sits; `*` marks a borderline one."""
    out = {}
    if isinstance(node, dict):
        if node.get("label") in LABELS:
            out[path or "."] = node["label"] + ("*" if node.get("borderline") else "")
        for key, value in node.items():
            out |= labels(value, f"{path}/{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            name = "/".join(str(value[k]) for k in KEYS if isinstance(value, dict) and isinstance(value.get(k), str))
            out |= labels(value, f"{path}[{name or i}]")
    return out


def run(params_path: Path, seed: int, work: Path) -> dict[str, str]:
    raw = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    raw.setdefault("evaluate", {})["seed"] = seed
    params = work / f"params-seed{seed}.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    metrics = work / f"report-seed{seed}.json"
    cli.report(params=params, out_dir=work / f"reports-seed{seed}", metrics=metrics)
    return labels(json.loads(metrics.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seeds", type=int, default=4, help="bootstrap seeds 0..N-1 (default 4)")
    args = ap.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="label-stability-") as tmp:
            runs = [run(args.params, seed, Path(tmp)) for seed in range(args.seeds)]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    keys = list(dict.fromkeys(k for r in runs for k in r))
    width = max(map(len, keys), default=5)
    col = max([len(v) for r in runs for v in r.values()] + [len(f"seed {args.seeds - 1}")])
    print(f"{'label':<{width}}  " + "  ".join(f"{f'seed {s}':<{col}}" for s in range(args.seeds)) + "  agree")
    changed = 0
    for key in keys:
        values = [r.get(key, "-") for r in runs]
        same = len({v.rstrip("*") for v in values}) == 1
        changed += not same
        print(f"{key:<{width}}  " + "  ".join(f"{v:<{col}}" for v in values) + f"  {'yes' if same else 'NO'}")
    print(f"{len(keys)} labels over {args.seeds} bootstrap seeds: "
          + ("all agree" if not changed else f"{changed} change"))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
