"""Benchmark: deltalab's in-process seeded sampling vs plain `model.generate(do_sample=True)`.

Goal: at batch sizes 1, 8 and 32, `TransformersBackend.generate` (per-row seeded Gumbel-max sampling
through `RowSeededSampler` and greedy search, so a row's sample does not depend on its batch) keeps
>= 0.9x the tokens/s of a plain `model.generate(do_sample=True)` call with the same model, prompts,
temperature (0.7), top-p (0.95) and number of new tokens.

Prompts: reasoning-gym chain_sum questions (seed 0, 2 one-digit terms) rendered as deltalab renders
them (`prompting.messages` with the built-in reasoning-gym template: its default system prompt +
the question), chat-templated by the model's tokenizer, left-padded. Both arms share one model and
one tokenizer (loaded once by the backend) and `torch.set_num_threads(--threads)`.

- `deltalab`  `TransformersBackend(model, "cpu", batch_size=B, threads=T).generate(B requests,
              Sampling(0.7, 0.95, N))`: one batch of B `Request(messages, seed)`; timed end to end
              (chat template, tokenizing, generation, decoding).
- `plain`     `torch.manual_seed(s)`, then the same chat template + `tok(..., padding=True)`,
              `model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95, max_new_tokens=N)`
              and `batch_decode`: timed end to end too.

Same work in both arms: EOS is made impossible for the first N tokens in both with the same
transformers logits processor (`min_new_tokens = N` set on the shared model's generation_config,
which deltalab's backend inherits as plain generate does; src/ is not changed), so every row
generates exactly N tokens. tokens/s = tokens actually generated / wall seconds (deltalab: the sum
of `completion_tokens`; plain: the new tokens after the prompt, EOS/pad excluded); the script
checks both counts are B x N. `--allow-eos` drops the suppression (rows may then stop early and
the two arms do different amounts of work; tokens/s still counts only generated tokens).

Per batch size: one warm-up call per arm, then `--repeats` rounds alternating the arms (the
machine is shared: noise hits both), median reported.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sampling.py [--model data/models/smollm2-135m-instruct]
        [--batch-sizes 1,8,32] [--max-new-tokens 64] [--repeats 3] [--threads 2] [--allow-eos]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from deltalab import prompting  # noqa: E402
from deltalab.backends import Request, Sampling  # noqa: E402
from deltalab.backends.transformers import TransformersBackend, chat_text  # noqa: E402

GOAL = 0.9
TEMPERATURE, TOP_P = 0.7, 0.95


def chain_sum_messages(n: int) -> list[list[dict]]:
    import reasoning_gym

    ds = reasoning_gym.create_dataset("chain_sum", seed=0, size=n, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    tpl = prompting.Template(prompting.builtin("reasoning_gym").system, prompting.BARE, False, "bench")
    return [prompting.messages(tpl, {"question": x["question"], "family": "chain_sum", "metadata": None}) for x in ds]


def run_deltalab(backend: TransformersBackend, messages: list[list[dict]], sampling: Sampling, seed0: int) -> tuple[int, float]:
    requests = [Request(m, seed0 + i) for i, m in enumerate(messages)]
    t0 = time.perf_counter()
    out = backend.generate(requests, sampling)
    seconds = time.perf_counter() - t0
    return sum(c.completion_tokens for c in out), seconds


@torch.inference_mode()
def run_plain(backend: TransformersBackend, messages: list[list[dict]], n_new: int, seed: int) -> tuple[int, float]:
    tok, model = backend.tok, backend.model
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    prompts = [chat_text(tok, m, backend.model_path) for m in messages]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = model.generate(**enc, do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=n_new,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = ids[:, enc["input_ids"].shape[1]:]
    tok.batch_decode(new, skip_special_tokens=True)
    seconds = time.perf_counter() - t0
    # generated tokens: up to and including each row's first EOS (after it: padding)
    is_eos = new == tok.eos_token_id
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, torch.full((new.shape[0],), new.shape[1]))
    return int(first.sum()), seconds


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "data/models/smollm2-135m-instruct"))
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per batch size (arms alternate); median")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--allow-eos", action="store_true", help="let rows stop at EOS (counts generated tokens only)")
    args = ap.parse_args()

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    n_new = args.max_new_tokens
    backend = TransformersBackend(args.model, "cpu", batch_size=max(sizes), threads=args.threads)
    torch.set_num_threads(args.threads)
    if not args.allow_eos:
        backend.model.generation_config.min_new_tokens = n_new  # both arms: EOS impossible before N tokens
    sampling = Sampling(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=n_new)
    all_messages = chain_sum_messages(max(sizes))
    print(f"{args.model}: {sum(p.numel() for p in backend.model.parameters()) / 1e6:.0f}M params; "
          f"N={n_new} new tokens, T={TEMPERATURE}, top_p={TOP_P}, threads {torch.get_num_threads()}, "
          f"{'EOS allowed' if args.allow_eos else 'EOS suppressed'}; load {loadavg()}", flush=True)

    rows = []
    for b in sizes:
        backend.batch_size = b
        messages = all_messages[:b]
        arms = {
            "deltalab": lambda r: run_deltalab(backend, messages, sampling, 1000 * r),
            "plain": lambda r: run_plain(backend, messages, n_new, r),
        }
        for name, fn in arms.items():  # warm-up
            fn(-1 if name == "plain" else 10**6)
        rates: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(args.repeats):
            for name in (("deltalab", "plain") if r % 2 == 0 else ("plain", "deltalab")):
                load = loadavg()
                tokens, seconds = arms[name](r)
                if not args.allow_eos:
                    assert tokens == b * n_new, (name, tokens, b * n_new)
                rates[name].append(tokens / seconds)
                print(f"  B={b:<3} {name:<8} round {r + 1}: {tokens:5d} tokens {seconds:6.2f} s "
                      f"{tokens / seconds:7.1f} tok/s (load before {load})", flush=True)
        med = {k: statistics.median(v) for k, v in rates.items()}
        rows.append((b, med["deltalab"], med["plain"]))

    print(f"\ntokens/s, median of {args.repeats} (alternating); goal: deltalab >= {GOAL}x plain")
    print(f"{'batch':>5} | {'deltalab':>9} | {'plain':>9} | {'ratio':>6} | verdict")
    for b, d, p in rows:
        print(f"{b:>5} | {d:9.1f} | {p:9.1f} | {d / p:6.3f} | {'PASS' if d / p >= GOAL else 'MISS'}")
    ok = all(d / p >= GOAL for _, d, p in rows)
    print(f"{'PASS' if ok else 'MISS'}: deltalab's seeded sampling {'keeps' if ok else 'does not keep'} >= {GOAL}x "
          f"plain generate's tokens/s at every batch size ({os.cpu_count()} cores, load now {loadavg()})")


if __name__ == "__main__":
    main()
