"""The judge rubric: render the shipped Jinja template, and parse (and validate) what came back.

Servers differ in how well they honour a JSON-schema `response_format` (`transformers serve`
ignores it), so every response is validated here, whatever was requested.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources

import jinja2

from deltalab.config import DIMENSIONS
from deltalab.errors import UserError

READS = ("templates",)
"""The shipped rubrics (relative to this file): code dependencies of every stage that imports this."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Rubric:
    name: str
    text: str

    @property
    def version(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"

    def messages(self, question: str | None, answer: str | None, trace: str | None, scoring: str = "json") -> list[dict]:
        content = _compile(self.text).render(question=question or "", answer=answer or "", trace=trace or "",
                                             reply_format=REPLY[scoring])
        return [{"role": "user", "content": content}]


_EXAMPLE = ", ".join(f'"{d}": <1-5>' for d in DIMENSIONS)
REPLY = {
    # The judge writes the object; its integers are the scores.
    "json": "## Your reply\nReply with one JSON object and nothing else, in this form:\n"
            f'{{{_EXAMPLE}, "rationale": "<one or two sentences>"}}',
    # The score is read at each `name:` position (probability scoring): one line per dimension.
    "probability": "## Your reply\nReply with exactly five lines, in this order and form, and nothing else:\n"
                   + "\n".join(f"{d}: <1-5>" for d in DIMENSIONS),
}
"""The reply instructions of each scoring mode, rendered where a rubric says {{ reply_format }}."""


@functools.lru_cache(maxsize=8)
def _compile(text: str) -> jinja2.Template:
    # Plain text out (no HTML escaping); a misspelt variable is an error, not an empty string.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(text)


def available() -> list[str]:
    folder = resources.files("deltalab.judge") / READS[0]
    return sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja"))


def load(name: str, text: str | None = None) -> Rubric:
    """`text` (judge.template_text, checked by the params loader) if given, else the shipped template
    `name`; an unknown name is a UserError naming judge.template."""
    if text is not None:
        return Rubric("inline", text)
    path = resources.files("deltalab.judge") / READS[0] / f"{name}.jinja"
    if not _NAME.match(name) or not path.is_file():
        shipped = ", ".join(available()) or "none"
        raise UserError(f"judge.template: unknown rubric template {name!r} (shipped: {shipped})")
    return Rubric(name, path.read_text(encoding="utf-8"))


def response_format() -> dict:
    """A strict JSON schema for the judgment object (servers that honour it constrain decoding)."""
    props = {d: {"type": "integer", "minimum": 1, "maximum": 5} for d in DIMENSIONS}
    props["rationale"] = {"type": "string"}
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "judgment", "strict": True, "schema": schema}}


class ParseFailure(ValueError):
    """A response that is not a valid judgment; str() is the reason recorded in the row."""


def _objects(text: str) -> list[dict]:
    """JSON objects found in `text`: the whole text, fenced blocks, then any `{...}` inside prose."""
    found, decoder = [], json.JSONDecoder()
    for chunk in [text, *_FENCE.findall(text)]:
        try:
            obj = json.loads(chunk.strip())
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def parse(text: str | None) -> tuple[dict[str, int], str | None]:
    """(scores, rationale) from a response, or ParseFailure with the reason."""
    if not text or not text.strip():
        raise ParseFailure("empty response")
    objects = _objects(text)
    if not objects:
        if "{" in text:
            try:
                json.loads(text[text.index("{"):])
            except ValueError as err:
                raise ParseFailure(f"invalid JSON ({err})") from None
        raise ParseFailure("no JSON object in the response")
    # Prefer the object that looks like a judgment (prose may hold other braces).
    obj = next((o for o in objects if any(d in o for d in DIMENSIONS)), objects[0])
    missing = [d for d in DIMENSIONS if d not in obj]
    if missing:
        raise ParseFailure(f"missing key(s): {', '.join(missing)}")
    scores = {}
    for d in DIMENSIONS:
        v = obj[d]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParseFailure(f"{d}: expected an integer 1..5, got {json.dumps(v)[:40]}")
        if not 1 <= v <= 5:
            raise ParseFailure(f"{d}: {v} is out of range 1..5")
        scores[d] = v
    rationale = obj.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        rationale = json.dumps(rationale, ensure_ascii=False)
    return scores, rationale
