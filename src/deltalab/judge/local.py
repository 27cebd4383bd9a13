"""The in-process LLM judge (`judge.backend: transformers`): any local model directory, no server.

- `scoring: json`: the judge writes its reply (greedy, batched, up to `max_tokens`), parsed like a
  served judge's.
- `scoring: probability`: the reply is written for it, `factuality: ` first; at each score position
  the judge's next-token distribution over "1".."5" is read (deltalab.judge.scores), its argmax is
  written in, and the next dimension's name follows. One forward pass over the rubric and the trace,
  then one short incremental pass per dimension, on the key-value cache.

Traces of equal token length share a forward pass, and no others: nothing is padded, so a score
never depends on which traces were batched together (`runtime.judge.batch_size` is a throughput
knob; on CPU, logits of equal-length rows are bit-identical whatever the batch size). Answers are
cached like a served judge's (SQLite, keyed by model weights, messages and mode), so a rerun computes
only the traces it has not seen.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import polars as pl

from deltalab.backends import model_revision
from deltalab.chat import REASON_CHARS
from deltalab.config import DIMENSIONS, Params
from deltalab.errors import UserError
from deltalab.judge import JUDGMENT_SCHEMA, LLM_COLUMNS, STATS, rubric, scores
from deltalab.judge.cache import Cached, ResponseCache, cache_key
from deltalab.progress import bar

CACHE_FILE = "judge.sqlite"


class LocalJudge:
    """A Backend (deltalab.judge): the model is loaded once, for every generator's traces."""

    schema = JUDGMENT_SCHEMA | LLM_COLUMNS
    audited = True

    def __init__(self, params: Params, base_url: str | None):
        import torch

        from deltalab.backends.transformers import TransformersBackend

        cfg, runtime = params.judge, params.runtime
        self.cfg, self.runtime = cfg, runtime
        self.label = f"transformers:{cfg.model}"
        # The generation backend loads and configures the model; probability scoring uses it directly.
        self.backend = TransformersBackend(cfg.model, runtime.device, runtime.judge.batch_size, runtime.threads)
        self.tok, self.model, self.torch = self.backend.tok, self.backend.model, torch
        self.revision = model_revision(cfg.model) or cfg.model
        self.rubric = rubric.load(cfg.template, cfg.template_text)
        self.stats = dict.fromkeys(STATS, 0)
        if cfg.scoring == "probability":
            self.space, self.levels = score_tokens(self.tok, cfg.model)

    def key(self, messages: list[dict]) -> str:
        c = self.cfg
        return cache_key({"backend": "transformers", "model": self.revision, "messages": messages, "scoring": c.scoring,
                          "max_tokens": c.max_tokens if c.scoring == "json" else None,
                          "template_version": self.rubric.version})

    def judge(self, generator: str, traces: pl.DataFrame, steps: bool) -> list[dict]:
        items = zip(traces["question"], traces["gold_answer"], traces["completion"])
        msgs = [self.rubric.messages(q, a, t, self.cfg.scoring) for q, a, t in items]
        keys = [self.key(m) for m in msgs]
        self.cache = ResponseCache(Path(self.runtime.judge.cache_dir) / CACHE_FILE)
        todo = [i for i, k in enumerate(keys) if self.cache.get(k) is None]
        self.stats["cache_hits"] += len(keys) - len(todo)
        self.stats["requests"] += len(todo)
        try:
            with bar(len(todo), "judge (in-process)") as pbar:
                if self.cfg.scoring == "json":
                    self._generate(todo, msgs, keys, pbar)
                else:
                    self._probabilities(todo, msgs, keys, pbar)
            return [self.row(self.cache.get(k)) | {"cache_key": k} for k in keys]
        finally:
            self.cache.close()

    def _generate(self, todo: list[int], msgs: list[list[dict]], keys: list[str], pbar) -> None:
        from deltalab.backends import Request, Sampling

        sampling = Sampling(max_new_tokens=self.cfg.max_tokens, greedy=True)
        done = self.backend.generate([Request(msgs[i], 0) for i in todo], sampling, pbar.update)
        for i, c in zip(todo, done):
            self.cache.put(keys[i], Cached(c.text, c.prompt_tokens, c.completion_tokens))

    def _probabilities(self, todo: list[int], msgs: list[list[dict]], keys: list[str], pbar) -> None:
        from deltalab.backends.transformers import chat_text

        first = self.tok(f"{DIMENSIONS[0]}:{self.space}", add_special_tokens=False)["input_ids"]
        prefixes = {i: self.tok(chat_text(self.tok, msgs[i], self.cfg.model), add_special_tokens=False)["input_ids"] + first
                    for i in todo}
        groups: dict[int, list[int]] = defaultdict(list)
        for i in todo:
            groups[len(prefixes[i])].append(i)
        size = self.runtime.judge.batch_size
        for length in sorted(groups):
            members = groups[length]
            for start in range(0, len(members), size):
                batch = members[start:start + size]
                for i, (text, dists) in zip(batch, self._score([prefixes[i] for i in batch])):
                    value = json.dumps({"reply": text, "scores": {d: dists[d].as_json() for d in DIMENSIONS}}, sort_keys=True)
                    self.cache.put(keys[i], Cached(value, len(prefixes[i]), 2 * len(DIMENSIONS)))
                pbar.update(len(batch))
                self.cache.commit()

    def _score(self, prefixes: list[list[int]]) -> list[tuple[str, dict]]:
        """Teacher-forced replies for equal-length prefixes: (reply text, distribution per dimension)."""
        torch = self.torch
        ids = torch.tensor(prefixes, device=self.model.device)
        replies = [[f"{DIMENSIONS[0]}:{self.space}"] for _ in prefixes]
        dists: list[dict] = [{} for _ in prefixes]
        levels = torch.tensor(self.levels, device=self.model.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True)
            for k, dim in enumerate(DIMENSIONS):
                probs = out.logits[:, -1].float().softmax(-1)[:, levels].tolist()
                chosen = []
                for r, weights in enumerate(probs):
                    d = scores.distribution(weights)
                    dists[r][dim] = d
                    chosen.append(self.levels[d.argmax - 1])
                    replies[r].append(str(d.argmax))
                if k + 1 == len(DIMENSIONS):
                    break
                nxt = f"\n{DIMENSIONS[k + 1]}:{self.space}"
                tail = self.tok(nxt, add_special_tokens=False)["input_ids"]
                step = torch.tensor([[c, *tail] for c in chosen], device=self.model.device)
                out = self.model(input_ids=step, cache=out.cache, use_cache=True)
                for r in range(len(prefixes)):
                    replies[r].append(nxt)
        return [("".join(r), d) for r, d in zip(replies, dists)]

    def row(self, got: Cached) -> dict:
        base = {"judge": self.label, "template_version": self.rubric.version,
                "scoring": self.cfg.scoring, "cache_key": None, "prompt_tokens": got.prompt_tokens,
                "completion_tokens": got.completion_tokens, "rationale": None,
                **dict.fromkeys(DIMENSIONS), **{f"{d}_expected": None for d in DIMENSIONS}}
        if self.cfg.scoring == "probability":
            data = json.loads(got.text)
            dists = {d: scores.Distribution(tuple(v["probs"]), v["mass"]) for d, v in data["scores"].items()}
            return base | scores.row(dists) | {"status": "ok", "reason": None, "raw_response": data["reply"],
                                               "score_mass": round(min(d.mass for d in dists.values()), 4)}
        try:
            values, rationale = rubric.parse(got.text)
        except rubric.ParseFailure as err:
            return base | {"status": "parse_error", "reason": str(err)[:REASON_CHARS], "raw_response": got.text,
                           "score_mass": None}
        return base | values | {"status": "ok", "reason": None, "rationale": rationale, "raw_response": got.text,
                                "score_mass": None}


def score_tokens(tok, model: str) -> tuple[str, list[int]]:
    """(what follows `name:`, the token ids of scores 1..5). Tokenizers that fold a leading space into a
    digit token (" 4") get `name:` and those tokens; tokenizers that split it off get `name: ` and the
    bare digits (SmolLM2)."""
    for space, variant in (("", " {}"), (" ", "{}")):
        ids = [tok(variant.format(d), add_special_tokens=False)["input_ids"] for d in range(1, 6)]
        if all(len(x) == 1 for x in ids) and len({x[0] for x in ids}) == 5:
            return space, [x[0] for x in ids]
    raise UserError(f"judge.scoring: probability needs the scores 1..5 as single tokens, and the tokenizer of "
                    f"{model} splits them (use scoring: json)")

