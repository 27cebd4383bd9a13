"""In-process batched generation with per-row seeded sampling.

Sampling uses the Gumbel-max trick inside a logits processor: each row draws its noise from its own
`torch.Generator`, seeded by the request, and greedy search then picks argmax(logits/T + noise),
which is an exact sample from the (top-p filtered) distribution. So a row's sample does not depend
on batch size or batch neighbours, and `runtime.generate.batch_size` stays a pure throughput knob.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.utils import logging as hf_logging

from deltalab.backends import ChatTemplateError, Completion, Request, Sampling
from deltalab.errors import UserError


class RowSeededSampler(LogitsProcessor):
    def __init__(self, seeds: Sequence[int], sampling: Sampling):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.sampling = sampling

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.sampling.temperature
        if self.sampling.top_p < 1.0:  # on CPU the same mask, bit for bit, without an argsort
            drop = _nucleus_drop_cpu(scores, self.sampling.top_p) if scores.device.type == "cpu" else None
            if drop is None:
                drop = _nucleus_drop(scores, self.sampling.top_p)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.empty(len(self.gens), vocab)
        for row, g in zip(uniform, self.gens):  # each row's own stream, as torch.rand(vocab, generator=g)
            torch.rand(vocab, generator=g, out=row)
        uniform = uniform.to(scores.device)
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
        return scores + gumbel


def _nucleus_drop(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Tokens outside the nucleus: ranked by score (descending), a token is dropped when the
    probability of the tokens ranked above it is >= top_p (so the first is always kept)."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= top_p
    return drop_sorted.scatter(-1, order, drop_sorted)


@functools.cache
def _sort_pool(pid: int, workers: int) -> ThreadPoolExecutor:
    """Threads for the row sorts; per process (a forked child has none of its parent's threads)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="deltalab-sort")


def _nucleus_drop_cpu(scores: torch.Tensor, top_p: float) -> torch.Tensor | None:
    """`_nucleus_drop`'s mask, bit for bit, without torch's argsort (on CPU the largest cost of a
    sampling step: ~60 ms for 32 x 49k scores on 2 threads). The sorted values are the same whoever
    sorts them (here numpy, rows split over torch's thread count: ~3x faster), so the probabilities
    and cumulative sums below are the very tensors `_nucleus_drop` computes. A row whose mask in
    sorted order is `kept` False then all True, with no tie across the cut, keeps exactly the scores
    >= its `kept`-th value. None (the caller uses `_nucleus_drop`) when a row is shaped otherwise,
    or on NaN or an infinite maximum."""
    flipped = np.negative(scores.detach().numpy(), order="C")  # ascending sort of -scores = descending of scores
    rows = flipped.shape[0]
    workers = min(torch.get_num_threads(), rows)
    if workers > 1:
        step = -(-rows // workers)
        pool = _sort_pool(os.getpid(), workers)  # numpy's sort releases the GIL
        list(pool.map(lambda a: flipped[a : a + step].sort(axis=-1), range(0, rows, step)))
    else:
        flipped.sort(axis=-1)
    if np.isnan(flipped[:, -1]).any() or not np.isfinite(flipped[:, 0]).all():  # numpy sorts NaN last
        return None
    sorted_scores = torch.from_numpy(flipped).neg_()
    probs = sorted_scores.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs >= top_p
    vocab = drop_sorted.shape[-1]
    dropped = drop_sorted.sum(-1)
    kept = vocab - dropped
    first_dropped = drop_sorted.to(torch.uint8).argmax(-1)  # 0 where none is dropped
    edge = sorted_scores.gather(-1, torch.stack([(kept - 1).clamp(min=0), kept.clamp(max=vocab - 1)], -1))
    cut = (kept > 0) & (first_dropped == kept) & (edge[:, 0] > edge[:, 1])
    if not bool(((dropped == 0) | cut).all()):
        return None
    return scores < edge[:, :1]


def _load(auto, model_path: str, what: str):
    """`auto.from_pretrained(model_path)`; a directory without its tokenizer or weights (or a hub id
    not in the offline cache) is a one-line UserError naming it."""
    try:
        return auto.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{model_path}: cannot load the {what} ({first})") from None


def chat_text(tok, messages: list[dict], model_path: str, add_generation_prompt: bool = True) -> str:
    """The model's chat template applied to `messages`; a template that rejects them (Gemma and
    others raise on a system turn) is a ChatTemplateError naming the model."""
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja raises TemplateError subclasses; templates raise what they like
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        roles = "/".join(m["role"] for m in messages)
        raise ChatTemplateError(f"{model_path}: its chat template rejects the messages ({roles}): {first}") from None


class TransformersBackend:
    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 64, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.tok = _load(AutoTokenizer, model_path, "tokenizer")
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = _load(AutoModelForCausalLM, model_path, "model").to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.model_path = model_path

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[Completion]:
        prompts = [chat_text(self.tok, r.messages, self.model_path) for r in requests]
        lengths = [len(self.tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        # Similar lengths together: less padding. Results do not depend on the grouping.
        order = sorted(range(len(requests)), key=lambda i: (lengths[i], i))
        out: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, completion in zip(idx, self._batch([prompts[i] for i in idx], [requests[i].seed for i in idx], sampling)):
                out[i] = completion
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _batch(self, prompts: list[str], seeds: list[int], sampling: Sampling) -> list[Completion]:
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        processors = LogitsProcessorList([] if sampling.greedy else [RowSeededSampler(seeds, sampling)])
        ids = self.model.generate(
            **enc,
            do_sample=False,
            num_beams=1,
            max_new_tokens=sampling.max_new_tokens,
            logits_processor=processors,
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        new = ids[:, enc["input_ids"].shape[1] :].tolist()
        prompt_tokens = enc["attention_mask"].sum(-1).tolist()
        result = []
        for row, n_prompt in zip(new, prompt_tokens):
            eos = self.tok.eos_token_id
            stop = eos in row
            tokens = row[: row.index(eos) + 1] if stop else row
            text = self.tok.decode(tokens, skip_special_tokens=True)
            result.append(Completion(text, int(n_prompt), len(tokens), "stop" if stop else "length"))
        return result
