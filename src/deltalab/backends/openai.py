"""Generation through any OpenAI-compatible chat API, async with bounded concurrency.

Each request is sent on its own with its own `seed` (vLLM and OpenAI honour it per request), so a
row's sample does not depend on the other rows. Greedy decoding is `temperature=0`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from deltalab.backends import Completion, Request, Sampling
from deltalab.errors import UserError


class OpenAIBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 8,
        extra_body: dict | None = None,
        timeout: float = 600.0,
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

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[Completion]:
        return asyncio.run(self._all(requests, sampling, progress))

    async def _all(self, requests, sampling, progress) -> list[Completion]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(req: Request) -> Completion:
            async with gate:
                c = await self._one(req, sampling)
            if progress:
                progress(1)
            return c

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await self.client.close()

    async def _one(self, req: Request, sampling: Sampling) -> Completion:
        resp = await self.client.chat.completions.create(
            model=self.model,
            messages=req.messages,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=req.seed,
            n=1,
            extra_body=self.extra_body or None,
        )
        choice = resp.choices[0]
        usage = resp.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )
