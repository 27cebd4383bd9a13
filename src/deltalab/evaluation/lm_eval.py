"""EleutherAI's lm-evaluation-harness as an evaluation backend (`evaluate.backend: lm_eval`).

One `lm_eval run` per checkpoint, as a subprocess: its imports, threads and logging stay out of the
stage, and `lm_eval.executable` may belong to another environment (vLLM pins its own transformers).
lm-eval scores every document with the task's own prompt, filters and metrics; its per-sample log
(`log_samples`) becomes deltalab's per-item rows, so the summary, the bootstrap CIs and the report
work exactly as for the other backends.

Rows: family = the configured task or group name (a group's subtasks count under it); prompt_id = a
hash of (task, doc_id, document); completion = the model's raw text (log-likelihood tasks: the choice
it scores highest); answer = the filtered answer that was scored; score = the per-sample metric;
correct = score >= 1 (exact_match and acc are 0 or 1 per document).
lm-eval's own outputs stay in logs/lm_eval/<name>[-seed<k>]/ (config.yaml, lm_eval.log,
results_*.json, samples_*.jsonl).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from deltalab.config import LM_EVAL_API, LmEval, Params
from deltalab.errors import UserError
from deltalab.io import content_id
from deltalab.signals import sigterm_raises

LOG_DIR = Path("logs/lm_eval")
SPLITS = ("eval_id", "eval_ood")
INVALID = "[invalid]"  # what lm-eval's regex filter answers when nothing matches
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's budget when a task sets none


def run_config(lm: LmEval, path: str, device: str, out: Path) -> dict:
    """The `lm_eval run --config` file for one checkpoint."""
    own = "model" if lm.model in LM_EVAL_API else "pretrained"
    cfg = {"model": lm.model, "model_args": {**lm.model_args, own: path},
           "tasks": [*lm.tasks.eval_id, *lm.tasks.eval_ood], "batch_size": lm.batch_size,
           "apply_chat_template": lm.apply_chat_template, "seed": lm.seed, "log_samples": True,
           "output_path": str(out / "results.json")}
    optional = {"include_path": lm.include_path, "num_fewshot": lm.num_fewshot, "limit": lm.limit,
                "system_instruction": lm.system_instruction,
                "gen_kwargs": lm.gen_kwargs or None, "confirm_run_unsafe_code": lm.confirm_run_unsafe_code or None}
    cfg |= {k: v for k, v in optional.items() if v is not None}
    if lm.model == "hf":
        cfg["device"] = device  # lm-eval's own default is cuda:0
    return cfg


def run_lm_eval(lm: LmEval, cfg: dict, out: Path, threads: int) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = [lm.executable] if lm.executable else [sys.executable, "-m", "lm_eval"]
    argv += ["run", "--config", str(out / "config.yaml")]
    # DELTALAB_PARAMS (set by the CLI) goes along: deltalab's own tasks (configs/lm_eval_tasks/deltalab_*)
    # render the student's prompt template from it.
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    log_path = out / "lm_eval.log"
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as err:
            raise UserError(f"evaluate.lm_eval.executable: cannot run `{argv[0]}` ({err.strerror})") from None
        # Snakemake and SLURM cancel jobs with SIGTERM: lm-eval (and the GPU memory of its vLLM
        # workers) is stopped by the `finally` below.
        with sigterm_raises():
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    if code != 0:
        lines = [x.strip() for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
        hint = " (install it: pip install -e '.[lm-eval]')" if "No module named lm_eval" in log_path.read_text() else ""
        raise UserError(f"lm_eval exited with code {code}{hint}; last lines of {log_path}: {' | '.join(lines[-3:])}")


def load(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """lm-eval's results file and its per-sample records per task."""
    found = sorted(out.glob("results_*.json"))
    if len(found) != 1:
        raise UserError(f"{out}: lm_eval wrote {len(found)} results files, expected 1 (see lm_eval.log)")
    results = json.loads(found[0].read_text())
    date = found[0].stem.removeprefix("results_")
    samples = {}
    for task in results["configs"]:
        path = out / f"samples_{task}_{date}.jsonl"
        if not path.exists():
            raise UserError(f"{path}: missing (lm_eval logged no samples for {task})")
        samples[task] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return results, samples


def families(lm: LmEval, results: dict) -> dict[str, tuple[str, str]]:
    """Each task lm-eval ran -> (split, configured task or group name)."""
    groups = results.get("group_subtasks", {})

    def leaves(name: str) -> list[str]:
        return [x for sub in groups[name] for x in leaves(sub)] if name in groups else [name]

    out: dict[str, tuple[str, str]] = {}
    for split in SPLITS:
        for name in getattr(lm.tasks, split):
            ran = [t for t in leaves(name) if t in results["configs"]]
            if not ran:
                raise UserError(f"evaluate.lm_eval.tasks.{split}: lm_eval ran no task for {name!r} "
                                "(a tag? list its tasks or a group)")
            for task in ran:
                if task in out and out[task] != (split, name):
                    raise UserError(f"evaluate.lm_eval.tasks: {task} is part of both {out[task][1]!r} and {name!r}")
                out[task] = (split, name)
    extra = sorted(set(results["configs"]) - set(out))
    if extra:
        raise UserError(f"evaluate.lm_eval.tasks: lm_eval ran {extra[0]!r}, which no listed task or group names")
    return out


class _Tokens:
    """Completion lengths with the checkpoint's tokenizer (None where there is none to load)."""

    def __init__(self, path: str):
        self.path, self.tok = path, None

    def __call__(self, text: str) -> int | None:
        if not Path(self.path, "tokenizer_config.json").exists():
            return None
        if self.tok is None:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(self.path)
        return len(self.tok(text, add_special_tokens=False).input_ids)


def _first(value):
    while isinstance(value, list):
        value = value[0] if value else ""
    return value


def task_rows(lm: LmEval, task: str, split: str, family: str, records: list[dict], results: dict, seed: int,
              tokens: _Tokens) -> list[dict]:
    filters = list(dict.fromkeys(r["filter"] for r in records))
    filt = lm.filter.get(task) or lm.filter.get(family) or filters[0]
    if filt not in filters:
        raise UserError(f"evaluate.lm_eval.filter: {task} has no filter {filt!r} (it has: {', '.join(filters)})")
    records = sorted((r for r in records if r["filter"] == filt), key=lambda r: r["doc_id"])
    metric = lm.metric.get(task) or lm.metric.get(family) or records[0]["metrics"][0]
    if metric not in records[0]["metrics"]:
        raise UserError(f"evaluate.lm_eval.metric: {task} has no per-sample metric {metric!r} "
                        f"(it has: {', '.join(records[0]['metrics'])})")
    if results.get("higher_is_better", {}).get(task, {}).get(metric) is False:
        raise UserError(f"evaluate.lm_eval.metric: {task}'s {metric} is lower-is-better; choose a metric that "
                        "is 1 for a correct answer")
    generative = results["configs"][task].get("output_type") == "generate_until"
    rows = []
    for r in records:
        try:
            score = float(r[metric])
        except (TypeError, ValueError):
            raise UserError(f"evaluate.lm_eval.metric: {task}'s {metric} has no per-document value "
                            "(a corpus-level metric); choose another") from None
        args = list(r["arguments"].values())  # one entry per request: {"arg_0": context, "arg_1": ...}
        if generative:
            text, answer = _first(r["resps"]), str(_first(r["filtered_resps"]))
            n = tokens(text)
            limit = (args[0].get("arg_1") or {}).get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
            finish = None if n is None else "length" if n >= limit else "stop"
            fmt = answer != INVALID
        else:
            lls = [float(x[0]) for x in r["filtered_resps"]]
            text = answer = str(args[max(range(len(lls)), key=lls.__getitem__)]["arg_1"]).strip()
            n, finish, fmt = 0, None, True
        rows.append(dict(seed=seed, split=split, family=family,
                         prompt_id=content_id(task, r["doc_id"], r["doc_hash"]), completion=text,
                         completion_tokens=n or 0, finish_reason=finish, answer=answer, score=score,
                         correct=score >= 1.0, format_ok=fmt, step_correct=None, step_accuracy=None))
    return rows


def answers(params: Params, name: str, seed: int, path: str) -> list[dict]:
    """Run lm-eval on one checkpoint and return deltalab's per-item rows."""
    lm = params.evaluate.lm_eval
    out = LOG_DIR / (name if seed < 0 else f"{name}-seed{seed}")
    print(f"evaluate {name}{'' if seed < 0 else f' seed {seed}'}: lm_eval {lm.model} on {path} (log: {out}/lm_eval.log)",
          flush=True)
    run_lm_eval(lm, run_config(lm, path, params.runtime.device, out), out, params.runtime.threads)
    results, samples = load(out)
    tokens = _Tokens(path)
    rows = []
    for task, (split, family) in families(lm, results).items():
        rows += task_rows(lm, task, split, family, samples[task], results, seed, tokens)
    return rows
