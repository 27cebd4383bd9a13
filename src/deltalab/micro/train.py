"""Train tiny causal LMs from scratch on step-by-step traces (the micro-world's generators)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def build_model(arch: str, hidden: int, layers: int, heads: int, tok: PreTrainedTokenizerFast, max_len: int):
    common = dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        cfg = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 4,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_len,
            **common,
        )
        return LlamaForCausalLM(cfg)
    # No dropout, as in the llama models: GPT2Config's default 0.1 kept a 64-wide model near chance
    # (greedy 0.03 after 1200 steps, docs/study.md).
    cfg = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_len,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    return GPT2LMHeadModel(cfg)


def encode(tok: PreTrainedTokenizerFast, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of the chat-formatted example and the index where the completion starts."""
    head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    return tok(full)["input_ids"], len(tok(head)["input_ids"])


_PROMPT, _COMPLETION = "\x00prompt\x00", "\x00completion\x00"


def encode_all(tok: PreTrainedTokenizerFast, examples: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """`encode` for many (prompt, completion) pairs, ~3x faster: the chat template is rendered once with
    placeholders and filled by plain substitution (it copies message contents verbatim), and the texts
    are tokenized in one batch. tests/test_micro.py checks it against `encode`."""
    if any(_PROMPT in p or _COMPLETION in p or _COMPLETION in c for p, c in examples):
        raise ValueError("a training example contains the template placeholder")
    head = tok.apply_chat_template([{"role": "user", "content": _PROMPT}], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(
        [{"role": "user", "content": _PROMPT}, {"role": "assistant", "content": _COMPLETION}], tokenize=False
    )
    heads = tok([head.replace(_PROMPT, p) for p, _ in examples])["input_ids"]
    fulls = tok([full.replace(_PROMPT, p).replace(_COMPLETION, c) for p, c in examples])["input_ids"]
    return [(ids, len(h)) for ids, h in zip(fulls, heads)]


def batches(examples: Sequence[tuple[list[int], int]], batch_size: int, pad_id: int, rng: random.Random):
    """Endless shuffled batches: right-padded ids and labels masked outside the completion."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        chosen, order = order[:batch_size], order[batch_size:]
        width = max(len(examples[i][0]) for i in chosen)
        ids = torch.full((batch_size, width), pad_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, i in enumerate(chosen):
            seq, start = examples[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, start : len(seq)] = torch.tensor(seq[start:])
            mask[row, : len(seq)] = 1
        yield ids, mask, labels


def train(
    model,
    examples: Sequence[tuple[list[int], int]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    pad_id: int,
    on_step: Callable[[int, float], None] | None = None,
):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def schedule(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    data = batches(examples, batch_size, pad_id, random.Random(seed))
    for step in range(steps):
        ids, mask, labels = next(data)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_step:
            on_step(step, loss.item())
    model.eval()
    return model


def save(model, tok, out: Path) -> None:
    hf_logging.disable_progress_bar()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    model.generation_config.save_pretrained(out)
