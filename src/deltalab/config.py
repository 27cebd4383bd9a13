"""params.yaml as pydantic models: the one loader everybody uses (CLI, Snakefile, tests).

Validation is strict: unknown keys, wrong types, out-of-range values and names that point at nothing
(a generator, task family or micro model that is not defined) are errors before any job starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deltalab.errors import UserError

PositiveInt = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(Strict):
    """A task family: where its prompts come from and how answers are verified."""

    source: Literal["reasoning_gym", "file"]
    dataset: str | None = None
    """reasoning-gym dataset name (source: reasoning_gym)."""
    config: dict[str, Any] = {}
    """Keyword arguments for `reasoning_gym.create_dataset` (source: reasoning_gym)."""
    question_format: str | None = None
    """Build the question from metadata fields, e.g. `"{expression} ="`; default: the dataset's question."""
    path: str | None = None
    """JSONL or parquet file with `question` and `answer` columns (source: file)."""
    verifier: Literal["reasoning_gym", "math_verify"] | None = None
    """Default: reasoning_gym for reasoning-gym tasks, math_verify for files."""

    @model_validator(mode="after")
    def _source_fields(self) -> Task:
        if self.source == "reasoning_gym" and not self.dataset:
            raise ValueError("a reasoning_gym task needs `dataset`")
        if self.source == "file" and not self.path:
            raise ValueError("a file task needs `path`")
        if self.source == "file" and self.verifier == "reasoning_gym":
            raise ValueError("a file task cannot use the reasoning_gym verifier")
        return self

    @property
    def verifier_name(self) -> str:
        return self.verifier or ("reasoning_gym" if self.source == "reasoning_gym" else "math_verify")


class Prompts(Strict):
    seed: Seed = 0
    """Base seed; every (split, family) derives its own seed from it."""
    train: dict[str, PositiveInt]
    eval_id: dict[str, PositiveInt]
    eval_ood: dict[str, PositiveInt] = {}


class MicroModel(Strict):
    arch: Literal["llama", "gpt2"] = "llama"
    hidden: PositiveInt
    layers: PositiveInt
    heads: PositiveInt
    steps: PositiveInt
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0, le=1)] = 3e-3
    warmup: Annotated[int, Field(ge=0)] = 50
    seed: Seed = 0
    role: Literal["generator", "student"] = "generator"

    @model_validator(mode="after")
    def _heads_divide(self) -> MicroModel:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class MicroModels(Strict):
    train_tasks: list[str] = Field(min_length=1)
    """Task families whose step traces the micro models learn from."""
    examples: PositiveInt = 60000
    """Distinct training problems drawn per family (eval prompts are excluded)."""
    data_seed: Seed = 1
    max_length: PositiveInt = 256
    models: dict[str, MicroModel] = Field(min_length=1)


class Generator(Strict):
    """One generator: which model, which backend, how to sample."""

    micro_model: str | None = None
    """Name of a model in `micro_models.models` (its path is data/models/<name>)."""
    model: str | None = None
    """Otherwise: a local model directory or a hub id."""
    backend: Literal["transformers", "openai"] = "transformers"
    n: PositiveInt = 4
    temperature: Annotated[float, Field(gt=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: PositiveInt = 128
    seed: Seed = 0
    greedy: bool = True
    scale: str | None = None
    family: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    served_model: str | None = None
    """Model name to send to the server (openai backend); default: the model path."""
    extra_body: dict[str, Any] | None = None
    """Extra fields sent with every request (server-specific knobs, e.g. vLLM's `top_k`)."""

    @model_validator(mode="after")
    def _one_model(self) -> Generator:
        if (self.micro_model is None) == (self.model is None):
            raise ValueError("set exactly one of `micro_model` and `model`")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs `base_url`")
        return self

    @property
    def model_path(self) -> str:
        return f"data/models/{self.micro_model}" if self.micro_model else str(self.model)


DIMENSIONS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision", "signal_to_noise")
Direction = Literal["correct->wrong", "wrong->correct", "wrong->wrong", "correct->correct"]


class Judge(Strict):
    """Who rates every trace on the five dimensions (1-5)."""

    backend: Literal["verifier", "openai"] = "verifier"
    """verifier: deterministic scores from step checks (micro-world); openai: an LLM judge."""
    model: str | None = None
    """Served model name (openai backend)."""
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    template: str = "rubric_v1"
    """Rubric template shipped in deltalab/judge/templates/<template>.jinja; its version is in every row."""
    temperature: Annotated[float, Field(ge=0)] = 0.0
    max_tokens: PositiveInt = 512
    seed: Seed = 0
    structured_output: bool = True
    """Ask for a JSON-schema response_format (servers that ignore it are parsed as plain text)."""
    max_parse_retries: Annotated[int, Field(ge=0)] = 2
    max_retries: Annotated[int, Field(ge=0)] = 6
    """Retries of 429 / 5xx / timeouts / connection errors, with exponential backoff and jitter."""
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    extra_body: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _openai_fields(self) -> Judge:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("the openai judge needs `base_url` and `model`")
        return self


class Selection(Strict):
    """Which pairs an ablation keeps, ranked by a sample-level delta."""

    method: Literal["all", "top_k", "bottom_k", "threshold", "random_k"] = "all"
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    count: PositiveInt | None = None
    by: str = "aggregate"
    """`aggregate` (mean of the five deltas) or one dimension, e.g. `step_coherence`."""
    threshold: float | None = None
    """threshold: keep pairs whose delta (`by`) is >= this."""
    seed: Seed = 0
    """random_k: the seed of the equal-size random control."""

    @model_validator(mode="after")
    def _fields(self) -> Selection:
        if self.by != "aggregate" and self.by not in DIMENSIONS:
            raise ValueError(f"`by` must be aggregate or one of {', '.join(DIMENSIONS)}, not {self.by!r}")
        sized = self.method in ("top_k", "bottom_k", "random_k")
        if sized and (self.fraction is None) == (self.count is None):
            raise ValueError(f"{self.method} needs exactly one of `fraction` and `count`")
        if not sized and (self.fraction is not None or self.count is not None):
            raise ValueError(f"{self.method} takes no `fraction` or `count`")
        if (self.method == "threshold") != (self.threshold is not None):
            raise ValueError("`threshold` goes with method threshold (and only with it)")
        return self


class Ablation(Strict):
    """A named pair set: chosen vs rejected generator, one trace per prompt each, then a selection."""

    chosen: str
    rejected: str
    pick: Literal["first", "random", "best"] = "first"
    """One trace per prompt when n > 1: sample 0, a seeded random sample, or the best-judged one."""
    pick_seed: Seed = 0
    pairs_per_prompt: PositiveInt = 1
    """Pairs per prompt: the k first picks of each side, paired in pick order (the zero-delta
    control pairs picks 1-2, 3-4, ...). Prompts with fewer usable traces give fewer pairs."""
    selection: Selection = Selection()
    directions: list[Direction] | None = None
    """Keep only these correctness directions (chosen->rejected), e.g. [wrong->correct]."""
    algorithm: Literal["dpo", "kto", "sft"] = "dpo"
    """How the student trains on this pair set: DPO on the pairs, KTO on their unpaired view, or the
    SFT control on the chosen traces only."""
    train: dict[str, Any] = {}
    """Overrides of the `train` section for this ablation only (same keys)."""


class Student(Strict):
    """The model that learns from the pairs (`base` in the report is this model untrained)."""

    micro_model: str | None = None
    """Name of a model in `micro_models.models` (its path is data/models/<name>)."""
    model: str | None = None
    """Otherwise: a local model directory or a hub id."""

    @model_validator(mode="after")
    def _one_model(self) -> Student:
        if (self.micro_model is None) == (self.model is None):
            raise ValueError("set exactly one of `micro_model` and `model`")
        return self

    @property
    def model_path(self) -> str:
        return f"data/models/{self.micro_model}" if self.micro_model else str(self.model)


class Lora(Strict):
    """Train a LoRA adapter (peft) instead of every weight; it is merged into the saved checkpoint."""

    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] | str = "all-linear"


class Train(Strict):
    """How the student trains on an ablation's pairs through TRL (DPOTrainer, KTOTrainer, SFTTrainer).
    Each ablation may override any key under `ablations.<name>.train`."""

    beta: Annotated[float, Field(gt=0)] = 0.1
    """DPO/KTO temperature: how far the policy may move from the reference."""
    loss_type: list[str] = Field(default=["sigmoid"], min_length=1)
    """DPO loss terms (TRL names): sigmoid (DPO), ipo, hinge, sft (an NLL term on chosen), ..."""
    loss_weights: list[float] | None = None
    """One weight per loss term; default 1 each."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-4
    lr_scheduler: str = "linear"
    warmup_steps: Annotated[int, Field(ge=0)] = 5
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    adam_beta2: Annotated[float, Field(gt=0, lt=1)] = 0.999
    epochs: Annotated[float, Field(gt=0)] = 1.0
    batch_size: PositiveInt = 16
    max_length: PositiveInt = 256
    """Tokens of prompt + completion; longer examples are truncated (counted and warned)."""
    seeds: list[Seed] = Field(default=[0, 1], min_length=1)
    """One student per seed; evaluation aggregates them."""
    desirable_weight: Annotated[float, Field(gt=0)] = 1.0
    """KTO: weight of the chosen (desirable) examples."""
    undesirable_weight: Annotated[float, Field(gt=0)] = 1.0
    """KTO: weight of the rejected (undesirable) examples."""
    lora: Lora | None = None
    logging_steps: PositiveInt = 10

    @model_validator(mode="after")
    def _weights(self) -> Train:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights needs one weight per loss_type ({len(self.loss_type)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self


class Evaluate(Strict):
    """How students are evaluated: greedy answers on eval_id and eval_ood, scored by the task verifiers."""

    backend: Literal["transformers", "openai"] = "transformers"
    """transformers (in-process) | openai (a server that serves the checkpoint directories by path)."""
    max_new_tokens: PositiveInt = 128
    base_url: str | None = None
    api_key_env: str | None = None
    extra_body: dict[str, Any] | None = None
    bootstrap: PositiveInt = 2000
    """Bootstrap resamples for every confidence interval."""
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    seed: Seed = 0

    @model_validator(mode="after")
    def _server(self) -> Evaluate:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs `base_url`")
        return self


class RuntimeGenerate(Strict):
    batch_size: PositiveInt = 128
    concurrency: PositiveInt = 8


class RuntimeJudge(Strict):
    concurrency: PositiveInt = 8
    cache_dir: str = ".cache/deltalab"
    """Persistent cache of judge responses (SQLite), keyed by request content."""


class RuntimeTrain(Strict):
    cache_dir: str = ".cache/deltalab"
    """Reference log-probabilities computed once per (reference model, pair) and reused by every
    ablation and seed that trains on the same pair (SQLite)."""
    reference_batch_size: PositiveInt = 64
    """Pairs per reference forward pass (pairs of equal lengths only, so values never depend on it)."""


class Runtime(Strict):
    """Throughput knobs: never result dependencies (changing them leaves outputs identical)."""

    threads: PositiveInt = 1
    device: str = "cpu"
    generate: RuntimeGenerate = RuntimeGenerate()
    judge: RuntimeJudge = RuntimeJudge()
    train: RuntimeTrain = RuntimeTrain()


class Params(Strict):
    tasks: dict[str, Task] = Field(min_length=1)
    prompts: Prompts
    micro_models: MicroModels | None = None
    generators: dict[str, Generator] = Field(min_length=1)
    judge: Judge = Judge()
    ablations: dict[str, Ablation] = {}
    student: Student | None = None
    train: Train = Train()
    evaluate: Evaluate = Evaluate()
    runtime: Runtime = Runtime()

    def train_for(self, ablation: str) -> Train:
        """The `train` section with the ablation's own overrides applied."""
        return Train.model_validate({**self.train.model_dump(), **self.ablations[ablation].train})


def _references(p: Params, base: Path) -> list[tuple[str, str]]:
    """(dotted key, problem) for every name or path that points at nothing."""
    bad: list[tuple[str, str]] = []

    def need(name: str, pool: dict, key: str, what: str) -> None:
        if name not in pool:
            bad.append((key, f"unknown {what} {name!r} (defined: {', '.join(pool) or 'none'})"))

    for split in ("train", "eval_id", "eval_ood"):
        for fam in getattr(p.prompts, split):
            need(fam, p.tasks, f"prompts.{split}.{fam}", "task family")
    for fam in p.prompts.eval_id:
        if fam in p.tasks and fam not in p.prompts.train:
            bad.append((f"prompts.eval_id.{fam}", "in-domain families must also be in prompts.train"))
    for fam in p.prompts.eval_ood:
        if fam in p.prompts.train:
            bad.append((f"prompts.eval_ood.{fam}", "out-of-domain families must not be in prompts.train"))
    if p.micro_models:
        for i, fam in enumerate(p.micro_models.train_tasks):
            need(fam, p.tasks, f"micro_models.train_tasks.{i}", "task family")
    micro = p.micro_models.models if p.micro_models else {}
    for name, g in p.generators.items():
        if g.micro_model is not None:
            need(g.micro_model, micro, f"generators.{name}.micro_model", "micro model")
    for name, a in p.ablations.items():
        need(a.chosen, p.generators, f"ablations.{name}.chosen", "generator")
        need(a.rejected, p.generators, f"ablations.{name}.rejected", "generator")
    for name, a in p.ablations.items():
        if name == "base":
            bad.append((f"ablations.{name}", "`base` is reserved for the untrained student"))
        try:
            p.train_for(name)
        except ValidationError as err:
            first = err.errors()[0]
            bad.append((f"ablations.{name}.train.{_dotted(first['loc'])}".rstrip("."), first["msg"].removeprefix("Value error, ")))
    if p.student and p.student.micro_model is not None:
        need(p.student.micro_model, micro, "student.micro_model", "micro model")
    for name, t in p.tasks.items():
        if t.path and not (base / t.path).is_file():
            bad.append((f"tasks.{name}.path", f"file not found: {t.path}"))
    return bad


def _dotted(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if not str(x).startswith("function-after"))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; any problem raises UserError('<file>: <key>: <problem>')."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"{path}: {where}invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    # Top-level `x-*` keys only hold YAML anchors (shared defaults), as in docker-compose files.
    raw = {k: v for k, v in raw.items() if not str(k).startswith("x-")}
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        key = _dotted(first["loc"]) or "<top>"
        msg = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{path}: {key}: {msg}{more}") from None
    bad = _references(params, path.parent)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{path}: {bad[0][0]}: {bad[0][1]}{more}")
    return params
