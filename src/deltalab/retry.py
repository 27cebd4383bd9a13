"""Retrying OpenAI-compatible requests: which failures to retry, how long to wait, how to name them.

Shared by the judge (judge/llm.py) and the generation/evaluation client (backends/openai.py), which
both run the openai client with `max_retries=0` and retry themselves, so that every retry is counted
and every final failure has a reason.

Retried: 429, 5xx, timeouts, connection errors (refused, reset, a body cut short) and 200 replies
whose body is not JSON. Not retried: other 4xx (a wrong key or model does not heal by waiting).
"""

from __future__ import annotations

import email.utils
import json
import random
import time

import openai

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
ERRORS = (openai.OpenAIError, json.JSONDecodeError)
"""What a `chat.completions.create` call raises for a failed request (a malformed 200 body is a
JSONDecodeError, not an OpenAIError)."""


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


def classify(exc: Exception, timeout_s: float) -> tuple[bool, str, float | None]:
    """(retryable, reason, Retry-After seconds) of a failed request."""
    if isinstance(exc, openai.APITimeoutError):
        return True, f"timeout ({timeout_s:g} s)", None
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return True, f"connection error ({type(cause).__name__}: {cause})", None
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        retryable = code == 429 or code >= 500
        message = str(exc.message).removeprefix(f"Error code: {code} - ")
        return retryable, f"HTTP {code}: {message}", retry_after(getattr(exc.response, "headers", None))
    if isinstance(exc, json.JSONDecodeError):
        return True, f"unparsable response body ({exc})", None
    return False, f"{type(exc).__name__}: {exc}", None


def kind(reason: str) -> str:
    """The short kind of a reason, for counting: 'HTTP 429', 'timeout', 'connection error', ..."""
    return reason.split(":")[0].split(" (")[0]


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt + 1`: exponential, capped, with jitter (so clients that
    failed together do not retry together)."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.0)
