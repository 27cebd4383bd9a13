"""Generation through any OpenAI-compatible chat API (deltalab.chat), async with bounded concurrency.

A request for `n` samples is sent once with the server's `n` and its own `seed` (vLLM and OpenAI
honour both per request), so a prompt's samples do not depend on the other prompts. A server that
returns fewer choices than asked (`transformers serve` ignores `n`) is topped up with one request
per missing sample, sample i seeded `derive_seed(seed, i)`. Greedy decoding is `temperature=0`.

Servers that split a reply into `reasoning_content` (or `reasoning`) and `content` — vLLM's
reasoning parsers — get both back in one text through `reasoning_format`.

Requests are retried by deltalab.chat's policy (the judge's too) and counted in `stats`. A request
that still fails raises `RequestFailed` (the other requests are cancelled): the stage then stops
without writing anything, and a rerun asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from deltalab.backends import Completion, Request, Sampling
from deltalab.chat import ChatClient, Failed, Reply
from deltalab.config import RuntimeGenerate
from deltalab.errors import RequestFailed
from deltalab.io import derive_seed


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, api_key: str, runtime: RuntimeGenerate,
                 extra_body: dict | None, reasoning_format: str):
        self.client = ChatClient(base_url, api_key, runtime.timeout_s, runtime.concurrency, runtime.max_retries)
        self.stats = self.client.stats
        """HTTP requests sent, of which retries, and the retried failures by kind ('HTTP 429', 'timeout', ...)."""
        self.model = model
        self.extra_body = extra_body or {}
        self.reasoning_format = reasoning_format
        self.topped_up = 0
        """Samples the server did not return for `n` and that were requested one by one."""

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, progress: Callable[[int], None] | None = None
    ) -> list[Completion]:
        return asyncio.run(self._all(requests, sampling, progress))

    async def _all(self, requests, sampling, progress) -> list[Completion]:
        async def call(index: int, messages: list[dict], seed: int, n: int) -> list[Completion]:
            try:
                reply = await self.client.complete(self._body(messages, seed, n, sampling))
            except Failed as err:
                raise RequestFailed(index, err.reason) from None
            return self._completions(reply)

        async def one(index: int, req: Request) -> list[Completion]:
            got = await call(index, req.messages, req.seed, req.n)
            for i in range(len(got), req.n):
                seed = derive_seed(req.seed, i)
                got += [c.with_seed(seed) for c in await call(index, req.messages, seed, 1)]
                self.topped_up += 1
            if progress:
                progress(req.n)
            return got[: req.n]

        try:
            # A task group: the first request that fails for good cancels the others.
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i, r)) for i, r in enumerate(requests)]
        except ExceptionGroup as err:
            failed = [e for e in err.exceptions if isinstance(e, RequestFailed)]
            if len(failed) < len(err.exceptions):
                raise
            raise min(failed, key=lambda e: e.index) from None
        finally:
            await self.client.close()
        return [c for task in tasks for c in task.result()]

    def _body(self, messages: list[dict], seed: int, n: int, sampling: Sampling) -> dict:
        return {"model": self.model, "messages": messages,
                "temperature": 0.0 if sampling.greedy else sampling.temperature,
                "top_p": 1.0 if sampling.greedy else sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "seed": seed, "n": n} | self.extra_body

    def _completions(self, reply: Reply) -> list[Completion]:
        # usage counts all choices together: the prompt once, completions summed.
        many = len(reply.choices) > 1
        per_choice = reply.completion_tokens // len(reply.choices)
        out = []
        for choice in reply.choices:
            text = choice.content
            if choice.reasoning:
                text = self.reasoning_format.format(reasoning=choice.reasoning, content=choice.content)
            out.append(Completion(text=text, prompt_tokens=reply.prompt_tokens,
                                  completion_tokens=per_choice if many else reply.completion_tokens,
                                  finish_reason="length" if choice.finish_reason == "length" else "stop"))
        return out
