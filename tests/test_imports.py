"""Layering: stage modules are entry points. Only cli.py imports them; shared code lives outside
stages/. Read with the same import walk that gives each stage its code deps (deltalab.imports)."""

from __future__ import annotations

from deltalab import imports


def module_names() -> list[str]:
    return sorted("deltalab." + ".".join(p.relative_to(imports.PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                  for p in imports.PACKAGE.rglob("*.py"))


def test_only_the_cli_imports_stage_modules():
    offenders = [f"{name} imports {dep}" for name in module_names() if name != "deltalab.cli"
                 for dep in imports.direct(name)[0] if dep.startswith("deltalab.stages.")]
    assert not offenders, "stage modules imported outside cli.py: " + "; ".join(offenders)


def test_the_walk_sees_imports_inside_functions():
    # cli.py imports each stage inside its command function
    assert {"deltalab.stages.generate", "deltalab.stages.report"} <= set(imports.direct("deltalab.cli")[0])
