"""A scripted OpenAI-compatible server for the fault suite: generation and judge replies, and faults at
a chosen rate.

A request's fate is a function of its body, its parse-retry index and its transport attempt (the
client's `X-Deltalab-Attempt: <parse retry>.<attempt>` header), never of server state: with `rate`
0.2, about 20% of attempts below `faulty_attempts` fail, spread evenly over
- 429 with Retry-After 0 or 1 s, 500,
- slow (the reply comes after `slow_s`, past the client's timeout),
- reset (the connection is closed with a TCP RST, no reply),
- malformed (a 200 whose body is not JSON, or JSON cut short with a matching Content-Length),
- truncated (a 200 that promises a full body and closes the connection half way).
The faults at rate 0.2 are a subset of those at 0.5 (same draw). Attempts from `faulty_attempts` on
always succeed, unless the question is in `down` (an outage: every attempt answers 500).

Replies: a request whose model is `fake-judge` gets the judgment `fake_openai.intended` means;
any other gets `n` choices, choice i answering `echo <question> | seed <seed> | choice <i>`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

from fake_openai import _Server, _u, body_hash, intended

KINDS = ("429", "500", "slow", "reset", "malformed", "truncated")
JUDGE_MODEL = "fake-judge"


def fault(key: str, attempt: int, rate: float) -> str | None:
    """The fault of attempt `attempt` of request `key` at `rate` (None: it succeeds)."""
    u = _u(key, attempt, "fault")
    return KINDS[int(u / rate * len(KINDS))] if u < rate else None


def echo(question: str, seed: int, choice: int) -> str:
    return f"echo {question} | seed {seed} | choice {choice}"


class FaultServer:
    def __init__(self, rate: float = 0.0, faulty_attempts: int = 2, slow_s: float = 2.0):
        self.rate, self.faulty_attempts, self.slow_s = rate, faulty_attempts, slow_s
        self.down: set[str] = set()  # questions whose every attempt fails (an outage)
        self.log: list[dict] = []  # one entry per request received
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def plan(self, key: str, question: str, attempt: int) -> str:
        if question in self.down:
            return "500"
        if attempt < self.faulty_attempts and self.rate > 0:
            return fault(key, attempt, self.rate) or "ok"
        return "ok"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a reset hits a pooled connection

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, data: bytes, headers: dict | None = None, cut: int | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data if cut is None else data[:cut])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                if cut is not None:
                    self.close_connection = True

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                parse_retry, attempt = (int(x) for x in self.headers.get("X-Deltalab-Attempt", "0.0").split("."))
                key = f"{body_hash(body)}/{parse_retry}"
                question = body["messages"][-1]["content"]
                kind = server.plan(key, question, attempt)
                retry_after = str(int(_u(key, attempt, "wait") * 2)) if kind == "429" else None
                with server.lock:
                    server.log.append({"key": key, "attempt": attempt, "kind": kind, "t": time.time(),
                                       "retry_after": retry_after, "question": question})
                if kind == "slow":
                    time.sleep(server.slow_s)  # the client has timed out by now
                    return self._send(504, b'{"error": {"message": "too late"}}')
                if kind == "reset":
                    return self._reset()
                if kind == "429":
                    return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": retry_after})
                if kind == "500":
                    return self._send(500, b'{"error": {"message": "scripted 500"}}')
                data = json.dumps(self.reply(body, question)).encode()
                if kind == "malformed":
                    if _u(key, attempt, "how") < 0.5:
                        return self._send(200, b"<html>upstream hiccup</html>")
                    return self._send(200, data[: len(data) // 2])
                if kind == "truncated":
                    return self._send(200, data, cut=len(data) // 2)
                return self._send(200, data)

            def reply(self, body: dict, question: str) -> dict:
                if body["model"] == JUDGE_MODEL:
                    texts = [json.dumps({**intended(question), "rationale": "fake"})]
                else:
                    texts = [echo(question, body["seed"], i) for i in range(int(body.get("n") or 1))]
                choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                           for i, t in enumerate(texts)]
                tokens = sum(len(t) // 4 for t in texts)
                return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": choices, "usage": {"prompt_tokens": len(question) // 4,
                                                      "completion_tokens": tokens,
                                                      "total_tokens": len(question) // 4 + tokens}}

        return Handler
