"""`deltalab validate` and the loader: every bad params file gets one line, exit 2, no traceback."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, TINY, deltalab

pytestmark = pytest.mark.integration  # every case runs the `deltalab` command


def write_variant(tmp_path, mutate) -> str:
    data = yaml.safe_load(TINY.read_text())
    mutate(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_valid_files_pass(tmp_path):
    for path in (ROOT / "params.yaml", TINY):
        proc = deltalab("validate", str(path), cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda d: d["prompts"].update(trian={"chain_sum": 3}), "prompts.trian", "Extra inputs"),
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs"),
        (lambda d: d["generators"]["weak"].update(n="many"), "generators.weak.n", "integer"),
        (lambda d: d["generators"]["weak"].update(n=-2), "generators.weak.n", "greater than or equal to 1"),
        (lambda d: d["micro_models"]["models"]["weak"].update(steps=1.5), "micro_models.models.weak.steps", "integer"),
        (lambda d: d["ablations"]["delta"].update(chosen="ghost"), "ablations.delta.chosen", "unknown generator 'ghost'"),
        (lambda d: d["generators"]["weak"].update(micro_model="ghost"), "generators.weak.micro_model", "unknown micro model"),
        (lambda d: d["prompts"]["train"].update(nope=3), "prompts.train.nope", "unknown task family 'nope'"),
        (
            lambda d: d["tasks"].update(local={"source": "file", "path": "missing.jsonl"}),
            "tasks.local.path",
            "file not found: missing.jsonl",
        ),
        (lambda d: d["runtime"].update(threads=0), "runtime.threads", "greater than or equal to 1"),
        (lambda d: d["generators"]["weak"].update(serve={"command": "vllm serve {model} --port {prot}"}),
         "generators.weak.serve", "command: unknown placeholder {prot}"),
        (lambda d: d["generators"]["weak"].update(serve={"command": "vllm serve {model}"}, backend="openai"),
         "generators.weak.serve", "needs {port}"),
        (lambda d: d["generators"]["weak"].update(serve={"command": "vllm serve {model} --port {port}"}),
         "generators.weak", "set `backend: openai`"),
        (lambda d: d["generators"]["weak"].update(backend="openai"), "generators.weak", "needs `base_url`"),
        (lambda d: d["judge"].update(backend="openai", model="m", base_url="http://x/v1",
                                     serve={"command": "vllm serve {model} --port {port}"}), "judge", "not both"),
        (lambda d: d["evaluate"].update(backend="openai", serve={"command": "x --port {port}"},
                                        reasoning_format="{reasoning}"), "evaluate.reasoning_format", "{content} must"),
    ],
)
def test_bad_params_one_line(tmp_path, mutate, key, words):
    path = write_variant(tmp_path, mutate)
    proc = deltalab("validate", path, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert lines[0].startswith(f"error: {path}: {key}: ")
    assert words in lines[0]


def test_broken_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed\n")
    proc = deltalab("validate", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = deltalab("validate", str(tmp_path / "nope.yaml"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "file not found" in proc.stderr


def test_stage_commands_reject_bad_params_too(tmp_path):
    path = write_variant(tmp_path, lambda d: d["generators"]["weak"].update(n=0))
    proc = deltalab("generate", "weak", "--params", path, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "generators.weak.n" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["generate", "ghost"], "unknown generator 'ghost' (defined: weak, strong)"),
        (["micro-models", "ghost"], "unknown micro model 'ghost'"),
    ],
)
def test_stage_commands_reject_undefined_names(tmp_path, args, words):
    (tmp_path / "params.yaml").write_text(TINY.read_text())
    proc = deltalab(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
