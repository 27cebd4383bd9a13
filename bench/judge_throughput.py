"""Benchmark: LLM-judge throughput against a loopback server with a fixed 100 ms latency.

Goal (issue 6): at concurrency 8, 32 and 128, `deltalab judge` (the whole stage: reading traces,
rendering, the SQLite cache, retries, parquet and metrics writing) sends at least as many requests
per second as a plain `AsyncOpenAI` loop with an `asyncio.Semaphore` sending the same requests
(ratio >= 1.0), and at 8 and 32 reaches >= 0.85 of the limit `concurrency / latency`.

The server (`--serve`) is a few lines of asyncio in its own process, so its CPU is not the client's:
HTTP/1.1 keep-alive, every reply held back 100 ms, one fixed judgment (a valid one for deltalab's
rubric, an UltraFeedback-style rating for distilabel). On 2 cores the client's CPU per request is
what limits high concurrency, so each run also prints the client's CPU seconds.

Per concurrency c: N = c x --rounds-per-slot requests (default N = 100 c: an ideal 10 s at the limit), each one unique trace (~1.5 KB) rendered through the rubric, with a cold cache. Measured, each
in a fresh process, alternating, best of --repeat (distilabel: --distilabel-repeat):
- `deltalab`   `deltalab judge` (openai judge, `runtime.judge.concurrency: c`): requests from
               metrics/judge.json over the process's wall time (start-up included), and over the
               server-side window (first request in to last reply out).
- `plain`      `AsyncOpenAI` (default settings) + Semaphore(c) + gather over the same request bodies:
               requests over the loop's time (start-up excluded, as a researcher's loop would be
               timed) and over the process's wall time.
- `distilabel` (`--distilabel PYTHON`, a separate venv with distilabel[openai]==1.5.3): an
               UltraFeedback task (aspect overall-rating, one generation per row) with OpenAILLM on
               the same server, input_batch_size c, the same N rows: requests over the pipeline
               run's wall time and over the server window.

    .venv/bin/python bench/judge_throughput.py [--concurrency 8,32,128] [--rounds-per-slot 40]
        [--repeat 2] [--distilabel /work/venvs/distilabel/bin/python [--distilabel-repeat 1]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENCY_S = 0.100
MODEL = "bench-judge"
JUDGMENT = json.dumps({"factuality": 4, "strategy_coherence": 3, "step_coherence": 4, "numerical_precision": 5,
                       "signal_to_noise": 3, "rationale": "Sound steps, one redundant line."})
ULTRAFEEDBACK = "#### Output for Text 1\nRating: 4\nRationale: Sound steps, one redundant line."


# --- the loopback server (stdlib only) -------------------------------------------------------------


def _reply(content: str) -> bytes:
    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 480, "completion_tokens": 60, "total_tokens": 540},
    }).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)) + body


def serve(port: int) -> None:
    """HTTP/1.1 with keep-alive; every POST is answered LATENCY_S after its body arrived.
    GET /stats: requests so far, first arrival and last reply (time.time()); GET /reset zeroes them."""
    replies = {False: _reply(JUDGMENT), True: _reply(ULTRAFEEDBACK)}
    length = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
    stats = {"requests": 0, "first": None, "last": None}

    class Http(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                head = self.buf[:end]
                m = length.search(head)
                size = int(m[1]) if m else 0
                if len(self.buf) < end + 4 + size:
                    return
                body, self.buf = self.buf[end + 4:end + 4 + size], self.buf[end + 4 + size:]
                if head.startswith(b"GET /stats"):
                    out = json.dumps(stats).encode()
                    self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out))
                elif head.startswith(b"GET /reset"):
                    stats.update(requests=0, first=None, last=None)
                    self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                else:
                    stats["requests"] += 1
                    stats["first"] = stats["first"] or time.time()
                    loop.call_later(LATENCY_S, self.answer, replies[b"Output for Text" in body])

        def answer(self, reply):
            if not self.transport.is_closing():
                self.transport.write(reply)
                stats["last"] = time.time()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Http, "127.0.0.1", port, backlog=1024))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


def server_stats(url: str, reset: bool = False) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + ("/reset" if reset else "/stats")) as r:
        return json.loads(r.read() or b"{}")


# --- the plain loop (a researcher's AsyncOpenAI + Semaphore) ---------------------------------------


def plain(requests_file: Path, url: str, concurrency: int) -> None:
    t0 = time.perf_counter()
    import openai

    bodies = [json.loads(line) for line in requests_file.read_text().splitlines()]

    async def main() -> float:
        client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY")
        gate = asyncio.Semaphore(concurrency)

        async def one(body):
            async with gate:
                resp = await client.chat.completions.create(**body)
                return resp.choices[0].message.content

        start = time.perf_counter()
        out = await asyncio.gather(*(one(b) for b in bodies))
        seconds = time.perf_counter() - start
        assert all(out)
        await client.close()
        return seconds

    loop_s = asyncio.run(main())
    print(json.dumps({"requests": len(bodies), "loop_s": loop_s, "process_s": time.perf_counter() - t0}))


# --- distilabel's UltraFeedback (runs in the distilabel venv) ---------------------------------------


def distilabel(requests_file: Path, url: str, concurrency: int) -> None:
    t0 = time.perf_counter()
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import UltraFeedback

    rows = [json.loads(line) for line in requests_file.read_text().splitlines()]
    data = [{"instruction": r["question"], "generations": [r["trace"]]} for r in rows]
    with Pipeline(name="bench-judge-throughput") as pipeline:
        load = LoadDataFromDicts(data=data, batch_size=concurrency)
        rate = UltraFeedback(
            llm=OpenAILLM(model=MODEL, base_url=url, api_key="EMPTY", max_retries=0, timeout=60,
                          generation_kwargs={"temperature": 0.0, "max_new_tokens": 512}),
            aspect="overall-rating", input_batch_size=concurrency)
        load >> rate
    start = time.perf_counter()
    out = pipeline.run(use_cache=False)
    run_s = time.perf_counter() - start
    got = out["default"]["train"]
    rated = sum(r["ratings"] is not None and r["ratings"][0] is not None for r in got)
    print(json.dumps({"requests": len(rows), "rows": len(got), "rated": rated, "run_s": run_s,
                      "process_s": time.perf_counter() - t0}))


# --- the workload and the driver --------------------------------------------------------------------


def make_workspace(work: Path, n: int, concurrency: int, url: str) -> Path:
    """prompts + one generator's traces (n unique ~1.5 KB traces) + params for the openai judge; the
    rendered request bodies go to requests.jsonl (the plain loop's input) and the raw rows to
    rows.jsonl (distilabel's)."""
    import numpy as np
    import polars as pl
    import yaml

    from deltalab.config import load_params
    from deltalab.io import write_parquet
    from deltalab.judge import rubric
    from deltalab.judge.llm import request_body
    from deltalab.stages.generate import SCHEMA

    rng = np.random.default_rng(0)
    words = np.array(["so", "the", "step", "we", "add", "subtract", "carry", "=", "+", "-", "then", "answer", "is",
                      *map(str, range(100))], dtype=object)
    pids = [f"p{i:07d}" for i in range(n)]
    questions = [f"{i % 97} + {i * 7 % 89} - {i % 13} =" for i in range(n)]
    traces = [f"trace {i}: " + " ".join(words[rng.integers(0, len(words), 280)]) for i in range(n)]
    write_parquet(pl.DataFrame({
        "prompt_id": pids, "split": "train", "family": "chain_sum", "source": "synthetic", "source_index": range(n),
        "question": questions, "answer": "42", "metadata": "{}", "verifier": "math_verify"}), work / "prompts.parquet")
    write_parquet(pl.DataFrame({
        "trace_id": [f"t{i:07d}" for i in range(n)], "prompt_id": pids, "family": "chain_sum", "generator": "g0",
        "model": "m/g0", "model_revision": None, "backend": "openai", "decoding": "sample", "sampling": "{}",
        "seed": 0, "sample_index": 0, "completion": traces, "prompt_tokens": 12, "completion_tokens": 400,
        "finish_reason": "stop", "answer": "42", "score": 1.0, "correct": True, "format_ok": True,
        "step_correct": None, "step_accuracy": None}).cast(SCHEMA).select(list(SCHEMA)), work / "traces/g0.parquet")
    params = {
        "tasks": {"chain_sum": {"source": "reasoning_gym", "dataset": "chain_sum"}},
        "prompts": {"train": {"chain_sum": 10}, "eval_id": {"chain_sum": 2}},
        "generators": {"g0": {"model": "m/g0"}},
        "judge": {"backend": "openai", "base_url": url, "model": MODEL},
        "ablations": {"a": {"chosen": "g0", "rejected": "g0"}},
        "runtime": {"judge": {"concurrency": concurrency, "cache_dir": str(work / "cache")}},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_params(work / "params.yaml").judge
    template = rubric.load(cfg.template)
    with open(work / "requests.jsonl", "w") as f, open(work / "rows.jsonl", "w") as g:
        for q, t in zip(questions, traces):
            # The judge's own request body, so the plain loop sends the same bytes.
            f.write(json.dumps(request_body(cfg, template.messages(q, "42", t))) + "\n")
            g.write(json.dumps({"question": q, "trace": t}) + "\n")
    return work


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    """(wall s, stdout) of a command."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def _cpu_children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_deltalab(work: Path, url: str) -> dict:
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    server_stats(url, reset=True)
    cpu0 = _cpu_children()
    wall, _ = _timed([str(ROOT / ".venv/bin/deltalab"), "judge", "--params", "params.yaml",
                         "--prompts", "prompts.parquet", "--traces-dir", "traces", "--out-dir", "out",
                         "--metrics", "out/judge.json", "--audit", "out/audit.json"], cwd=work)
    cpu = _cpu_children() - cpu0
    m = json.loads((work / "out/judge.json").read_text())
    s = server_stats(url)
    assert m["requests"] == s["requests"] and m["failures"] == 0, (m, s)
    return {"requests": m["requests"], "seconds": wall, "window_s": s["last"] - s["first"], "cpu_s": cpu}


def run_plain(work: Path, url: str, concurrency: int) -> dict:
    server_stats(url, reset=True)
    cpu0 = _cpu_children()
    wall, out = _timed([sys.executable, __file__, "--plain", str(work / "requests.jsonl"), "--url", url,
                           "--c", str(concurrency)])
    r = json.loads(out.splitlines()[-1])
    s = server_stats(url)
    assert s["requests"] == r["requests"], (r, s)
    return {"requests": r["requests"], "seconds": r["loop_s"], "process_s": wall, "window_s": s["last"] - s["first"],
            "cpu_s": _cpu_children() - cpu0}


def run_distilabel(python: str, work: Path, url: str, concurrency: int) -> dict:
    server_stats(url, reset=True)
    cpu0 = _cpu_children()
    wall, out = _timed([python, __file__, "--distilabel-run", str(work / "rows.jsonl"), "--url", url,
                           "--c", str(concurrency)], cwd=work)
    r = json.loads(out.splitlines()[-1])
    s = server_stats(url)
    return {"requests": s["requests"], "seconds": r["run_s"], "process_s": wall, "window_s": s["last"] - s["first"],
            "cpu_s": _cpu_children() - cpu0, "rated": r["rated"], "rows": r["rows"]}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="8,32,128")
    ap.add_argument("--rounds-per-slot", type=int, default=100, help="N = concurrency x this (default: an ideal 10 s)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per variant (alternating); the fastest is reported")
    ap.add_argument("--distilabel", help="python of a venv with distilabel[openai]==1.5.3")
    ap.add_argument("--distilabel-repeat", type=int, default=1, help="runs of distilabel (slow) per concurrency")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--plain", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--distilabel-run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--c", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.plain:
        return plain(args.plain, args.url, args.c)
    if args.distilabel_run:
        return distilabel(args.distilabel_run, args.url, args.c)

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    tmp = Path(tempfile.mkdtemp(prefix="bench-judge-"))
    rows = []
    try:
        for c in map(int, args.concurrency.split(",")):
            n = c * args.rounds_per_slot
            work = make_workspace(tmp / f"c{c}", n, c, url)
            limit = c / LATENCY_S
            runs: dict[str, list[dict]] = {"deltalab": [], "plain": [], "distilabel": []}
            for i in range(args.repeat):
                for variant in ("deltalab", "plain", "distilabel"):
                    if variant == "distilabel" and (not args.distilabel or i >= args.distilabel_repeat):
                        continue
                    load = loadavg()
                    if variant == "deltalab":
                        r = run_deltalab(work, url)
                    elif variant == "plain":
                        r = run_plain(work, url, c)
                    else:
                        r = run_distilabel(args.distilabel, work, url, c)
                    r["load"] = load
                    runs[variant].append(r)
                    print(f"  c={c:<4} N={n:<6} {variant:<10} run {i + 1}: {r['requests'] / r['seconds']:7.1f} req/s "
                          f"({r['seconds']:.2f} s; window {r['requests'] / r['window_s']:.1f} req/s; client CPU "
                          f"{r['cpu_s']:.1f} s; load before {load})", flush=True)
            best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items() if v}
            rows.append((c, n, limit, best))
        print(f"\nlatency {LATENCY_S * 1000:.0f} ms; req/s (fraction of the limit c/latency); best of {args.repeat}")
        print(f"{'c':>4} {'N':>6} {'limit':>6} | {'deltalab':>16} {'window':>7} | {'plain loop':>16} {'process':>7} | "
              f"{'ratio':>6} {'ratio (proc)':>12} | {'distilabel':>16} {'ratio':>6}")
        for c, n, limit, b in rows:
            d, p = b["deltalab"], b["plain"]
            rd, rp = d["requests"] / d["seconds"], p["requests"] / p["seconds"]
            line = (f"{c:>4} {n:>6} {limit:>6.0f} | {rd:8.1f} ({rd / limit:.2f}) {d['requests'] / d['window_s']:7.1f} | "
                    f"{rp:8.1f} ({rp / limit:.2f}) {p['requests'] / p['process_s']:7.1f} | {rd / rp:6.2f} "
                    f"{rd / (p['requests'] / p['process_s']):12.2f} |")
            if "distilabel" in b:
                x = b["distilabel"]
                rx = x["requests"] / x["seconds"]
                line += f" {rx:8.1f} ({rx / limit:.2f}) {rd / rx:6.2f}"
            print(line)
        print("deltalab: requests / wall of `deltalab judge` (start-up, cache, parquet included); window: requests / "
              "server's first-in..last-out. plain: requests / the gather loop (start-up excluded); process: its whole "
              "process. ratio = deltalab / plain; distilabel ratio = deltalab / distilabel (pipeline.run wall).")
        print(f"goals: ratio >= 1.0 at every c; deltalab >= 0.85 of the limit at 8 and 32. {os.cpu_count()} cores, "
              f"load average now {loadavg()}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
