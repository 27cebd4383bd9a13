"""Layering: stage modules are entry points. Only cli.py imports them; shared code lives outside stages/."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deltalab"
# model_revision still lives in stages/generate.py; it moves out with the one-client change (issue 13).
PENDING = {("stages/train.py", "deltalab.stages.generate"), ("judge/local.py", "deltalab.stages.generate")}


def stage_imports(path: Path) -> set[str]:
    """The deltalab.stages.* modules `path` imports, at any depth (imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found.add(node.module)
            if node.module == "deltalab.stages":
                found |= {f"deltalab.stages.{a.name}" for a in node.names}
    return {n for n in found if n.startswith("deltalab.stages.")}


def test_only_the_cli_imports_stage_modules():
    offenders = [
        f"{rel} imports {name}"
        for path in sorted(SRC.rglob("*.py"))
        if (rel := path.relative_to(SRC).as_posix()) != "cli.py"
        for name in sorted(stage_imports(path))
        if (rel, name) not in PENDING
    ]
    assert not offenders, "stage modules imported outside cli.py: " + "; ".join(offenders)
