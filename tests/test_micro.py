"""The micro-world pieces: trace format and checks, tokenizer, model save/load."""

from __future__ import annotations

import pytest

from deltalab.micro.tokenizer import build_tokenizer
from deltalab.micro.traces import check_trace, render_trace


def test_render_and_check_correct_trace():
    trace = render_trace("38 - 57 + 10")
    assert trace == "S1:38-57=-19\nS2:-19+10=-9\nA:-9"
    check = check_trace("38 - 57 + 10", trace)
    assert check.step_correct == [True, True] and check.format_ok and check.answer == "-9"
    assert check.step_accuracy == 1.0


def test_wrong_arithmetic_and_dropped_carry_are_per_step():
    # step 1 miscomputed; step 2 carries the wrong result correctly -> only step 1 is wrong
    assert check_trace("38 - 57 + 10", "S1:38-57=-18\nS2:-18+10=-8\nA:-8").step_correct == [False, True]
    # step 2 does not carry step 1's result
    assert check_trace("38 - 57 + 10", "S1:38-57=-19\nS2:-18+10=-8\nA:-8").step_correct == [True, False]
    # wrong operand from the problem
    assert check_trace("38 - 57 + 10", "S1:38-56=-18\nS2:-18+10=-8\nA:-8").step_correct == [False, True]


def test_missing_extra_and_garbage_steps_count_as_wrong():
    short = check_trace("1 + 2 + 3", "S1:1+2=3\nA:3")
    assert short.step_correct == [True, False] and short.step_accuracy == 0.5
    extra = check_trace("1 + 2", "S1:1+2=3\nS2:3+0=3\nA:3")
    assert extra.step_correct == [True, False]
    junk = check_trace("1 + 2", "hello\nA:3")
    assert junk.step_correct == [False] and not junk.format_ok and junk.answer == "3"
    assert not check_trace("1 + 2", "").format_ok


def test_negative_operands():
    trace = render_trace("-477 - -758 - 15")
    assert trace.splitlines()[0] == "S1:-477--758=281"
    assert check_trace("-477 - -758 - 15", trace).step_correct == [True, True]


def test_tokenizer_round_trip_and_chat_template(tmp_path):
    tok = build_tokenizer()
    text = "12 + 3 =\nS1:12+3=15\nA:15"
    assert tok.decode(tok(text)["input_ids"]) == text
    messages = [{"role": "user", "content": "12 + 3 ="}, {"role": "assistant", "content": "S1:12+3=15\nA:15"}]
    assert tok.apply_chat_template(messages, tokenize=False) == "12 + 3 =\nS1:12+3=15\nA:15<eos>"
    assert tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == "12 + 3 =\n"
    masked = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert sum(masked["assistant_masks"]) == len("S1:12+3=15\nA:15") + 1  # completion + EOS
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, PreTrainedTokenizerFast)
    assert again(text)["input_ids"] == tok(text)["input_ids"] and again.chat_template == tok.chat_template


def test_micro_model_loads_with_auto_classes(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny / "data/models/strong")
    tok = AutoTokenizer.from_pretrained(tiny / "data/models/strong")
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.vocab_size == len(tok)


def test_gpt2_family_trains_saves_and_generates(tmp_path):
    """The optional second architecture family (the family axis of the generator delta)."""
    from deltalab.backends import Request, Sampling
    from deltalab.backends.transformers import TransformersBackend
    from deltalab.micro import train as T

    tok = build_tokenizer()
    model = T.build_model("gpt2", 16, 1, 2, tok, 64)
    examples = [T.encode(tok, "1 + 2 =", render_trace("1 + 2"))] * 4
    T.train(model, examples, steps=3, batch_size=2, lr=1e-3, warmup=1, seed=0, pad_id=tok.pad_token_id)
    T.save(model, tok, tmp_path / "m")
    backend = TransformersBackend(str(tmp_path / "m"), batch_size=2)
    out = backend.generate([Request([{"role": "user", "content": "1 + 2 ="}], seed=s) for s in range(3)],
                           Sampling(max_new_tokens=8))
    assert len(out) == 3 and all(c.completion_tokens <= 8 and c.prompt_tokens == 8 for c in out)


def test_encode_all_matches_encode_one_by_one():
    from deltalab.micro import train as T

    tok = build_tokenizer()
    pairs = [(q, render_trace(q.removesuffix(" ="))) for q in ("1 + 2 =", "38 - 57 + 10 =", "5 - 9 - 1 + 4 + 7 =")]
    pairs.append(("what is\n{{ x }} <eos>?", "A:3"))  # newlines, template syntax and a special token verbatim
    assert T.encode_all(tok, pairs) == [T.encode(tok, q, c) for q, c in pairs]
    with pytest.raises(ValueError, match="placeholder"):
        T.encode_all(tok, [("\x00prompt\x00", "A:1")])
