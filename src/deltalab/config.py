"""params.yaml as pydantic models: the one loader everybody uses (CLI, Snakefile, tests).

Validation is strict: unknown keys, wrong types, out-of-range values and names that point at nothing
(a generator, task family or micro model that is not defined) are errors before any job starts.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from deltalab import paths
from deltalab.errors import UserError

PositiveInt = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(Strict):
    """A task family: where its prompts come from and how answers are verified."""

    source: Literal["reasoning_gym", "file", "hf"]
    dataset: str | None = None
    """reasoning-gym dataset name (source: reasoning_gym), or a Hugging Face dataset id or local
    dataset directory (source: hf)."""
    subset: str | None = None
    """hf: the dataset's configuration name (e.g. `main` for openai/gsm8k)."""
    revision: str | None = None
    """hf: the dataset revision (a commit hash pins it exactly)."""
    split: str = "train"
    """hf: which split to read."""
    question_field: str = "question"
    """hf: the column holding the question."""
    answer_field: str = "answer"
    """hf: the column holding the reference answer."""
    keep_fields: list[str] = []
    """hf: other columns kept as the prompt's metadata (default none: some datasets carry whole
    reference solutions per row)."""
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
        if self.source in ("reasoning_gym", "hf") and not self.dataset:
            raise ValueError(f"a {self.source} task needs `dataset`")
        if self.source == "hf" and self.verifier == "reasoning_gym":
            raise ValueError("an hf task cannot use the reasoning_gym verifier")
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
    """Out-of-domain, tier 1: the shift the study's OOD question is asked on."""
    eval_far: dict[str, PositiveInt] = {}
    """Out-of-domain, tier 2: harder shifts, reported beside tier 1."""


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
    train_tasks: list[str] | None = Field(default=None, min_length=1)
    """This model's training families instead of `micro_models.train_tasks` (e.g. generators that
    learn a broader mixture than the student)."""

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


SERVE_FIELDS = ("model", "port", "host", "tp", "seed")


class Serve(Strict):
    """A managed OpenAI-compatible server: the stage starts it on the node it runs on, waits for its
    health check, sends its requests there, and always stops it (also on failure or SIGTERM)."""

    command: str
    """Command template; {model}, {port}, {host}, {tp} and {seed} are filled in, e.g.
    `vllm serve {model} --host {host} --port {port} --tensor-parallel-size {tp} --seed {seed}`."""
    tp: PositiveInt = 1
    """Tensor-parallel size ({tp}): GPUs per server."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Default: a free port."""
    health_path: str = "/health"
    startup_timeout_s: Annotated[float, Field(gt=0)] = 1800.0
    """Loading a 70B model from a network filesystem takes minutes."""
    env: dict[str, str] = {}
    """Extra environment variables for the server (never secrets: params are versioned)."""

    @model_validator(mode="after")
    def _template(self) -> Serve:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.command) if f is not None}
        except ValueError as err:
            raise ValueError(f"command: not a valid template ({err})") from None
        unknown = sorted(fields - set(SERVE_FIELDS))
        if unknown:
            raise ValueError(f"command: unknown placeholder {{{unknown[0]}}} (known: {', '.join(SERVE_FIELDS)})")
        if "port" not in fields and self.port is None:
            raise ValueError("command: needs {port} (or a fixed `port`), so deltalab knows where it listens")
        return self


def _server_fields(backend: str, base_url: str | None, serve: Serve | None) -> None:
    if serve is not None and backend != "openai":
        raise ValueError("`serve` starts an OpenAI-compatible server: set `backend: openai`")
    if serve is not None and base_url:
        raise ValueError("set `base_url` or `serve`, not both (a managed server has its own address)")
    if backend == "openai" and not (base_url or serve):
        raise ValueError("the openai backend needs `base_url` (a running server) or `serve` (a managed one)")


def _jinja_text(text: str) -> str:
    # Syntax is checked here, before any job; variables are checked at render time, where the
    # prompt's fields are known (deltalab.prompting).
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"line {err.lineno} of the template: {err.message}") from None
    return text


PromptText = Annotated[str, AfterValidator(_jinja_text)]


class PromptTemplate(Strict):
    """How a task's question becomes the chat messages a model is sent (deltalab.prompting renders
    them). `system` and `user` are Jinja templates over `question`, `family` and the task's fields
    (reasoning-gym metadata such as `expression`, or a file's extra columns)."""

    system: PromptText | None = None
    """System prompt (optional)."""
    user: PromptText = "{{ question }}"
    """The user turn."""
    fold_system: bool = False
    """For models that take no system role (or whose publishers advise none, e.g. R1 distills): the
    system prompt goes at the top of the user turn instead."""


class PromptOverride(Strict):
    """A generator's or the student's changes to the study's template (unset keys are inherited)."""

    system: PromptText | None = None
    """Replaces the system prompt; an empty string removes it."""
    user: PromptText | None = None
    fold_system: bool | None = None


class Prompt(Strict):
    """Prompt templates of the study: `families.<family>`, else `default`, else the built-in one for
    the family's source (deltalab.prompting.builtin); a generator's or the student's `prompt:`
    overrides keys of the result."""

    default: PromptTemplate | None = None
    families: dict[str, PromptTemplate] = {}


REASONING_FIELDS = ("reasoning", "content")


def _reasoning_template(text: str) -> str:
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    if "content" not in fields or fields - set(REASONING_FIELDS):
        raise ValueError("reasoning_format: use {reasoning} and {content} only, and {content} must appear")
    return text


ReasoningFormat = Annotated[str, AfterValidator(_reasoning_template)]
DEFAULT_REASONING = "<think>\n{reasoning}\n</think>\n\n{content}"


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
    serve: Serve | None = None
    """Start this server for the stage (openai backend; `base_url` then comes from it)."""
    reasoning_format: ReasoningFormat = DEFAULT_REASONING
    """How a reply split by the server into `reasoning_content` and `content` (vLLM reasoning parsers)
    is stored as one trace; `{content}` alone drops the reasoning."""
    prompt: PromptOverride | None = None
    """This generator's changes to the study's prompt template (e.g. `{fold_system: true}`)."""

    @model_validator(mode="after")
    def _one_model(self) -> Generator:
        if (self.micro_model is None) == (self.model is None):
            raise ValueError("set exactly one of `micro_model` and `model`")
        _server_fields(self.backend, self.base_url, self.serve)
        return self

    @property
    def model_path(self) -> str:
        return paths.at(paths.MODEL, self.micro_model) if self.micro_model else str(self.model)


RUBRIC_FIELDS = ("question", "answer", "trace", "reply_format")


def _rubric_template(text: str) -> str:
    # Checked here, before any request: a misspelt variable would otherwise fail at the first trace.
    import jinja2
    import jinja2.meta

    try:
        ast = jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"line {err.lineno} of the template: {err.message}") from None
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - set(RUBRIC_FIELDS))
    if unknown:
        raise ValueError(f"undefined variable {unknown[0]!r} (known: {', '.join(RUBRIC_FIELDS)})")
    return text


RubricTemplate = Annotated[str, AfterValidator(_rubric_template)]
DIMENSIONS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision", "signal_to_noise")
Direction = Literal["correct->wrong", "wrong->correct", "wrong->wrong", "correct->correct"]


class Judge(Strict):
    """Who rates every trace on the five dimensions (1-5)."""

    backend: Literal["verifier", "openai", "transformers"] = "verifier"
    """verifier: deterministic scores from step checks (micro-world); openai: an LLM judge through
    any OpenAI-compatible server; transformers: a local LLM judge in-process (no server), batched."""
    model: str | None = None
    """Served model name (openai backend), or a local model directory / hub id (transformers backend)."""
    scoring: Literal["json", "probability"] = "json"
    """json: the judge writes the five integer scores as a JSON object (large judges).
    probability: G-Eval-style, for small or unconstrained judges: at each dimension's score position
    the judge's next-token distribution over "1".."5" gives the expected score (kept, a float) and
    its argmax (the integer score). In-process it is read directly; through a server it needs
    `top_logprobs` in the replies (vLLM, OpenAI; not `transformers serve`)."""
    top_logprobs: Annotated[int, Field(ge=5, le=20)] = 20
    """probability scoring through a server: alternatives asked for at each token."""
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    template: str = "rubric_v1"
    """Rubric template shipped in deltalab/judge/templates/<template>.jinja; its version is in every row."""
    template_text: RubricTemplate | None = None
    """Your own rubric instead of the shipped one: Jinja text using {{ question }}, {{ answer }},
    {{ trace }} and {{ reply_format }} (the reply instructions of the scoring mode, deltalab.judge.rubric.REPLY)
    (kept in the params, so editing it reruns the judge); its version is in every row."""
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
    serve: Serve | None = None
    """Start this server (serving `model`) for the judge stage; `base_url` then comes from it."""

    @model_validator(mode="after")
    def _openai_fields(self) -> Judge:
        if self.backend in ("openai", "transformers") and not self.model:
            raise ValueError(f"the {self.backend} judge needs `model`")
        _server_fields(self.backend, self.base_url, self.serve)
        if self.backend == "transformers" and self.base_url:
            raise ValueError("the transformers judge runs in-process: it takes no `base_url`")
        return self


class SecondJudge(Judge):
    """The judge that re-scores every trace for `reliability` (the study's `judge:` is the first judge:
    its judgments made the pairs). Same keys as `judge:`, and two more backends:
    noisy: the first judge's scores plus Gaussian noise of SD `noise`, rounded and clipped to 1-5,
    seeded by `seed` (deltalab.reliability.noisy_judge) -- a known-imperfect judge for the micro-world;
    verifier: the verifier's scores, which the judge stage keeps beside an LLM judge's (`verifier_<dim>`),
    so only step-checkable (micro-model) traces get scores.
    An LLM second judge (openai, transformers) uses runtime.judge.cache_dir like the first, so a rerun
    sends no request."""

    backend: Literal["noisy", "verifier", "openai", "transformers"]
    noise: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """noisy: the SD of the noise added to each score (score units)."""

    @model_validator(mode="after")
    def _noise(self) -> SecondJudge:
        if (self.backend == "noisy") != (self.noise is not None):
            raise ValueError("`noise` goes with backend noisy (and only with it)")
        return self

    def as_judge(self) -> Judge:
        """The `judge:` section an LLM second judge runs as (deltalab.judge.runner.judge_all)."""
        return Judge.model_validate(self.model_dump(exclude={"noise"}))


class Reliability(Strict):
    """Judge reliability: a second judge re-scores every trace; the reliability stage reports how far it
    agrees with the first (per dimension) and how stable each top-k / bottom-k selection is under it."""

    second_judge: SecondJudge
    bootstrap: PositiveInt = 1000
    """Resamples for the CIs (over traces for agreement, over candidate pairs for selection overlap)."""
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    seed: Seed = 0
    """The bootstrap's seed (the noisy judge has its own: second_judge.seed)."""


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

    @property
    def ranked(self) -> bool:
        """Keeps the k pairs with the largest (top_k) or smallest (bottom_k) judged delta: a cut-off
        that a different judge can move."""
        return self.method in ("top_k", "bottom_k")


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
    prompt: PromptOverride | None = None
    """The student's changes to the study's prompt template: the pairs' prompts, training and
    evaluation all use the student's rendering."""

    @model_validator(mode="after")
    def _one_model(self) -> Student:
        if (self.micro_model is None) == (self.model is None):
            raise ValueError("set exactly one of `micro_model` and `model`")
        return self

    @property
    def model_path(self) -> str:
        return paths.at(paths.MODEL, self.micro_model) if self.micro_model else str(self.model)


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


class LmEvalTasks(Strict):
    """lm-eval task or group names (`lm_eval ls tasks`, or YAMLs under `include_path`) per split."""

    eval_id: list[str] = []
    eval_ood: list[str] = []

    @model_validator(mode="after")
    def _some(self) -> LmEvalTasks:
        if not (self.eval_id or self.eval_ood):
            raise ValueError("list at least one lm-eval task under `eval_id` or `eval_ood`")
        both = sorted(set(self.eval_id) & set(self.eval_ood))
        if both:
            raise ValueError(f"task {both[0]!r} is listed under both eval_id and eval_ood")
        return self


LM_EVAL_API = ("local-completions", "local-chat-completions")


class LmEval(Strict):
    """Standard benchmarks through EleutherAI's lm-evaluation-harness (`evaluate.backend: lm_eval`)."""

    model: Literal["hf", "vllm", "local-completions", "local-chat-completions"] = "hf"
    """lm-eval model type: hf (in-process transformers), vllm (GPU), or an OpenAI-compatible server
    (generative tasks only: log-likelihood tasks need logprobs that `transformers serve` lacks)."""
    model_args: dict[str, Any] = {}
    """Extra model arguments (e.g. dtype, max_length, base_url, tokenized_requests); the checkpoint is
    filled in as `pretrained` (hf, vllm) or `model` (servers)."""
    tasks: LmEvalTasks
    include_path: str | None = None
    """Directory of local task YAMLs."""
    num_fewshot: Annotated[int, Field(ge=0)] | None = None
    """Default: each task's own."""
    batch_size: PositiveInt | Literal["auto"] = 1
    limit: PositiveInt | None = None
    """Documents per task (for quick checks; results are then not the benchmark's)."""
    apply_chat_template: bool = False
    system_instruction: str | None = None
    """lm-eval's system instruction (a system turn with apply_chat_template)."""
    gen_kwargs: dict[str, Any] = {}
    """Overrides of every generative task's generation settings, e.g. {max_gen_toks: 32768}."""
    metric: dict[str, str] = {}
    """Per task: the per-sample metric that decides `correct` (default: the task's first, e.g. exact_match, acc)."""
    filter: dict[str, str] = {}
    """Per task: which filter's answers count (default: the task's first, e.g. gsm8k's strict-match)."""
    seed: Seed = 1234
    """lm-eval's python, numpy, torch and few-shot seeds."""
    confirm_run_unsafe_code: bool = False
    """Code tasks (humaneval, mbpp) execute model-written code; lm-eval refuses them without this."""
    executable: str | None = None
    """The lm_eval command, e.g. a separate vLLM environment's `/opt/vllm-env/bin/lm_eval`; default:
    this environment's (`python -m lm_eval`)."""

    @model_validator(mode="after")
    def _args(self) -> LmEval:
        own = "model" if self.model in LM_EVAL_API else "pretrained"
        if own in self.model_args:
            raise ValueError(f"model_args: `{own}` is filled in by deltalab (the checkpoint being evaluated)")
        if self.model in LM_EVAL_API and "base_url" not in self.model_args:
            raise ValueError(f"model_args: {self.model} needs `base_url` (the server's /v1/... endpoint URL)")
        if self.model == "local-chat-completions" and self.batch_size != 1:
            raise ValueError("batch_size: local-chat-completions sends one chat per request (use model_args.num_concurrent)")
        return self


class Evaluate(Strict):
    """How students are evaluated: greedy answers on eval_id and eval_ood, scored by the task verifiers
    (or standard benchmarks through lm-eval: `backend: lm_eval`)."""

    backend: Literal["transformers", "openai", "lm_eval"] = "transformers"
    """transformers (in-process) | openai (a server that serves the checkpoint directories by path) |
    lm_eval (standard benchmarks: the `lm_eval` section; the prompts stage's eval splits are unused)."""
    max_new_tokens: PositiveInt = 128
    base_url: str | None = None
    api_key_env: str | None = None
    extra_body: dict[str, Any] | None = None
    lm_eval: LmEval | None = None
    serve: Serve | None = None
    """Start this server for each checkpoint ({model} = its directory); `base_url` then comes from it."""
    reasoning_format: ReasoningFormat = DEFAULT_REASONING
    bootstrap: PositiveInt = 2000
    """Bootstrap resamples for every confidence interval."""
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    seed: Seed = 0

    @model_validator(mode="after")
    def _server(self) -> Evaluate:
        _server_fields(self.backend, self.base_url, self.serve)
        return self

    @model_validator(mode="after")
    def _lm_eval(self) -> Evaluate:
        if self.backend == "lm_eval" and self.lm_eval is None:
            raise ValueError("the lm_eval backend needs an `lm_eval` section (model, tasks)")
        if self.lm_eval is not None and self.backend != "lm_eval":
            raise ValueError("`lm_eval` is set but unused: set `backend: lm_eval`")
        return self


class RuntimeGenerate(Strict):
    batch_size: PositiveInt = 128
    concurrency: PositiveInt = 8
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    """Per-request timeout of the openai backend (generate and evaluate)."""
    max_retries: Annotated[int, Field(ge=0)] = 6
    """Retries of a failed openai-backend request (429 / 5xx / timeouts / connection errors / unparsable
    bodies), with exponential backoff and jitter; a request that still fails stops the stage."""


class RuntimeJudge(Strict):
    concurrency: PositiveInt = 8
    batch_size: PositiveInt = 8
    """transformers judge: traces per forward pass. Only traces of equal token length share a pass
    (no padding), so scores never depend on it."""
    cache_dir: str = ".cache/deltalab"
    """Persistent cache of judge responses (SQLite), keyed by request content."""


class RuntimeTrain(Strict):
    gpus: Annotated[int, Field(ge=0)] = 0
    """GPUs (processes) per train job: `deltalab train --gpus`; more than one runs under accelerate
    launch. Snakemake's resources (a cluster profile's set-resources) can override it per rule."""
    cache_dir: str = ".cache/deltalab"
    """Reference log-probabilities computed once per (reference model, pair) and reused by every
    ablation and seed that trains on the same pair (SQLite)."""
    reference_batch_size: PositiveInt = 64
    """Pairs per reference forward pass (pairs of equal lengths only, so values never depend on it)."""
    distributed: Literal["zero3", "fsdp", "ddp"] = "zero3"
    """How full fine-tuning spreads over more than one GPU (`deltalab train --gpus N`): the accelerate
    config workflow/accelerate/<this>.yaml. LoRA runs always use ddp (see deltalab.training.launch)."""


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
    prompt: Prompt = Prompt()
    generators: dict[str, Generator] = Field(min_length=1)
    judge: Judge = Judge()
    ablations: dict[str, Ablation] = {}
    student: Student | None = None
    train: Train = Train()
    evaluate: Evaluate = Evaluate()
    reliability: Reliability | None = None
    """Absent: no reliability stage."""
    runtime: Runtime = Runtime()

    def ranked_ablations(self) -> list[str]:
        """The ablations whose selection ranks pairs by a judged delta (Selection.ranked)."""
        return [name for name, a in self.ablations.items() if a.selection.ranked]

    def train_for(self, ablation: str) -> Train:
        """The `train` section with the ablation's own overrides applied."""
        return Train.model_validate({**self.train.model_dump(), **self.ablations[ablation].train})


def _references(p: Params, base: Path) -> list[tuple[str, str]]:
    """(dotted key, problem) for every name or path that points at nothing."""
    bad: list[tuple[str, str]] = []

    def need(name: str, pool: dict, key: str, what: str) -> None:
        if name not in pool:
            bad.append((key, f"unknown {what} {name!r} (defined: {', '.join(pool) or 'none'})"))

    for split in paths.SPLITS:
        for fam in getattr(p.prompts, split):
            need(fam, p.tasks, f"prompts.{split}.{fam}", "task family")
    for fam in p.prompts.eval_id:
        if fam in p.tasks and fam not in p.prompts.train:
            bad.append((f"prompts.eval_id.{fam}", "in-domain families must also be in prompts.train"))
    for split in ("eval_ood", "eval_far"):
        for fam in getattr(p.prompts, split):
            if fam in p.prompts.train:
                bad.append((f"prompts.{split}.{fam}", "out-of-domain families must not be in prompts.train"))
    for fam in p.prompt.families:
        need(fam, p.tasks, f"prompt.families.{fam}", "task family")
    if p.micro_models:
        for i, fam in enumerate(p.micro_models.train_tasks):
            need(fam, p.tasks, f"micro_models.train_tasks.{i}", "task family")
        for name, m in p.micro_models.models.items():
            for i, fam in enumerate(m.train_tasks or []):
                need(fam, p.tasks, f"micro_models.models.{name}.train_tasks.{i}", "task family")
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
    if p.reliability and p.reliability.second_judge.backend == "verifier" and p.judge.backend == "verifier":
        bad.append(("reliability.second_judge.backend", "the verifier is already the judge (pick another second judge)"))
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x})") from None
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
