"""The stage table (deltalab.pipeline) and what is derived from it: dvc.yaml, code deps, CLI paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, TINY
from deltalab import dvcyaml, paths, pipeline
from deltalab.config import load_params

CONFIGS = ["params.yaml", "tests/tiny/params.yaml", "configs/smol.yaml", "configs/paper.yaml"]


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def code_of(stage: str) -> set[str]:
    return set(pipeline.code(pipeline.BY_NAME[stage], ROOT))


def test_the_committed_dvc_yaml_is_the_table_s(at_root):
    assert (ROOT / "dvc.yaml").read_text() == dvcyaml.render("params.yaml"), \
        "dvc.yaml is out of date: run `deltalab dvc-yaml`"


def test_code_deps_follow_the_imports():
    for stage in ("generate", "evaluate", "evaluate_base"):
        assert "src/deltalab/verify.py" in code_of(stage), stage
    for stage in ("prompts", "micro_models", "pairs", "report"):
        assert "src/deltalab/verify.py" not in code_of(stage), stage
    # every stage takes its defaults from config.py: a changed default reruns it under both tools
    for stage in pipeline.STAGES:
        assert {"src/deltalab/config.py", f"src/deltalab/stages/{stage.entry[0].rsplit('.', 1)[1]}.py"} <= code_of(stage.name)
    # the rubric templates the judge renders are its code too
    assert {"src/deltalab/judge/templates/rubric_v1.jinja", "src/deltalab/judge/templates/rubric_short.jinja"} <= code_of("judge")
    assert not any(p.startswith("src/deltalab/judge/") for p in code_of("generate"))


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_renders_a_complete_dvc_yaml(config, at_root):
    p = load_params(config)
    doc = yaml.safe_load(dvcyaml.render(config))["stages"]
    names = {name.split("-")[0] for name in doc}
    expected = {s.name for s in pipeline.STAGES if s.keys(p)}
    assert names == expected
    for name, stage in doc.items():
        body = stage.get("do", stage)
        assert f"--params {config}" in body["cmd"]
        params = body.get("params", [])
        if config != "params.yaml" and params:
            assert list(params[0]) == [config]  # params deps read the study's own file


def test_hub_models_are_params_deps_not_files(at_root):
    doc = yaml.safe_load(dvcyaml.render("configs/paper.yaml"))["stages"]
    gen = doc["generate"]["do"]
    assert not any(d.startswith("data/models") or "${item" in d for d in gen["deps"])
    assert "generators.${item}" in gen["params"][0]["configs/paper.yaml"]  # model id and revision live there
    assert "student" in doc["train"]["do"]["params"][0]["configs/paper.yaml"]


def test_jobs_of_different_shapes_become_stages_of_their_own(tmp_path, monkeypatch):
    text = TINY.read_text().replace(
        "generators:\n", "generators:\n  hub: {model: org/some-model, backend: openai, base_url: 'http://127.0.0.1:9/v1', scale: '7B'}\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    doc = yaml.safe_load(dvcyaml.render("params.yaml"))["stages"]
    assert "generate" not in doc
    assert {"generate-hub", "generate-weak", "generate-strong"} <= set(doc)
    assert "data/models/weak" in doc["generate-weak"]["deps"]
    assert not any(d.startswith("data/models") for d in doc["generate-hub"]["deps"])


def test_cli_defaults_are_the_pipeline_s_paths():
    assert pipeline.default("generate", "--out", "g") == Path("data/traces/g.parquet")
    assert pipeline.default("judge", "--out-dir") == Path(paths.JUDGMENTS_DIR)
    assert pipeline.default("evaluate", "--base") == Path("data/eval/base.parquet")
    outs = pipeline.outputs(load_params(TINY))
    assert "data/traces/weak.greedy.parquet" in outs and "data/judgments/strong.parquet" in outs


@pytest.mark.integration
def test_check_fails_on_a_stale_dvc_yaml_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(TINY.read_text())
    run = lambda *a: subprocess.run([str(BIN / "deltalab"), "dvc-yaml", *a], cwd=tmp_path,  # noqa: E731
                                    capture_output=True, text=True)
    assert run("--check").stderr == ("error: dvc.yaml: out of date with params.yaml and the stage table "
                                     "(run `deltalab dvc-yaml` to regenerate it)\n")
    assert run().returncode == 0
    assert run("--check").returncode == 0
    (tmp_path / "params.yaml").write_text(TINY.read_text().replace("ablations:\n", "ablations:\n  extra: {chosen: strong, rejected: weak}\n", 1))
    proc = run("--check")
    assert proc.returncode == 2 and "out of date" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize("config", CONFIGS)
def test_dvc_reads_every_generated_dvc_yaml(config, tmp_path):
    """DVC itself parses the file: stage names, foreach expansion, params files."""
    for name in ("params.yaml", "configs/smol.yaml", "configs/paper.yaml", "tests/tiny/params.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([str(BIN / "deltalab"), "dvc-yaml", "--params", config], cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.run([str(BIN / "dvc"), "stage", "list", "--all"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    p = load_params(ROOT / config)
    for stage in pipeline.STAGES:
        for key in stage.keys(p):
            assert (f"{stage.name}@{key}" if stage.each else stage.name) in listed or f"{stage.name}-{key}" in listed
