"""`deltalab diff`: compare a DVC-tracked parquet (traces, judgments or pairs) at two revisions.

A revision is a git revision or `workspace`, the file as it is on disk (as in `dvc metrics diff`).

Rows are matched by their stable id (pair_id, trace_id or prompt_id). The report lists rows added,
removed and changed (with the columns that changed); for pairs also the shift of every delta's
distribution and of the generator and correctness-direction composition.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from deltalab.errors import UserError

ID_COLUMNS = ("pair_id", "trace_id", "prompt_id")
STATS = ("mean", "q25", "median", "q75")
WORKSPACE = "workspace"


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def read_at(path: str, rev: str, repo: str = ".") -> pl.DataFrame:
    if rev == WORKSPACE:
        # The working copy as it is, edited or not yet committed; DVC's cache is not consulted.
        file = Path(repo) / path
        if not file.is_file():
            raise UserError(f"{path}@{WORKSPACE}: not found in the working copy (dvc checkout restores a tracked file)")
        data = file.read_bytes()
    else:
        import dvc.api

        try:
            with dvc.api.open(path, repo=repo, rev=rev, mode="rb") as fh:
                data = fh.read()
        except Exception as err:  # dvc raises many types (missing rev, path, cache); all are user errors here
            raise UserError(f"{path}@{rev}: {_first_line(err)}") from None
    try:
        return pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as err:
        raise UserError(f"{path}@{rev}: not a parquet file ({_first_line(err)})") from None


def _id_column(a: pl.DataFrame, b: pl.DataFrame, path: str) -> str:
    for col in ID_COLUMNS:
        if col in a.columns and col in b.columns and a[col].n_unique() == a.height and b[col].n_unique() == b.height:
            return col
    raise UserError(f"{path}: no unique id column ({', '.join(ID_COLUMNS)}) in both versions")


def _describe(s: pl.Series) -> dict:
    s = s.drop_nulls().cast(pl.Float64)
    if s.len() == 0:
        return {k: None for k in STATS}
    return {
        "mean": round(float(s.mean()), 4),
        "q25": round(float(s.quantile(0.25, "linear")), 4),
        "median": round(float(s.quantile(0.5, "linear")), 4),
        "q75": round(float(s.quantile(0.75, "linear")), 4),
    }


def _counts(df: pl.DataFrame, cols: list[str]) -> dict[str, int]:
    if not all(c in df.columns for c in cols) or df.height == 0:
        return {}
    keys = df.select(pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator=" vs "))
    return dict(sorted(keys.to_series().value_counts().iter_rows()))


def compare(a: pl.DataFrame, b: pl.DataFrame, path: str) -> dict:
    key = _id_column(a, b, path)
    ids_a, ids_b = set(a[key]), set(b[key])
    shared = [c for c in a.columns if c in b.columns and c != key]
    both = a.join(b, on=key, how="inner", suffix="__b")
    # Hashes compare every dtype (nested message lists included) the same way.
    changed_cols = {}
    changed_any = pl.Series([False] * both.height)
    for col in shared:
        diff = both.select(
            (pl.col(col).hash() != pl.col(f"{col}__b").hash()) | (pl.col(col).is_null() != pl.col(f"{col}__b").is_null())
        ).to_series()
        if diff.any():
            changed_cols[col] = int(diff.sum())
            changed_any = changed_any | diff
    report = {
        "path": path,
        "id": key,
        "rows": {"a": a.height, "b": b.height},
        "added": len(ids_b - ids_a),
        "removed": len(ids_a - ids_b),
        "changed": int(changed_any.sum()),
        "changed_columns": changed_cols,
        "columns_added": sorted(set(b.columns) - set(a.columns)),
        "columns_removed": sorted(set(a.columns) - set(b.columns)),
    }
    deltas = [c for c in a.columns if c.startswith("delta_") and c in b.columns]
    if deltas:
        report["deltas"] = {c: {"a": _describe(a[c]), "b": _describe(b[c])} for c in deltas}
        report["generators"] = {
            "a": _counts(a, ["chosen_generator", "rejected_generator"]),
            "b": _counts(b, ["chosen_generator", "rejected_generator"]),
        }
        report["directions"] = {"a": _counts(a, ["direction"]), "b": _counts(b, ["direction"])}
    return report


def _fmt(x) -> str:
    return "–" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def markdown(r: dict, rev_a: str, rev_b: str) -> str:
    lines = [
        f"## {r['path']}: {rev_a} → {rev_b}",
        "",
        f"Rows matched by `{r['id']}`: {r['rows']['a']} → {r['rows']['b']}; "
        f"**{r['added']} added, {r['removed']} removed, {r['changed']} changed**.",
    ]
    if r["changed_columns"]:
        lines += ["", "| column | rows changed |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in sorted(r["changed_columns"].items())]
    for what in ("columns_added", "columns_removed"):
        if r[what]:
            lines += ["", f"{what.replace('_', ' ').capitalize()}: {', '.join(r[what])}"]
    if "deltas" in r:
        lines += ["", "| delta | mean | q25 | median | q75 |", "|---|---|---|---|---|"]
        for col, ab in r["deltas"].items():
            cells = [f"{_fmt(ab['a'][s])} → {_fmt(ab['b'][s])}" for s in STATS]
            lines.append(f"| {col} | " + " | ".join(cells) + " |")
        for title, key in (("generators (chosen vs rejected)", "generators"), ("correctness direction", "directions")):
            names = sorted(set(r[key]["a"]) | set(r[key]["b"]))
            if names:
                lines += ["", f"| {title} | {rev_a} | {rev_b} |", "|---|---|---|"]
                lines += [f"| {n} | {r[key]['a'].get(n, 0)} | {r[key]['b'].get(n, 0)} |" for n in names]
    return "\n".join(lines) + "\n"


def revisions(args: list[str]) -> tuple[str, str, str]:
    """`[REV_A [REV_B]] PATH` -> (rev_a, rev_b, path). As `git diff` and `dvc metrics diff` do, a
    missing REV_A is HEAD and a missing REV_B is the workspace."""
    if not 1 <= len(args) <= 3:
        raise UserError(f"diff takes [REV_A [REV_B]] PATH, got {len(args)} arguments: {' '.join(args)}")
    *revs, path = args
    rev_a, rev_b = revs + ["HEAD", WORKSPACE][len(revs):]
    return rev_a, rev_b, path


def run(rev_a: str, rev_b: str, path: str, repo: Path = Path(".")) -> dict:
    return compare(read_at(path, rev_a, str(repo)), read_at(path, rev_b, str(repo)), path)
