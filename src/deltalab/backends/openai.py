"""Generation through any OpenAI-compatible chat API, async with bounded concurrency.

A request for `n` samples is sent once with the server's `n` and its own `seed` (vLLM and OpenAI
honour both per request), so a prompt's samples do not depend on the other prompts. A server that
returns fewer choices than asked (`transformers serve` ignores `n`) is topped up with one request
per missing sample, sample i seeded `derive_seed(seed, i)`. Greedy decoding is `temperature=0`.

Servers that split a reply into `reasoning_content` (or `reasoning`) and `content` — vLLM's
reasoning parsers — get both back in one text through `reasoning_format`.

Retries are ours (deltalab.retry, shared with the judge), so they are counted in `stats`: 429 / 5xx /
timeouts / connection errors / unparsable bodies are retried up to `max_retries` times with
exponential backoff and jitter, honouring Retry-After; every attempt carries `X-Deltalab-Attempt:
0.<attempt>`. A request that still fails raises `RequestFailed` (the other requests are cancelled):
the stage then stops without writing anything, and a rerun asks again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from deltalab.backends import Completion, Request, Sampling
from deltalab.errors import RequestFailed, UserError
from deltalab.io import derive_seed
from deltalab.retry import ERRORS, backoff, classify, kind

DEFAULT_REASONING = "<think>\n{reasoning}\n</think>\n\n{content}"
ATTEMPT_HEADER = "X-Deltalab-Attempt"
REASON_CHARS = 300


class MalformedReply(Exception):
    """A 200 reply that parsed as JSON but holds no choices."""


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
        max_retries: int = 6,
    ):
        from openai import AsyncOpenAI

        key = "EMPTY"
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise UserError(f"environment variable {api_key_env} (api_key_env) is not set")
        # max_retries=0: retries are ours, so they are counted.
        self.client = AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)
        self.secret = key if api_key_env else None
        self.timeout, self.max_retries = timeout, max_retries
        self.stats: dict = {"requests": 0, "retries": 0, "retry_reasons": {}}
        """HTTP requests sent, of which retries, and the retried failures by kind ('HTTP 429', 'timeout', ...)."""
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

        async def call(index: int, messages: list[dict], seed: int, n: int) -> list[Completion]:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                async with gate:
                    self.stats["requests"] += 1
                    try:
                        return await self._call(messages, seed, n, sampling, attempt)
                    except ERRORS as exc:
                        retryable, reason, wait = classify(exc, self.timeout)
                    except MalformedReply as exc:
                        retryable, reason, wait = True, f"malformed response ({exc})", None
                if not retryable or attempt == self.max_retries:
                    raise RequestFailed(index, self._redact(f"{reason} (after {attempt + 1} attempt{'s' * bool(attempt)})"))
                reasons = self.stats["retry_reasons"]
                reasons[kind(reason)] = reasons.get(kind(reason), 0) + 1
                await asyncio.sleep(wait if wait is not None else backoff(attempt))
            raise AssertionError("unreachable")

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

    def _redact(self, text: str) -> str:
        # One line; the key never appears (redacted before truncating, so no prefix survives a cut).
        text = " ".join(text.split())
        return (text.replace(self.secret, "***") if self.secret else text)[:REASON_CHARS]

    async def _call(self, messages: list[dict], seed: int, n: int, sampling: Sampling, attempt: int) -> list[Completion]:
        resp = await self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            n=n,
            extra_body=self.extra_body or None,
            extra_headers={ATTEMPT_HEADER: f"0.{attempt}"},
        )
        if not getattr(resp, "choices", None) or any(getattr(c, "message", None) is None for c in resp.choices):
            raise MalformedReply("no choices" if not getattr(resp, "choices", None) else "a choice without a message")
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
