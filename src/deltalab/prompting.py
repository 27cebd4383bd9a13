"""Prompt templates: how a task's question becomes the chat messages a model is sent.

`messages()` is the one function that renders them. `generate` sends exactly its messages (and
records their hash with every trace when they are more than the bare question), the pairs'
`prompt` column holds the student's rendering, `train` trains on that, and `evaluate` sends the
student's rendering again.

Which template applies to a (family, model): `prompt.families.<family>`, else `prompt.default`,
else the built-in one for the family's source (builtin()); then the generator's or the student's
`prompt:` overrides the keys it sets. The micro-world sets `prompt.default` to the bare question:
its models were trained on it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import jinja2

from deltalab.config import Params, PromptOverride, PromptTemplate
from deltalab.errors import UserError
from deltalab.io import content_id

BARE = "{{ question }}"
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


@functools.cache
def builtin(source: str) -> PromptTemplate:
    """The template of a family whose params set none. reasoning-gym families get reasoning-gym's own
    default system prompt (step by step, the answer in <answer></answer> tags: what its evaluations
    send); file and dataset tasks the standard math instruction (\\boxed{})."""
    if source == "reasoning_gym":
        from reasoning_gym.utils import SYSTEM_PROMPTS

        return PromptTemplate(system=SYSTEM_PROMPTS["default"], user=BARE)
    return PromptTemplate(user=f"{BARE}\n\n{BOXED}")


@dataclass(frozen=True)
class Template:
    """A resolved template, with the params key each part came from (for error messages)."""

    system: str | None
    user: str
    fold_system: bool
    where: str

    @property
    def bare(self) -> bool:
        """Only the question, as one user turn: what the micro-world's models were trained on."""
        return not self.system and self.user == BARE

    @property
    def version(self) -> str:
        return content_id("prompt", self.system, self.user, self.fold_system, length=12)


def resolve(params: Params, family: str, override: PromptOverride | None, owner: str) -> Template:
    """The template for `family` as `owner` (e.g. `generators.gen_l`, `student`) sees it."""
    if family in params.prompt.families:
        base, where = params.prompt.families[family], f"prompt.families.{family}"
    elif params.prompt.default is not None:
        base, where = params.prompt.default, "prompt.default"
    else:
        source = params.tasks[family].source
        base, where = builtin(source), f"the built-in {source} template"
    system, user, fold = base.system, base.user, base.fold_system
    if override is not None:
        changed = [k for k in ("system", "user", "fold_system") if getattr(override, k) is not None]
        if changed:
            where = f"{owner}.prompt over {where}"
        system = override.system if override.system is not None else system
        user = override.user if override.user is not None else user
        fold = override.fold_system if override.fold_system is not None else fold
    return Template(system or None, user, fold, where)


def for_families(params: Params, families, override: PromptOverride | None, owner: str) -> dict[str, Template]:
    return {f: resolve(params, f, override, owner) for f in sorted(set(families))}


@functools.lru_cache(maxsize=64)
def _compile(text: str) -> jinja2.Template:
    # Plain text out, no HTML escaping; a misspelt field is an error, not an empty string.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(text)


def _render(text: str, fields: dict, where: str, part: str) -> str:
    try:
        return _compile(text).render(**fields)
    except jinja2.UndefinedError as err:
        known = ", ".join(sorted(fields))
        raise UserError(f"{where}: {part}: {err.message} (fields of this prompt: {known})") from None


def fields(row: dict) -> dict:
    """What a template may use: the task's fields (metadata), the family and the question. Never the
    gold answer."""
    meta = json.loads(row["metadata"]) if row.get("metadata") else {}
    return {**(meta if isinstance(meta, dict) else {}), "family": row["family"], "question": row["question"]}


def messages(tpl: Template, row: dict) -> list[dict]:
    """The chat messages for one prompt row (`question`, `family`, `metadata`)."""
    if tpl.bare:
        return [{"role": "user", "content": row["question"]}]
    f = fields(row)
    user = _render(tpl.user, f, tpl.where, "user")
    system = _render(tpl.system, f, tpl.where, "system") if tpl.system else ""
    if system and tpl.fold_system:
        return [{"role": "user", "content": f"{system}\n\n{user}"}]
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def messages_hash(msgs: list[dict]) -> str:
    return content_id("messages", msgs)


def system_hint(templates: dict[str, Template], owner: str) -> str:
    """What to say when a model rejects the messages: a system turn is the usual cause."""
    if any(t.system and not t.fold_system for t in templates.values()):
        return f" (a model without a system role needs `fold_system: true` in {owner}.prompt)"
    return ""
