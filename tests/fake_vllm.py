"""A scripted stand-in for `vllm serve` with a reasoning parser, run as a process by the `serve:` tests.

It answers /health, and /v1/chat/completions with `n` choices, each split like vLLM's reasoning
parsers split them: `reasoning_content` (or `reasoning`, with --field) and `content`. Text is a
function of the request (seed, choice index), so runs are reproducible. It writes its PID to
--pid-file and one line per request to --requests-log; --delay makes each reply slow.

    python tests/fake_vllm.py --port 8000 [--delay 30] [--field reasoning] [--pid-file F] [--requests-log F]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(body: dict, field: str) -> dict:
    n, seed = int(body.get("n") or 1), body.get("seed")
    question = body["messages"][-1]["content"]
    choices = [
        {"index": i, "finish_reason": "stop",
         "message": {"role": "assistant", field: f"thinking about {question!r} (seed {seed}, choice {i})",
                     "content": f"The answer is {seed % 97 + i}."}}
        for i in range(n)
    ]
    return {"id": "fake", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 7 * n, "total_tokens": 10 + 7 * n}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--field", default="reasoning_content")
    ap.add_argument("--pid-file")
    ap.add_argument("--requests-log")
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {}) if self.path == "/health" else self._send(404, {})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if args.requests_log:
                with open(args.requests_log, "a") as f:
                    f.write(json.dumps({"n": body.get("n"), "seed": body.get("seed")}) + "\n")
            time.sleep(args.delay)
            self._send(200, reply(body, args.field))

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(str(os.getpid()))
    print(f"fake vllm on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
