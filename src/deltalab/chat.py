"""The one OpenAI-compatible chat client (POST /chat/completions over aiohttp) and its retry policy,
used by generation and evaluation (backends/openai.py) and by the served LLM judge (judge/llm.py).

Why aiohttp, not the openai SDK: the judge sends thousands of small requests and needs back only the
reply's text, token usage and log-probabilities. The SDK spends 1-2.5 ms of CPU per request on request
building, its connection pool (which scans every pooled connection per request) and response models;
aiohttp with a plain JSON body spends ~0.25 ms (bench/judge_throughput.py). On 2 cores that CPU, not
the server, is what limited the judge at high concurrency.

The retry policy (tenacity): retried are 429, 5xx, timeouts, connection errors (refused, reset, a
body cut short) and 200 replies that are not a JSON object with choices, up to `max_retries` times;
other statuses are not (a wrong key or model does not heal by waiting). Before retry k the client
waits the larger of the server's Retry-After and an exponential backoff with jitter (so clients that
failed together do not retry together). Every attempt carries `X-Deltalab-Attempt: <resend>.<attempt>`
(`resend`: the judge's parse retry), so a server or proxy can tell retries apart. `stats` counts
requests sent, retries, and the retried failures by kind ({"HTTP 429": 3, "timeout": 1}); a request
that still fails raises `Failed` with a one-line reason in which the API key never appears.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from deltalab.errors import UserError

ATTEMPT_HEADER = "X-Deltalab-Attempt"
REASON_CHARS = 300
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0


def api_key(env: str | None, where: str) -> str:
    """The key from the environment variable named at `where` (e.g. `judge.api_key_env`); "EMPTY"
    (what local servers accept) when none is named."""
    if env is None:
        return "EMPTY"
    key = os.environ.get(env, "")
    if not key:
        raise UserError(f"{where}: environment variable {env} is not set")
    return key


class RequestError(Exception):
    """One failed attempt: whether to retry it, the reason, and the server's Retry-After seconds."""

    def __init__(self, retryable: bool, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.retryable, self.reason, self.wait = retryable, reason, wait


class Failed(Exception):
    """A request that failed for good (after its retries); `reason` is one line, the key redacted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Choice:
    content: str
    reasoning: str | None  # `reasoning_content` or `reasoning` (vLLM's reasoning parsers), if any
    finish_reason: str | None
    logprobs: list | None  # `logprobs.content`: one entry per generated token, with `top_logprobs`


@dataclass(frozen=True)
class Reply:
    choices: list[Choice]  # in `index` order
    prompt_tokens: int
    completion_tokens: int  # all choices together


def retry_after(headers) -> float | None:
    """Seconds a 429/5xx asks us to wait (Retry-After: seconds or HTTP date; retry-after-ms)."""
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(max(float(ms) / 1000, 0.0), RETRY_AFTER_CAP_S)
        if (value := headers.get("retry-after")) is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)
    except (TypeError, ValueError, OverflowError):
        return None


def wait(state: RetryCallState) -> float:
    """Seconds before the next attempt: the server's Retry-After, but at least the exponential
    backoff (0.5 s, 1 s, 2 s, ... up to 30 s) times a jitter in [0.5, 1]."""
    err = state.outcome.exception() if state.outcome else None
    asked = err.wait if isinstance(err, RequestError) and err.wait is not None else 0.0
    backoff = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (state.attempt_number - 1))
    return max(asked, backoff * random.uniform(0.5, 1.0))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.retryable


def kind(reason: str) -> str:
    """The short kind of a reason, for counting: 'HTTP 429', 'timeout', 'connection error', ..."""
    return reason.split(":")[0].split(" (")[0]


def new_stats() -> dict:
    return {"requests": 0, "retries": 0, "retry_reasons": {}}


def merge_stats(total: dict, part: dict) -> None:
    """Add one client's counts into `total` (nested dicts, such as retry_reasons, key by key)."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge_stats(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def summary(stats: dict) -> str:
    """'; 52 requests, 9 retries (HTTP 429 3, timeout 6)' for a stage's summary line."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats["retry_reasons"].items()))
    return f"; {stats['requests']} requests, {stats['retries']} retries" + (f" ({kinds})" if kinds else "")


class ChatClient:
    """At most `concurrency` requests in flight (one keep-alive connection each), each retried by
    the policy above. Use it within one event loop, then `close()` it."""

    def __init__(self, base_url: str, key: str, timeout_s: float, concurrency: int, max_retries: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.secret = key if key != "EMPTY" else None
        self.timeout_s, self.concurrency, self.max_retries = timeout_s, concurrency, max_retries
        self.stats = new_stats()
        self.session = None
        self.gate: asyncio.Semaphore | None = None
        self.proxy = self.proxy_auth = None
        self._proxy_looked_up = False

    def redact(self, text: str) -> str:
        """One line, at most REASON_CHARS, the key replaced (before cutting, so no prefix survives)."""
        text = " ".join(text.split())
        return (text.replace(self.secret, "***") if self.secret else text)[:REASON_CHARS]

    async def complete(self, body: dict, resend: int = 0) -> Reply:
        """The reply to `body`, retried by the policy; raises `Failed` when it does not come. `resend`:
        how many times the caller sent this request before (the judge's parse retry), for the header."""
        # The first attempt runs outside tenacity: its bookkeeping costs ~60 us per call (~10% of the
        # judge's client CPU at concurrency 128) and most requests need no retry. A failed first
        # attempt is replayed into the retry loop as its attempt 1, so every decision is the policy's.
        try:
            return await self._attempt(body, resend, 1)
        except RequestError as err:
            first = err
        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=wait,
                                 retry=retry_if_exception(_retryable), before_sleep=self._counted, reraise=True)
        attempt = 1
        try:
            async for state in retrying:
                with state:
                    attempt = state.retry_state.attempt_number
                    if attempt == 1:
                        raise first
                    return await self._attempt(body, resend, attempt)
        except RequestError as err:
            raise Failed(self.redact(f"{err.reason} (after {attempt} attempt{'s' * (attempt > 1)})")) from None
        raise AssertionError("unreachable")

    async def _attempt(self, body: dict, resend: int, attempt: int) -> Reply:
        async with self._gate():
            self.stats["requests"] += 1
            return await self.post(body, {ATTEMPT_HEADER: f"{resend}.{attempt - 1}"})

    def _counted(self, state: RetryCallState) -> None:
        self.stats["retries"] += 1
        reasons = self.stats["retry_reasons"]
        name = kind(state.outcome.exception().reason)
        reasons[name] = reasons.get(name, 0) + 1

    def _gate(self) -> asyncio.Semaphore:
        if self.gate is None:
            self.gate = asyncio.Semaphore(self.concurrency)
        return self.gate

    def _session(self):
        # aiohttp is imported here, not at the top: it takes ~0.2 s, which the verifier judge and the
        # in-process backends do not need to pay. The session is made on first use (it belongs to
        # the running event loop), with one keep-alive connection per concurrent request.
        import aiohttp
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        if not self._proxy_looked_up:
            # The proxy from the environment (HTTP(S)_PROXY, NO_PROXY), as the SDK honours it, looked
            # up once (aiohttp's helper, so proxy credentials work as with trust_env). trust_env itself
            # looks it up, and reads ~/.netrc, in a worker thread on every request: half the client's
            # CPU at concurrency 128, and a netrc entry for the host clashed with the bearer header.
            try:
                self.proxy, self.proxy_auth = get_env_proxy_for_url(URL(self.url))
            except LookupError:
                pass
            self._proxy_looked_up = True
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self.session

    async def post(self, body: dict, headers: dict[str, str]) -> Reply:
        """One attempt; raises RequestError."""
        import aiohttp

        try:
            async with self._session().post(self.url, data=json.dumps(body), headers=self.headers | headers,
                                            proxy=self.proxy, proxy_auth=self.proxy_auth) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (and also ClientErrors)
            raise RequestError(True, f"timeout ({self.timeout_s:g} s)") from exc
        except aiohttp.ClientError as exc:
            raise RequestError(True, f"connection error ({type(exc).__name__}: {exc})") from exc
        if status >= 300:
            raise RequestError(status == 429 or status >= 500, f"HTTP {status}: {_message(raw)}",
                               retry_after(resp_headers))
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RequestError(True, f"unparsable response body ({exc})") from exc
        if not isinstance(data, dict):
            raise RequestError(True, "unparsable response body (not a JSON object)")
        return _reply(data)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        self.session, self.gate = None, None


def _reply(data: dict) -> Reply:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise RequestError(True, "malformed response (no choices)")
    if not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices):
        raise RequestError(True, "malformed response (a choice without a message)")
    order = sorted(range(len(choices)), key=lambda i: (_tokens(choices[i].get("index", i)), i))
    out = []
    for i in order:
        c = choices[i]
        message = c["message"]
        reasoning = next((v for f in ("reasoning_content", "reasoning") if isinstance(v := message.get(f), str) and v),
                         None)
        logprobs = c.get("logprobs") if isinstance(c.get("logprobs"), dict) else {}
        tokens = logprobs.get("content")
        content = message.get("content")
        out.append(Choice(content if isinstance(content, str) else "", reasoning,
                          c.get("finish_reason") if isinstance(c.get("finish_reason"), str) else None,
                          tokens if isinstance(tokens, list) and tokens else None))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Reply(out, _tokens(usage.get("prompt_tokens")), _tokens(usage.get("completion_tokens")))


def _message(raw: bytes) -> str:
    """An error reply's message ({"error": {"message": ...}} as OpenAI-compatible servers send it),
    else its body, on one line."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
    except ValueError:
        pass
    return " ".join(text.split())[:1000] or "(empty body)"


def _tokens(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
