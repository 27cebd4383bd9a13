"""generate: sample `n` traces per training prompt from one generator and verify each.

Output rows (one per trace) carry provenance (model, revision, sampling, seed, sample index), the
completion, token counts, finish reason, and the verdict: the task verifier's final-answer score and,
for micro-world step traces, per-step correctness.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from deltalab import chat, prompting
from deltalab.backends import ChatTemplateError, Completion, Request, Sampling, model_revision
from deltalab.config import Generator, Params
from deltalab.errors import RequestFailed, UserError
from deltalab.io import content_id, derive_seed, write_parquet
from deltalab.progress import bar, summary
from deltalab.prompting import Template
from deltalab.serve import endpoint
from deltalab.verify import verdict

SCHEMA = {
    "trace_id": pl.String,
    "prompt_id": pl.String,
    "family": pl.String,
    "generator": pl.String,
    "model": pl.String,
    "model_revision": pl.String,
    "backend": pl.String,
    "decoding": pl.String,
    "sampling": pl.String,
    "seed": pl.Int64,
    "sample_index": pl.Int64,
    "completion": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "finish_reason": pl.String,
    "answer": pl.String,
    "score": pl.Float64,
    "correct": pl.Boolean,
    "format_ok": pl.Boolean,
    "step_correct": pl.List(pl.Boolean),
    "step_accuracy": pl.Float64,
}


def make_backend(name: str, gen: Generator, params: Params, base_url: str | None = None):
    rt = params.runtime
    if gen.backend == "openai":
        from deltalab.backends.openai import OpenAIBackend

        key = chat.api_key(gen.api_key_env, f"generators.{name}.api_key_env")
        return OpenAIBackend(base_url or gen.base_url, gen.served_model or gen.model_path, key, rt.generate,
                             gen.extra_body, gen.reasoning_format)
    from deltalab.backends.transformers import TransformersBackend

    if not Path(gen.model_path).exists() and gen.micro_model:
        raise UserError(f"{gen.model_path}: micro model not built (run the micro_models stage first)")
    return TransformersBackend(gen.model_path, rt.device, rt.generate.batch_size, rt.threads)


def requests_for(gen: Generator, prompts: list[dict], n: int, templates: dict[str, Template]) -> list[Request]:
    """In-process: one seeded request per sample. A server: one request per prompt for all `n`
    samples (the server's `n`), seeded like sample 0."""
    msgs = [prompting.messages(templates[p["family"]], p) for p in prompts]
    if gen.backend == "openai":
        return [Request(m, derive_seed(gen.seed, p["prompt_id"], 0), n) for p, m in zip(prompts, msgs)]
    return [Request(m, derive_seed(gen.seed, p["prompt_id"], i)) for p, m in zip(prompts, msgs) for i in range(n)]


def traces(name: str, gen: Generator, params: Params, prompts: pl.DataFrame, greedy: bool,
           base_url: str | None = None, client: dict | None = None) -> pl.DataFrame:
    """The traces; an openai backend's request counts are added to `client`."""
    sampling = Sampling(gen.temperature, gen.top_p, gen.max_new_tokens, greedy)
    n = 1 if greedy else gen.n
    rows = [(p, i) for p in prompts.iter_rows(named=True) for i in range(n)]
    owner = f"generators.{name}"
    templates = prompting.for_families(params, prompts["family"], gen.prompt, owner)
    requests = requests_for(gen, prompts.to_dicts(), n, templates)
    backend = make_backend(name, gen, params, base_url)
    decoding = "greedy" if greedy else "sample"
    with bar(len(rows), f"generate {name} ({decoding})") as pbar:
        try:
            completions: list[Completion] = backend.generate(requests, sampling, pbar.update)
        except RequestFailed as err:  # openai: one request per prompt, in order
            raise UserError(f"generate {name}: prompt {prompts['prompt_id'][err.index]} ({decoding}) failed: "
                            f"{err.reason}{prompting.system_hint(templates, owner)}; nothing written") from None
        except ChatTemplateError as err:
            raise UserError(f"{err}{prompting.system_hint(templates, owner)}") from None
    if client is not None and hasattr(backend, "stats"):
        chat.merge_stats(client, backend.stats)
    seeds = [r.seed for r in requests for _ in range(r.n)]
    sent = [r.messages for r in requests for _ in range(r.n)]
    revision = model_revision(gen.model_path)
    sampling_json = json.dumps(sampling.as_dict(), sort_keys=True)
    steps = gen.micro_model is not None
    out = []
    for (p, i), seed, c in zip(rows, seeds, completions, strict=True):
        out.append(
            dict(
                trace_id=content_id("trace", name, p["prompt_id"], decoding, i, c.text),
                prompt_id=p["prompt_id"],
                family=p["family"],
                generator=name,
                model=gen.model_path,
                model_revision=revision,
                backend=gen.backend,
                decoding=decoding,
                sampling=sampling_json,
                seed=seed if c.seed is None else c.seed,
                sample_index=i,
                completion=c.text,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                finish_reason=c.finish_reason,
                **verdict(p, c.text, steps),
            )
        )
    table = pl.DataFrame(out, schema=SCHEMA)
    # The messages sent, as a hash, whenever they are more than the bare question (which the
    # prompt_id already identifies): the micro-world's traces keep their columns, and bytes.
    if not all(t.bare for t in templates.values()):
        table = table.with_columns(prompt_hash=pl.Series([prompting.messages_hash(m) for m in sent], dtype=pl.String),
                                   prompt_template=pl.Series([templates[p["family"]].version for p, _ in rows], dtype=pl.String))
    return table


def run(name: str, params: Params, prompts_path: Path, out: Path, greedy_out: Path) -> None:
    if name not in params.generators:
        raise UserError(f"unknown generator {name!r} (defined: {', '.join(params.generators)})")
    gen = params.generators[name]
    prompts = pl.read_parquet(prompts_path)
    client: dict = {}
    with endpoint(gen.base_url, gen.serve, gen.model_path, f"generate-{name}", gen.seed) as base_url:
        sampled = traces(name, gen, params, prompts, greedy=False, base_url=base_url, client=client)
        greedy = traces(name, gen, params, prompts, True, base_url, client) if gen.greedy else pl.DataFrame(schema=SCHEMA)
    write_parquet(sampled, out)
    write_parquet(greedy, greedy_out)
    acc = sampled["correct"].mean()
    g_acc = f", greedy accuracy {greedy['correct'].mean():.3f}" if greedy.height else ""
    counts = chat.summary(client) if client else ""
    summary(f"generate {name}: wrote {out} ({sampled.height} traces, accuracy {acc:.3f}{g_acc}) and {greedy_out}{counts}")
