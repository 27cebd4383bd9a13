"""Task sources: the rows of one task family in a seeded order, and the id of a prompt.

A family's rows come from reasoning-gym, a local JSONL/parquet file or a Hugging Face dataset. The
prompts stage draws its splits from them; the micro models draw their training problems from them too
(and leave out every eval question by its prompt id).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from deltalab.config import Task
from deltalab.errors import UserError
from deltalab.io import content_id


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
