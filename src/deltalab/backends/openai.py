"""Generation through any OpenAI-compatible chat API, async with bounded concurrency.

A request for `n` samples is sent once with the server's `n` and its own `seed` (vLLM and OpenAI
honour both per request), so a prompt's samples do not depend on the other prompts. A server that
returns fewer choices than asked (`transformers serve` ignores `n`) is topped up with one request
per missing sample, sample i seeded `derive_seed(seed, i)`. Greedy decoding is `temperature=0`.

Servers that split a reply into `reasoning_content` (or `reasoning`) and `content` — vLLM's
reasoning parsers — get both back in one text through `reasoning_format`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from deltalab.backends import Completion, Request, Sampling
from deltalab.errors import UserError
from deltalab.io import derive_seed

DEFAULT_REASONING = "<think>\n{reasoning}\n</think>\n\n{content}"


def reasoning_of(message) -> str | None:
    """The reasoning a server returned beside the content, under either field name vLLM has used."""
    for field in ("reasoning_content", "reasoning"):
        value = getattr(message, field, None)
        if value is None and message.model_extra:
            value = message.model_extra.get(field)
        if value:
            return value
    return None


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 8,
        extra_body: dict | None = None,
        timeout: float = 600.0,
        reasoning_format: str = DEFAULT_REASONING,
    ):
        from openai import AsyncOpenAI

        key = "EMPTY"
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise UserError(f"environment variable {api_key_env} (api_key_env) is not set")
        self.client = AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=5)
        self.model = model
        self.concurrency = concurrency
        self.extra_body = extra_body or {}
        self.reasoning_format = reasoning_format
        self.topped_up = 0
        """Samples the server did not return for `n` and that were requested one by one."""

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[Completion]:
        return asyncio.run(self._all(requests, sampling, progress))

    async def _all(self, requests, sampling, progress) -> list[Completion]:
        gate = asyncio.Semaphore(self.concurrency)

        async def call(messages: list[dict], seed: int, n: int) -> list[Completion]:
            async with gate:
                return await self._call(messages, seed, n, sampling)

        async def one(req: Request) -> list[Completion]:
            got = await call(req.messages, req.seed, req.n)
            for i in range(len(got), req.n):
                seed = derive_seed(req.seed, i)
                got += [c.with_seed(seed) for c in await call(req.messages, seed, 1)]
                self.topped_up += 1
            if progress:
                progress(req.n)
            return got[: req.n]

        try:
            return [c for group in await asyncio.gather(*(one(r) for r in requests)) for c in group]
        finally:
            await self.client.close()

    async def _call(self, messages: list[dict], seed: int, n: int, sampling: Sampling) -> list[Completion]:
        resp = await self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            n=n,
            extra_body=self.extra_body or None,
        )
        usage = resp.usage
        # usage counts all choices together: the prompt once, completions summed.
        per_choice = (usage.completion_tokens // max(len(resp.choices), 1)) if usage else 0
        out = []
        for choice in sorted(resp.choices, key=lambda c: c.index):
            content = choice.message.content or ""
            reasoning = reasoning_of(choice.message)
            text = self.reasoning_format.format(reasoning=reasoning, content=content) if reasoning else content
            out.append(Completion(
                text=text,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage and len(resp.choices) == 1 else per_choice,
                finish_reason="length" if choice.finish_reason == "length" else "stop",
            ))
        return out
