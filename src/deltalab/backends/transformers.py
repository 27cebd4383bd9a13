"""In-process batched generation with per-row seeded sampling.

Sampling uses the Gumbel-max trick inside a logits processor: each row draws its noise from its own
`torch.Generator`, seeded by the request, and greedy search then picks argmax(logits/T + noise),
which is an exact sample from the (top-p filtered) distribution. So a row's sample does not depend
on batch size or batch neighbours, and `runtime.generate.batch_size` stays a pure throughput knob.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
        if self.sampling.top_p < 1.0:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop_sorted = cum - sorted_scores.softmax(-1) >= self.sampling.top_p  # keep the first token always
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.gens]).to(scores.device)
        gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
        return scores + gumbel


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
