"""The one chat client and retry policy (deltalab.chat) against a scripted loopback server: what it
sends, what it reads back, which failures it retries, how long it waits, and what it counts.
(The stages through it: tests/test_faults.py, tests/test_judge_llm.py, tests/test_serve.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deltalab import chat
from deltalab.config import Judge
from deltalab.errors import UserError
from deltalab.judge.backends import BACKENDS

KEY = "sk-test-chat-0123456789"


def reply(*choices: dict, usage: dict | None = None) -> tuple[int, dict, bytes]:
    return 200, {}, json.dumps({"choices": list(choices), "usage": usage or {"prompt_tokens": 7, "completion_tokens": 4}}).encode()


def error(status: int, message: str, **headers: str) -> tuple[int, dict, bytes]:
    return status, headers, json.dumps({"error": {"message": message}}).encode()


OK = reply({"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"})


class Scripted:
    """Answers the i-th request with `script[i]` (the last one repeats); logs each request's arrival
    time, attempt header, authorization and body."""

    def __init__(self, *script: tuple[int, dict, bytes]):
        self.script, self.log = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.log.append({"t": time.monotonic(), "attempt": self.headers.get(chat.ATTEMPT_HEADER),
                                  "auth": self.headers.get("Authorization"), "body": body})
                status, headers, data = outer.script[min(len(outer.log), len(outer.script)) - 1]
                self.send_response(status)
                for k, v in ({"Content-Type": "application/json", "Content-Length": str(len(data))} | headers).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Scripted:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def complete(url: str, body: dict, key: str = "EMPTY", max_retries: int = 3, resend: int = 0,
             timeout_s: float = 10.0) -> tuple[chat.Reply | chat.Failed, dict]:
    async def main():
        client = chat.ChatClient(url, key, timeout_s, concurrency=2, max_retries=max_retries)
        try:
            return await client.complete(body, resend), client.stats
        except chat.Failed as err:
            return err, client.stats
        finally:
            await client.close()

    return asyncio.run(main())


def test_a_reply_is_read_whole_n_choices_reasoning_and_logprobs():
    tokens = [{"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1}]}]
    with Scripted(reply({"index": 1, "message": {"content": "b", "reasoning": "why b"}, "finish_reason": "length"},
                        {"index": 0, "message": {"content": "a", "reasoning_content": "why a"}, "finish_reason": "stop",
                         "logprobs": {"content": tokens}},
                        usage={"prompt_tokens": 11, "completion_tokens": 6})) as server:
        got, stats = complete(server.url, {"model": "m", "messages": [], "n": 2, "seed": 3}, resend=2)
    assert got == chat.Reply([chat.Choice("a", "why a", "stop", tokens), chat.Choice("b", "why b", "length", None)], 11, 6)
    assert stats == {"requests": 1, "retries": 0, "retry_reasons": {}}
    [sent] = server.log
    assert sent["body"] == {"model": "m", "messages": [], "n": 2, "seed": 3}
    assert sent["attempt"] == "2.0" and sent["auth"] == "Bearer EMPTY"


def test_retry_after_is_honoured():
    with Scripted(error(429, "slow down", **{"Retry-After": "1"}), error(503, "busy"), OK) as server:
        got, stats = complete(server.url, {"model": "m"})
    assert isinstance(got, chat.Reply) and got.choices[0].content == "fine"
    assert stats == {"requests": 3, "retries": 2, "retry_reasons": {"HTTP 429": 1, "HTTP 503": 1}}
    waits = [b["t"] - a["t"] for a, b in zip(server.log, server.log[1:])]
    assert waits[0] >= 0.95  # Retry-After: 1, not the first backoff (0.25-0.5 s)
    assert 0.45 <= waits[1] < 1.5  # no Retry-After: the second backoff, 1 s x jitter in [0.5, 1]


def test_every_retry_is_counted_by_kind(monkeypatch):
    monkeypatch.setattr(chat, "BACKOFF_BASE_S", 0.001)
    with Scripted(error(429, "slow down"), error(500, "x"), (200, {}, b"<html>hiccup</html>"), (200, {}, b'{"choi'),
                  reply(), reply({"index": 0}), OK) as server:
        got, stats = complete(server.url, {"model": "m"}, max_retries=6)
    assert isinstance(got, chat.Reply)
    assert [e["attempt"] for e in server.log] == [f"0.{i}" for i in range(7)]
    assert stats == {"requests": 7, "retries": 6, "retry_reasons": {
        "HTTP 429": 1, "HTTP 500": 1, "unparsable response body": 2, "malformed response": 2}}


def test_a_request_that_keeps_failing_has_one_redacted_line(monkeypatch):
    monkeypatch.setattr(chat, "BACKOFF_BASE_S", 0.001)
    with Scripted(error(500, f"oops\nkey {KEY} rejected")) as server:
        got, stats = complete(server.url, {"model": "m"}, key=KEY, max_retries=1)
    assert isinstance(got, chat.Failed)
    assert got.reason == "HTTP 500: oops key *** rejected (after 2 attempts)"
    assert stats == {"requests": 2, "retries": 1, "retry_reasons": {"HTTP 500": 1}}
    assert {e["auth"] for e in server.log} == {f"Bearer {KEY}"}


def test_a_client_error_is_not_retried():
    with Scripted(error(401, "bad key")) as server:
        got, stats = complete(server.url, {"model": "m"}, max_retries=5)
    assert got.reason == "HTTP 401: bad key (after 1 attempt)" and len(server.log) == 1
    assert stats == {"requests": 1, "retries": 0, "retry_reasons": {}}


def test_a_closed_port_is_a_connection_error(monkeypatch):
    monkeypatch.setattr(chat, "BACKOFF_BASE_S", 0.001)
    with Scripted() as server:
        url = server.url
    got, stats = complete(url, {"model": "m"}, max_retries=1)
    assert got.reason.startswith("connection error (") and got.reason.endswith("(after 2 attempts)")
    assert stats["retry_reasons"] == {"connection error": 1}


def test_the_wait_is_retry_after_or_the_backoff_whichever_is_longer():
    class State:  # what tenacity hands the wait: the attempt number and the failed outcome
        def __init__(self, attempt_number: int, err: Exception):
            self.attempt_number, self.outcome = attempt_number, type("F", (), {"exception": lambda _: err})()

    for n in range(1, 12):
        w = chat.wait(State(n, chat.RequestError(True, "HTTP 500: x")))
        assert min(30.0, 0.5 * 2 ** (n - 1)) * 0.5 <= w <= min(30.0, 0.5 * 2 ** (n - 1))
    assert chat.wait(State(1, chat.RequestError(True, "HTTP 429: x", 7.0))) == 7.0
    assert chat.wait(State(8, chat.RequestError(True, "HTTP 429: x", 0.0))) >= 15.0
    assert chat.retry_after({"retry-after-ms": "1500"}) == 1.5 and chat.retry_after({"retry-after": "9999"}) == 120.0


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("DELTALAB_TEST_CHAT_KEY", KEY)
    assert chat.api_key("DELTALAB_TEST_CHAT_KEY", "judge.api_key_env") == KEY
    assert chat.api_key(None, "judge.api_key_env") == "EMPTY"
    monkeypatch.delenv("DELTALAB_TEST_CHAT_KEY")
    with pytest.raises(UserError, match="^generators.g.api_key_env: environment variable DELTALAB_TEST_CHAT_KEY is not set$"):
        chat.api_key("DELTALAB_TEST_CHAT_KEY", "generators.g.api_key_env")


def test_every_judge_backend_in_the_params_has_a_judge():
    assert set(typing.get_args(Judge.model_fields["backend"].annotation)) == set(BACKENDS)
