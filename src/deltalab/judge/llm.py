"""The served LLM judge (`judge.backend: openai`): rate traces through any OpenAI-compatible chat API
(deltalab.chat), cached by request content.

One row per trace, in input order, whatever the arrival order of responses. Each row asks once,
and again (up to `max_parse_retries` more times) while the reply is not a valid judgment; every
request is retried by deltalab.chat's policy (429 / 5xx / timeouts / connection errors, with
exponential backoff and jitter, honouring Retry-After). A row that still fails is kept with status
parse_error or request_error and its reason: never dropped, never imputed.

Every successful HTTP response goes to the SQLite cache (committed within 0.1 s), keyed by
everything that determines it (model, messages, sampling, response_format, extra_body, template
version, parse-retry index), so a rerun or a resumed run asks only for what is missing and
writes the same rows.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import polars as pl

from deltalab import chat
from deltalab.config import DIMENSIONS, Judge, Params
from deltalab.errors import UserError
from deltalab.judge import JUDGMENT_SCHEMA, LLM_COLUMNS, STATS, rubric, scores
from deltalab.judge.cache import Cached, ResponseCache, cache_key
from deltalab.progress import bar

CACHE_FILE = "judge.sqlite"


class NoLogprobs(UserError):
    """Probability scoring through a server that returns no log-probabilities."""


def request_body(cfg: Judge, messages: list[dict]) -> dict:
    """What is sent for `messages` (extra_body is merged in when sending)."""
    body = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if cfg.scoring == "probability":
        body |= {"logprobs": True, "top_logprobs": cfg.top_logprobs}
    elif cfg.structured_output:
        body["response_format"] = rubric.response_format()
    return body


class ServedJudge:
    """A Backend (deltalab.judge) over a server at `base_url`."""

    schema = JUDGMENT_SCHEMA | LLM_COLUMNS
    audited = True

    def __init__(self, params: Params, base_url: str | None):
        self.cfg, self.runtime = params.judge, params.runtime.judge
        self.base_url = base_url or self.cfg.base_url
        self.key = chat.api_key(self.cfg.api_key_env, "judge.api_key_env")
        self.rubric = rubric.load(self.cfg.template, self.cfg.template_text)
        self.label = f"openai:{self.cfg.model}"
        self.stats = dict.fromkeys(STATS, 0) | {"retry_reasons": {}}

    def judge(self, generator: str, traces: pl.DataFrame, steps: bool) -> list[dict]:
        items = list(zip(traces["question"], traces["gold_answer"], traces["completion"]))
        client = chat.ChatClient(self.base_url, self.key, self.cfg.timeout_s, self.runtime.concurrency,
                                 self.cfg.max_retries)
        rows = asyncio.run(_Run(self, client).all(items))
        chat.merge_stats(self.stats, client.stats)
        return rows


class _Run:
    """One judge call: its client, its cache connection, its per-key locks (all of one event loop)."""

    def __init__(self, judge: ServedJudge, client: chat.ChatClient):
        self.cfg, self.rubric, self.stats, self.client = judge.cfg, judge.rubric, judge.stats, client
        self.base_url, self.label = judge.base_url, judge.label
        self.concurrency = judge.runtime.concurrency
        self.cache = ResponseCache(Path(judge.runtime.cache_dir) / CACHE_FILE)
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def fetch(self, key: str, body: dict, parse_retry: int) -> tuple[Cached | None, str | None]:
        """The response for `key`: from the cache, else from the server (then cached); or a reason."""
        # One request per key at a time: duplicate traces wait and then hit the cache.
        async with self.locks[key]:
            if (hit := self.cache.get(key)) is not None:
                self.stats["cache_hits"] += 1
                return hit, None
            try:
                reply = await self.client.complete(body | (self.cfg.extra_body or {}), parse_retry)
            except chat.Failed as err:
                return None, err.reason
            # The judge asks for one choice; a reply without content is an empty answer (a parse error).
            choice = reply.choices[0]
            got = Cached(choice.content, reply.prompt_tokens, reply.completion_tokens,
                         json.dumps(choice.logprobs, sort_keys=True) if choice.logprobs else None)
            self.stats["prompt_tokens"] += got.prompt_tokens
            self.stats["completion_tokens"] += got.completion_tokens
            self.cache.put(key, got)
            return got, None

    async def row(self, question: str | None, answer: str | None, trace: str | None) -> dict:
        scoring = self.cfg.scoring
        body = request_body(self.cfg, self.rubric.messages(question, answer, trace, scoring))
        keyed = {**body, "extra_body": self.cfg.extra_body, "template_version": self.rubric.version}
        out = {"judge": self.label, "template_version": self.rubric.version, "status": "parse_error",
               "reason": None, **dict.fromkeys(DIMENSIONS), "rationale": None, "raw_response": None,
               "cache_key": None, "prompt_tokens": 0, "completion_tokens": 0, "scoring": scoring,
               **{f"{d}_expected": None for d in DIMENSIONS}, "score_mass": None}
        tries = self.cfg.max_parse_retries + 1
        for p in range(tries):
            # Parse retries resend the same request; only the retry index in the key differs.
            out["cache_key"] = key = cache_key({**keyed, "parse_retry": p})
            got, error = await self.fetch(key, body, p)
            if got is None:
                return out | {"status": "request_error", "reason": error}
            # Tokens come from stored usage, so a cached row equals a fresh one.
            out["raw_response"] = got.text
            out["prompt_tokens"] += got.prompt_tokens
            out["completion_tokens"] += got.completion_tokens
            try:
                if scoring == "probability":
                    if got.logprobs is None:
                        raise NoLogprobs(f"judge.scoring: probability needs top_logprobs in the replies, and "
                                         f"{self.base_url} returned none (transformers serve has none: use "
                                         "scoring: json with it, or backend: transformers); nothing written")
                    dists = scores.from_logprobs(got.text, json.loads(got.logprobs))
                    return out | {"status": "ok", "reason": None, **scores.row(dists),
                                  "score_mass": round(min(d.mass for d in dists.values()), 4)}
                values, rationale = rubric.parse(got.text)
            except rubric.ParseFailure as err:
                out["reason"] = self.client.redact(str(err) + (f" (after {tries} responses)" if tries > 1 else ""))
                continue
            return out | {"status": "ok", "reason": None, **values, "rationale": rationale}
        return out

    async def all(self, items: list[tuple]) -> list[dict]:
        progress = bar(len(items), "judge")
        results: list[dict | None] = [None] * len(items)
        todo = iter(enumerate(items))

        async def worker() -> None:
            for i, item in todo:
                results[i] = await self.row(*item)
                progress.update(1)

        # A bounded pool, not a coroutine per row: a row is rendered and keyed just before its turn,
        # so the first request leaves at once (not after all rows are rendered) and memory does not
        # grow with the row count. Twice the concurrency keeps every request slot busy while some
        # rows wait out a retry backoff (the client's gate, not the pool, bounds the requests in flight).
        workers = min(len(items), 2 * self.concurrency)
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
            return results
        finally:
            progress.close()
            await self.client.close()
            self.cache.close()
