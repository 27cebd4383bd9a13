"""Request counts of an OpenAI-compatible client (OpenAIBackend.stats): summed over the models a
stage talks to, and told in the stage's summary line."""

from __future__ import annotations


def merge_stats(total: dict, part: dict) -> None:
    """Add a client's request counts (OpenAIBackend.stats) into `total`."""
    for key, value in part.items():
        if isinstance(value, dict):
            merge_stats(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def client_summary(stats: dict) -> str:
    """'; 52 requests, 9 retries (HTTP 429 3, timeout 6)' for a stage's summary line."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats["retry_reasons"].items()))
    return f"; {stats['requests']} requests, {stats['retries']} retries" + (f" ({kinds})" if kinds else "")
