"""The code a stage runs: every deltalab module its entry module imports, transitively, read from
the source (an `ast` walk, nothing is imported), plus the data files those modules declare in
`READS`. These are the stage's code dependencies in dvc.yaml and Snakemake.

Imports inside functions count (stages import their heavy parts lazily), and so do imports under
`if TYPE_CHECKING:` (a harmless over-approximation). A module that loads another by computed name
would hide it: deltalab never does.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import deltalab

PACKAGE = Path(deltalab.__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of a deltalab module, or None when `name` is not one (e.g. a function)."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def direct(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(deltalab modules `name` imports, data paths it reads) from its source."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    reads: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Assign) and node in tree.body:
            if any(isinstance(t, ast.Name) and t.id == "READS" for t in node.targets):
                reads = list(ast.literal_eval(node.value))
    modules = sorted({p for m in found if m.split(".")[0] == "deltalab" for p in _parents(m) if module_file(p)})
    return tuple(modules), tuple(str((path.parent / r).resolve()) for r in reads)


def closure(entries: list[str]) -> list[Path]:
    """Source files and declared data of `entries` and everything they import from deltalab, sorted."""
    seen: set[str] = set()
    todo = [p for e in entries for p in _parents(e)]
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        modules, reads = direct(name)
        files.add(module_file(name))
        for read in map(Path, reads):  # a folder stands for its files (Snakemake sees a file's edits)
            files.update(f for f in read.rglob("*") if f.is_file()) if read.is_dir() else files.add(read)
        todo.extend(modules)
    return sorted(files)


def relative(path: Path, root: Path) -> str:
    """`path` relative to the study's root when it lies under it (a checkout of the repository),
    else absolute (deltalab installed elsewhere)."""
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
