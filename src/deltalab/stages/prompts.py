"""prompts: build the train, in-domain eval and out-of-domain eval prompt tables.

Eval splits are drawn first and every train prompt whose `prompt_id` (a hash of the question) appears
in an eval split is skipped, so train and eval never overlap.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from deltalab.config import Params, Task
from deltalab.errors import UserError
from deltalab.io import content_id, derive_seed, write_json, write_parquet

SPLITS = ("eval_ood", "eval_id", "train")  # drawing order: eval first, train excludes them
SCHEMA = {
    "prompt_id": pl.String,
    "split": pl.String,
    "family": pl.String,
    "source": pl.String,
    "source_index": pl.Int64,
    "question": pl.String,
    "answer": pl.String,
    "metadata": pl.String,
    "verifier": pl.String,
}


def prompt_id(question: str) -> str:
    return content_id("prompt", question)


def read_file_rows(path: Path) -> list[dict]:
    """Rows of a JSONL or parquet prompt file; a malformed row is a UserError naming file and line."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        missing = {"question", "answer"} - set(df.columns)
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = df.to_dicts()
        where = "row"
    else:
        rows, where = [], "line"
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:line {n}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{n}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object")
            rows.append(row | {"_line": n})
    if not rows:
        raise UserError(f"{path}: no prompt rows (the file is empty)")
    for i, row in enumerate(rows, 1):
        n = row.pop("_line", i)
        for key in ("question", "answer"):
            if not isinstance(row.get(key), (str, int, float)) or isinstance(row.get(key), bool) or str(row[key]).strip() == "":
                raise UserError(f"{path}:{where} {n}: `{key}` must be a non-empty string or number")
        row["_line"] = n
    return rows


def hf_rows(family: str, task: Task, seed: int) -> Iterator[dict]:
    """Rows of a Hugging Face dataset (hub id at a pinned revision, or a local dataset directory) in
    a seeded order."""
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    try:
        ds = load_dataset(task.dataset, task.subset, revision=task.revision, split=task.split)
    except Exception as err:  # datasets raises many kinds (offline, missing split, bad config)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"tasks.{family}: cannot load dataset {task.dataset!r} ({type(err).__name__}: {first})") from None
    wanted = [task.question_field, task.answer_field, *task.keep_fields]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise UserError(f"tasks.{family}: dataset {task.dataset!r} has no column {missing[0]!r} "
                        f"(columns: {', '.join(ds.column_names)})")
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    ds = ds.select_columns(wanted)
    source = f"hf:{task.dataset}" + (f"@{task.revision}" if task.revision else "") + f"/{task.split}"
    for i in order:
        row = ds[i]
        question, answer = row[task.question_field], row[task.answer_field]
        if question is None or answer is None or str(question).strip() == "":
            continue
        yield dict(source=source, source_index=i, question=str(question), answer=str(answer),
                   metadata=json.dumps({k: row[k] for k in task.keep_fields}, sort_keys=True, default=str))


def candidates(family: str, task: Task, seed: int, want: int, base: Path) -> Iterator[dict]:
    """Prompt rows of one family in a seeded order (more than `want`, to survive exclusions)."""
    if task.source == "hf":
        yield from hf_rows(family, task, seed)
        return
    if task.source == "file":
        rows = read_file_rows(base / task.path)
        random.Random(seed).shuffle(rows)
        for row in rows:
            extra = {k: v for k, v in row.items() if k not in ("question", "answer", "_line")}
            yield dict(
                source=task.path,
                source_index=row["_line"],
                question=str(row["question"]),
                answer=str(row["answer"]),
                metadata=json.dumps(extra, sort_keys=True, default=str),
            )
        return
    import reasoning_gym as rg

    size = max(4 * want, want + 1000)
    try:
        ds = rg.create_dataset(task.dataset, seed=seed, size=size, **task.config)
    except Exception as err:  # reasoning-gym raises assorted errors for bad configs
        raise UserError(f"tasks.{family}: reasoning-gym rejected the dataset config ({err})") from None
    for i in range(size):
        entry = ds[i]
        meta = entry["metadata"]
        question = task.question_format.format(**meta) if task.question_format else entry["question"]
        yield dict(
            source=f"reasoning_gym:{task.dataset}",
            source_index=i,
            question=question,
            answer=str(entry["answer"]),
            metadata=json.dumps(meta, sort_keys=True, default=list),
        )


def build(params: Params, base: Path = Path(".")) -> dict[str, pl.DataFrame]:
    seen: set[str] = set()
    tables = {}
    for split in SPLITS:
        rows = []
        for family, want in getattr(params.prompts, split).items():
            task = params.tasks[family]
            got = 0
            for row in candidates(family, task, derive_seed(params.prompts.seed, split, family), want, base):
                pid = prompt_id(row["question"])
                if pid in seen:
                    continue
                seen.add(pid)
                rows.append(dict(prompt_id=pid, split=split, family=family, verifier=task.verifier_name, **row))
                got += 1
                if got == want:
                    break
            if got < want:
                raise UserError(f"prompts.{split}.{family}: asked for {want} prompts, only {got} distinct ones available")
        tables[split] = pl.DataFrame(rows, schema=SCHEMA)
    return tables


def run(params: Params, out_dir: Path, metrics_path: Path | None = None) -> dict[str, pl.DataFrame]:
    tables = build(params)
    for split, df in tables.items():
        write_parquet(df, out_dir / f"{split}.parquet")
    ids = {split: set(df["prompt_id"]) for split, df in tables.items()}
    summary = {
        "rows": {split: df.height for split, df in tables.items()},
        "families": {split: dict(sorted(df["family"].value_counts().iter_rows())) for split, df in tables.items()},
        "overlap_train_eval_id": len(ids["train"] & ids["eval_id"]),
        "overlap_train_eval_ood": len(ids["train"] & ids["eval_ood"]),
    }
    if metrics_path:
        write_json(summary, metrics_path)
    return tables
