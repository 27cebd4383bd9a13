"""A scripted OpenAI-compatible judge server for tests: deterministic answers, deterministic faults.

Every answer and every fault is a function of the request body, the parse-retry index and the
transport attempt (both sent by the client in the `X-Deltalab-Attempt` header), never of server
state, so two runs against it (or a killed run and its restart) see the same thing.

`FakeJudge.plan` (a hook tests may replace) decides each request's outcome:
- transport faults on attempts 0 and 1 only (so max_retries >= 2 always gets through):
  429 with Retry-After 0 or 1, 500, or a reply slower than the client's timeout;
- about 10% of traces always answer malformed JSON (they end as parse_error rows);
- on parse-retry 0, about 20% of the others answer out-of-range (7) or unparsable text;
- otherwise the intended judgment, as bare JSON, in a ```json fence or inside prose.
Every 200 reply carries `ref <pair>` (request content hash / parse retry) so tests can map cached
responses back to requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DIMENSIONS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision", "signal_to_noise")


def _u(*parts) -> float:
    """A uniform number in [0, 1) from the parts."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16) / 16**12


def body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def intended(content: str) -> dict[str, int]:
    """The judgment the server means for a user message."""
    h = hashlib.sha256(content.encode()).digest()
    return {d: 1 + h[i] % 5 for i, d in enumerate(DIMENSIONS)}


def permanently_malformed(bhash: str) -> bool:
    return _u(bhash, "broken") < 0.10


@dataclass
class Outcome:
    kind: str  # ok | bad_json | out_of_range | missing_key | 429 | 500 | 401 | 400 | 503 | slow
    retry_after: str | None = None
    text: str | None = None


def default_plan(bhash: str, content: str, parse_retry: int, attempt: int) -> Outcome:
    if attempt < 2:
        u = _u(bhash, parse_retry, attempt, "transport")
        if u < 0.08:
            return Outcome("429", retry_after=str(int(u * 100) % 2))
        if u < 0.16:
            return Outcome("500")
        if u < 0.21:
            return Outcome("slow")
    if permanently_malformed(bhash):
        return Outcome(("bad_json", "out_of_range", "missing_key")[(parse_retry + int(bhash, 16)) % 3])
    if parse_retry == 0:
        w = _u(bhash, "parse")
        if w < 0.10:
            return Outcome("out_of_range")
        if w < 0.20:
            return Outcome("bad_json")
    return Outcome("ok")


def render(outcome: Outcome, content: str, ref: str) -> str:
    scores = intended(content)
    if outcome.kind == "out_of_range":
        return json.dumps({**scores, "numerical_precision": 7, "rationale": f"too generous, ref {ref}"})
    if outcome.kind == "missing_key":
        scores.pop("signal_to_noise")
        return json.dumps({**scores, "rationale": f"forgot one, ref {ref}"})
    if outcome.kind == "bad_json":
        return f'{{"factuality": 3, "strategy_coherence": oops ref {ref}'
    obj = json.dumps({**scores, "rationale": f"fake rationale, ref {ref}"})
    style = int(hashlib.sha256(ref.encode()).hexdigest(), 16) % 3
    return [obj, f"```json\n{obj}\n```", f"Here is my judgment: {obj} Hope this helps."][style]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of connections must reach the handler, not be refused


class FakeJudge:
    def __init__(self, delay_s: float = 0.0, slow_s: float = 3.0):
        self.delay_s = delay_s  # every reply waits this long (to catch a run mid-way)
        self.slow_s = slow_s  # a "slow" fault waits this long (beyond the client timeout)
        self.plan = default_plan
        self.log: list[dict] = []  # one entry per request received
        self.meant: dict[str, dict] = {}  # ref -> {"content", "scores"} of every 200 reply
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.log)

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout, or it was killed)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                # A client sent here through a proxy setting names the whole URL (absolute form).
                if urlsplit(self.path).path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                parse_retry, attempt = (int(x) for x in self.headers.get("X-Deltalab-Attempt", "0.0").split("."))
                bhash = body_hash(body)
                ref = f"{bhash}/{parse_retry}"
                content = body["messages"][-1]["content"]
                outcome = server.plan(bhash, content, parse_retry, attempt)
                with server.lock:
                    server.log.append({"ref": ref, "attempt": attempt, "kind": outcome.kind, "t": time.time(),
                                       "retry_after": outcome.retry_after, "auth": self.headers.get("Authorization"),
                                       "target": self.path})
                time.sleep(server.delay_s)
                if outcome.kind == "slow":
                    time.sleep(server.slow_s)  # the client has timed out by now
                    return self._send(504, {"error": {"message": "too late"}})
                if outcome.kind == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": outcome.retry_after})
                if outcome.kind in ("400", "401", "500", "503"):
                    # {auth} lets a test play a server that echoes the credentials it got.
                    msg = outcome.text or f"scripted {outcome.kind}"
                    msg = msg.replace("{auth}", self.headers.get("Authorization", ""))
                    return self._send(int(outcome.kind), {"error": {"message": msg}})
                text = render(outcome, content, ref)
                with server.lock:
                    server.meant[ref] = {"content": content, "scores": intended(content), "kind": outcome.kind}
                self._send(200, {
                    "id": f"chatcmpl-{ref}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(content) // 4, "completion_tokens": len(text) // 4,
                              "total_tokens": len(content) // 4 + len(text) // 4},
                })

        return Handler
