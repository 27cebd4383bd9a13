"""The judge's HTTP client: one OpenAI-compatible endpoint (POST /chat/completions) over aiohttp.

Why not the openai SDK here: the judge sends thousands of small requests and needs back only the
reply's text and token usage. The SDK spends 1-2.5 ms of CPU per request on request building, its
connection pool (which scans every pooled connection per request) and response models; aiohttp
with a plain JSON body spends ~0.25 ms (bench/judge_throughput.py). On 2 cores that CPU, not the
server, is what limited the judge at high concurrency.

Failures are named and sorted as deltalab.retry names them for the SDK's errors (the same
reasons, the same retry rules): retried are 429, 5xx, timeouts, connection errors (refused, reset,
a body cut short) and 200 replies whose body is not a JSON object; other statuses are not.
"""

from __future__ import annotations

import json

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from deltalab.judge.cache import Cached


class RequestError(Exception):
    """A failed request: whether to retry it, the reason for the row, and Retry-After seconds."""

    def __init__(self, retryable: bool, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.retryable, self.reason, self.wait = retryable, reason, wait


class ChatClient:
    def __init__(self, base_url: str, api_key: str, timeout_s: float, connections: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.timeout_s, self.connections = timeout_s, connections
        self.session: aiohttp.ClientSession | None = None
        # The proxy from the environment (HTTP(S)_PROXY, NO_PROXY), as the SDK honours it, looked up
        # once (aiohttp's helper, so proxy credentials work as with trust_env). trust_env itself looks
        # it up, and reads ~/.netrc, in a worker thread on every request: half the judge's client CPU
        # at concurrency 128, and a netrc entry for the host clashed with the bearer header.
        try:
            self.proxy, self.proxy_auth = get_env_proxy_for_url(URL(self.url))
        except LookupError:
            self.proxy, self.proxy_auth = None, None

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop. One keep-alive
        # connection per concurrent request.
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self.session

    async def complete(self, body: dict, headers: dict[str, str]) -> Cached:
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
            from deltalab.retry import retry_after  # here only: it imports the openai SDK (~0.4 s of start-up)

            raise RequestError(status == 429 or status >= 500, f"HTTP {status}: {_message(raw)}",
                               retry_after(resp_headers))
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RequestError(True, f"unparsable response body ({exc})") from exc
        if not isinstance(data, dict):
            raise RequestError(True, "unparsable response body (not a JSON object)")
        # A reply without choices or content is an empty answer: the rubric parser rejects it.
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        content = message.get("content")
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        tokens = logprobs.get("content")
        return Cached(content if isinstance(content, str) else "", _count(usage.get("prompt_tokens")),
                      _count(usage.get("completion_tokens")),
                      json.dumps(tokens, sort_keys=True) if isinstance(tokens, list) and tokens else None)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


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


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
