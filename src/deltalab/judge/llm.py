"""The LLM judge: rate traces through any OpenAI-compatible chat API, cached by request content.

One row per trace, in input order, whatever the arrival order of responses. Each row asks once,
and again (up to `max_parse_retries` more times) while the reply is not a valid judgment; every
request is retried on 429 / 5xx / timeouts / connection errors with exponential backoff and jitter
(honouring Retry-After). A row that still fails is kept with status parse_error or request_error
and its reason: never dropped, never imputed.

Every successful HTTP response goes to the SQLite cache (committed within 0.1 s), keyed by
everything that determines it (model, messages, sampling, response_format, extra_body, template
version, parse-retry index), so a rerun or a resumed run asks only for what is missing and
writes the same rows.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path

import polars as pl

from deltalab.config import DIMENSIONS, Judge, RuntimeJudge
from deltalab.errors import UserError
from deltalab.judge import rubric, scores
from deltalab.judge.cache import Cached, ResponseCache, cache_key
from deltalab.judge.client import ChatClient, RequestError
from deltalab.progress import bar

CACHE_FILE = "judge.sqlite"
ATTEMPT_HEADER = "X-Deltalab-Attempt"
"""`<parse retry>.<transport attempt>` on every request, so a server or proxy can tell retries apart."""
REASON_CHARS = 300


def _api_key(cfg: Judge) -> str:
    if cfg.api_key_env is None:
        return "EMPTY"
    key = os.environ.get(cfg.api_key_env, "")
    if not key:
        raise UserError(f"judge.api_key_env: environment variable {cfg.api_key_env} is not set")
    return key


class NoLogprobs(UserError):
    """Probability scoring through a server that returns no log-probabilities."""


class _Judge:
    def __init__(self, cfg: Judge, runtime: RuntimeJudge, template: rubric.Rubric, api_key: str, stats: dict):
        # Retries are ours (below), so they are counted and keyed per attempt.
        self.client = ChatClient(cfg.base_url, api_key, cfg.timeout_s, runtime.concurrency)
        self.cache = ResponseCache(Path(runtime.cache_dir) / CACHE_FILE)
        self.concurrency = runtime.concurrency
        self.gate = asyncio.Semaphore(runtime.concurrency)
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.cfg, self.rubric, self.stats = cfg, template, stats
        self.secret = api_key if api_key != "EMPTY" else None
        self.response_format = rubric.response_format() if cfg.structured_output else None

    def _redact(self, text: str) -> str:
        # Redact before truncating, so no prefix of the key survives a cut.
        text = text.replace(self.secret, "***") if self.secret else text
        return text[:REASON_CHARS]

    def body(self, messages: list[dict]) -> dict:
        c = self.cfg
        body = {"model": c.model, "messages": messages, "temperature": c.temperature,
                "max_tokens": c.max_tokens, "seed": c.seed}
        if c.scoring == "probability":
            body |= {"logprobs": True, "top_logprobs": c.top_logprobs}
        elif self.response_format:
            body["response_format"] = self.response_format
        return body

    async def fetch(self, key: str, body: dict, parse_retry: int) -> tuple[Cached | None, str | None]:
        """The response for `key`: from the cache, else from the server (then cached); or a reason."""
        # One request per key at a time: duplicate traces wait and then hit the cache.
        async with self.locks[key]:
            if (hit := self.cache.get(key)) is not None:
                self.stats["cache_hits"] += 1
                return hit, None
            for attempt in range(self.cfg.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                async with self.gate:
                    self.stats["requests"] += 1
                    try:
                        got = await self.client.complete(
                            body | (self.cfg.extra_body or {}), {ATTEMPT_HEADER: f"{parse_retry}.{attempt}"})
                    except RequestError as err:
                        retryable, reason, wait = err.retryable, err.reason, err.wait
                    else:
                        self.stats["prompt_tokens"] += got.prompt_tokens
                        self.stats["completion_tokens"] += got.completion_tokens
                        self.cache.put(key, got)
                        return got, None
                if not retryable or attempt == self.cfg.max_retries:
                    return None, self._redact(f"{reason} (after {attempt + 1} attempt{'s' * bool(attempt)})")
                from deltalab.retry import backoff  # here only: it imports the openai SDK (~0.4 s of start-up)

                await asyncio.sleep(wait if wait is not None else backoff(attempt))
        raise AssertionError("unreachable")

    async def row(self, question: str | None, answer: str | None, trace: str | None) -> dict:
        scoring = self.cfg.scoring
        body = self.body(self.rubric.messages(question, answer, trace, scoring))
        keyed = {**body, "extra_body": self.cfg.extra_body, "template_version": self.rubric.version}
        out = {"judge": f"openai:{self.cfg.model}", "template_version": self.rubric.version, "status": "parse_error",
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
                                         f"{self.cfg.base_url} returned none (transformers serve has none: use "
                                         "scoring: json with it, or backend: transformers); nothing written")
                    dists = scores.from_logprobs(got.text, json.loads(got.logprobs))
                    return out | {"status": "ok", "reason": None, **scores.row(dists),
                                  "score_mass": round(min(d.mass for d in dists.values()), 4)}
                values, rationale = rubric.parse(got.text)
            except rubric.ParseFailure as err:
                out["reason"] = self._redact(str(err) + (f" (after {tries} responses)" if tries > 1 else ""))
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
        # rows wait out a retry backoff (the gate, not the pool, bounds the requests in flight).
        workers = min(len(items), 2 * self.concurrency)
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
            return results
        finally:
            progress.close()
            await self.client.close()
            self.cache.close()


def judge_traces(traces: pl.DataFrame, cfg: Judge, runtime: RuntimeJudge, stats: dict) -> list[dict]:
    """One judgment dict per row of `traces` (same order); updates `stats` in place."""
    template = rubric.load(cfg.template, cfg.template_text)
    api_key = _api_key(cfg)
    items = list(zip(traces["question"], traces["gold_answer"], traces["completion"]))
    for k in ("requests", "cache_hits", "retries", "failures", "prompt_tokens", "completion_tokens"):
        stats.setdefault(k, 0)
    rows = asyncio.run(_Judge(cfg, runtime, template, api_key, stats).all(items))
    stats["failures"] += sum(r["status"] != "ok" for r in rows)
    return rows
