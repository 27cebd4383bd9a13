"""Reading the final answer out of a free-form model completion.

Rules, in order; the first one that finds something wins:

1. ``answer_tag``: the content of the last ``<answer>…</answer>`` pair (any case, across lines).
2. ``boxed``: the last complete ``\\boxed{…}`` or ``\\fbox{…}``, nested braces matched
   (``\\boxed{\\frac{1}{2}}`` → ``\\frac{1}{2}``); an unclosed ``\\boxed{`` is no answer.
3. ``phrase``: the last "answer" phrase — "the answer is", "the answer to this problem is",
   "final answer:", "**Final Answer:**", "answer =", a "Final Answer" heading line, a GSM8K
   ``#### 42`` line — and what follows it up to the end of that sentence (a period before
   a space or the end) or line. A phrase opening its line with nothing after it takes the next line.
   Phrases that judge rather than state ("the answer is correct", "… is not …") do not count.
4. ``bold``: the last ``**…**`` / ``__…__`` span that looks like an answer (a value, optionally
   ``x = value``, optionally a short unit word); labels such as ``**Step 2:**`` are skipped.
5. ``last_number``: numeric golds only, the last number anywhere in the completion.

Numeric golds: a marker's text is reduced to one number — the part after its last ``=``, then
the first number there; a marker holding no number counts as not found. Non-numeric golds get
the marker's text with surrounding whitespace, ``$``, ``\\(…\\)``, ``**`` and one trailing
period removed.

Number forms: integers; signs ``-``, ``−`` (U+2212), ``+``; thousands separators (``1,234,567``:
groups of exactly three digits, so ``1,2,3`` is three numbers); decimals (``3.25``, ``.5``);
fractions ``3/4``, ``\\frac{3}{4}``, ``\\dfrac``, ``\\tfrac``. A ``-`` right after a digit or a
closing bracket is subtraction (``8-5=3`` holds 8, 5, 3). Canonical form: ASCII ``-``, no ``+``,
no separators, ``.5`` → ``0.5``, fractions as ``a/b`` (not reduced); for integer golds an
integral decimal (``7.00``) becomes ``7``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKERS = ("answer_tag", "boxed", "phrase", "bold", "last_number")
EXPLICIT = ("answer_tag", "boxed", "phrase", "bold")  # the marker stated the answer explicitly


@dataclass(frozen=True)
class Extracted:
    text: str | None  # the final answer (canonical number for numeric golds), None when nothing found
    marker: str | None  # which rule found it (one of MARKERS), None when nothing found

    @property
    def explicit(self) -> bool:
        return self.marker in EXPLICIT


# ---- numbers -------------------------------------------------------------------------------
_SIGN = "[-+\u2212]"
# Thousands groups must be exactly three digits, else "1,2,3" (a list) would read as 123.
_INT = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)"
_DEC = rf"(?:{_INT}(?:\.[0-9]+)?|(?<![0-9.])\.[0-9]+)"
_NUMBER = re.compile(
    # A sign right after a digit or a closing bracket is a binary minus/plus, not part of the number.
    rf"(?:(?<![0-9)\]}}])(?P<sign>{_SIGN}))?"
    rf"(?:\\[cdt]?frac[ \t]*(?:\{{[ \t]*(?P<s1>{_SIGN}?)[ \t]*(?P<fn>{_DEC})[ \t]*\}}"
    rf"[ \t]*\{{[ \t]*(?P<s2>{_SIGN}?)[ \t]*(?P<fd>{_DEC})[ \t]*\}}|(?P<fn1>[0-9])(?P<fd1>[0-9]))"
    rf"|(?<![0-9])(?P<num>{_INT})/(?P<den>{_INT})"
    rf"|(?<![0-9])(?P<dec>{_DEC}))"
)


def _plain(digits: str, integer_gold: bool) -> str:
    whole, _, frac = digits.replace(",", "").partition(".")
    whole = whole.lstrip("0") or "0"  # no int(): it refuses digit strings over 4300 long
    return f"{whole}.{frac}" if frac and not (integer_gold and not frac.strip("0")) else whole


def _canonical(m: re.Match, integer_gold: bool) -> str:
    neg = sum(m[g] in ("-", "\u2212") for g in ("sign", "s1", "s2")) % 2 == 1  # \frac{-3}{-4} is 3/4
    if m["dec"] is not None:
        value = _plain(m["dec"], integer_gold)
    else:  # fractions stay as written (not reduced): a/b
        a, b = (m["fn"], m["fd"]) if m["fn"] else (m["fn1"], m["fd1"]) if m["fn1"] else (m["num"], m["den"])
        value = f"{_plain(a, False)}/{_plain(b, False)}"
    return "-" + value if neg and value.split("/")[0].strip("0.") else value  # never "-0"


def is_numeric(gold: str) -> bool:
    return _NUMBER.fullmatch(gold.strip()) is not None


def canonical_number(text: str, integer_gold: bool = False) -> str | None:
    m = _NUMBER.search(text)
    return _canonical(m, integer_gold) if m else None


def _reduce(span: str, integer_gold: bool) -> str | None:
    # "12 - 5 = 7" states 7; if nothing numeric follows the last "=", fall back to the whole span.
    return canonical_number(span.rpartition("=")[2], integer_gold) or canonical_number(span, integer_gold)


# ---- text clean-up ---------------------------------------------------------------------------
_BRACE = re.compile(r"\\.|[{}]", re.S)  # "\{" and "\}" are literal braces, not grouping
_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|mathrm|mathbf)[ \t]*\{")
_LEAD = ("**", "__", "$", "\\(", "\\[", ":")
_TRAIL = ("**", "__", "$", "\\)", "\\]")


def _brace_pairs(text: str, start: int = 0) -> dict[int, int]:
    """Opening-brace index -> matching closing-brace index, in one pass (no rescans per box)."""
    pairs, stack = {}, []
    for m in _BRACE.finditer(text, start):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _edges(s: str) -> str:
    while True:
        prev, s = s, s.strip()
        s = next((s[len(p) :] for p in _LEAD if s.startswith(p)), s)
        s = next((s[: -len(p)] for p in _TRAIL if s.endswith(p)), s)
        if (m := _WRAPPER.match(s)) and _brace_pairs(s).get(m.end() - 1) == len(s) - 1:
            s = s[m.end() : -1]  # the whole span is \text{…} or \boxed{…}
        if s == prev:
            return s


def _clean(span: str) -> str | None:
    s = _edges(span)
    return (_edges(s[:-1]) if s.endswith(".") else s) or None  # one trailing period only


# ---- rules 1-4: where the completion states its answer ----------------------------------------
_TAG = re.compile(r"<\s*(/?)\s*answer\s*>", re.I)
_BOXED = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_PHRASE = re.compile(
    r"""\b(?P<final>final[ \t]+)?answer\b(?:\*\*|__)?
    (?:(?P<colon>[ \t]*[:=])
      |(?P<verb>(?:[ \t,]+[^\s.!?:,]{1,30}){0,14}?[ \t,]+   # a few words: "answer to this problem is"
          (?:is|was|equals|(?:would|will|should|must|shall)[ \t]+be)\b(?:[ \t]*:)?)
      |(?P<bare>))                                           # heading: "## Final Answer", "**Answer**"
    |(?P<hash>^[ \t]*\#{4}[ \t]*)(?=\$?[-+\u2212]?[0-9][0-9,./]*\$?[ \t]*\.?[ \t]*$)""",
    re.I | re.M | re.X,
)
_SENTENCE_END = re.compile(r"[.!](?=\s|$)|\n")  # "3.5" is a decimal: a period ends only before space
_LINE_DECO = re.compile(r"[ \t#>*_-]*")
_SPACE = re.compile(r"\s{0,400}")
# "the answer is correct", "… is not 5": the model judges an answer here, it does not state one.
_JUDGEMENT = re.compile(r"(?:(?:in)?correct|right|wrong|reasonable|plausible|valid|consistent|not|as follows|below|above|"
                        r"clear|obvious|straightforward)\b", re.I)


def _sentence(text: str, pos: int) -> str:
    m = _SENTENCE_END.search(text, pos, pos + 300)
    return text[pos : m.start() if m else pos + 300]


def _tag_span(text: str) -> str | None:
    # One linear pass (a lazy "<answer>(.*?)</answer>" rescans to the end for every unclosed
    # opener): the last closing tag, paired with the last opening tag before it.
    opened = pair = None
    for m in _TAG.finditer(text):
        if not m.group(1):
            opened = m.end()
        elif opened is not None:
            pair, opened = (opened, m.start()), None
    return text[pair[0] : pair[1]] if pair else None


def _boxed_span(text: str) -> str | None:
    opens = [m.end() - 1 for m in _BOXED.finditer(text)]
    pairs = _brace_pairs(text, opens[0]) if opens else {}
    for o in reversed(opens):  # an unclosed \boxed{ (truncated output) is skipped
        if o in pairs:
            return text[o + 1 : pairs[o]]
    return None


def _phrase_span(text: str) -> str | None:
    for m in reversed(list(_PHRASE.finditer(text))):
        if m["hash"] is not None:
            return _sentence(text, m.end())
        line_start = text.rfind("\n", 0, m.start()) + 1
        heading = _LINE_DECO.fullmatch(text, line_start, m.start()) is not None
        span = _sentence(text, m.end())
        if m["bare"] is not None:
            # a bare "answer" is only a marker as a heading: "To answer this, ..." is prose
            closed_bold = m.group().endswith(("**", "__"))
            if not (heading and (m["final"] or closed_bold or not _edges(span))):
                continue
        if heading and not _edges(span) and (nl := text.find("\n", m.end())) != -1:
            span = _sentence(text, _SPACE.match(text, nl).end())
        if _JUDGEMENT.match(_edges(span)):
            continue
        return span
    return None


_BOLD = re.compile(r"\*\*([^*\n]{1,120})\*\*|(?<![A-Za-z0-9_])__([^_\n]{1,120})__(?![A-Za-z0-9_])")
_UNIT_TAIL = re.compile(r"(?:\$|\\\))?[ \t]*(?:%|\\%|°|\^\\circ|\^\{\\circ\})?(?:[ \t]+[A-Za-z]{1,15}){0,2}[ \t]*\.?")
_LABEL = re.compile(r"(?:step|solution|answer|final|explanation|reasoning|note|problem|question|verif\w*|check|"
                    r"conclusion|summary|approach|analysis|calculation|method|case|part|given|hint|result|"
                    r"thinking|plan|understanding|let'?s|therefore|thus)\b", re.I)
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # prose words, not latex commands
_SMALL = {"a", "an", "the", "of", "and", "to", "in", "for", "on", "with", "by", "at"}


def _bold_number(span: str, integer_gold: bool) -> str | None:
    lhs, eq, rhs = span.strip().rpartition("=")
    if eq and (":" in lhs or len(lhs) > 40):  # "**Step 2: x = 5**" is a step, not the answer
        return None
    s = _edges(rhs).removeprefix("\\$")
    m = _NUMBER.match(s)
    if not m or not _UNIT_TAIL.fullmatch(s, m.end()):
        return None
    if s[m.end() :].strip() == "." and m["dec"] and m["dec"].isdigit() and not m["sign"]:
        return None  # "**1.**": a list enumerator
    return _canonical(m, integer_gold)


def _bold_text(span: str) -> str | None:
    s = _clean(span)
    if not s or len(s) > 60 or s.endswith(":") or _LABEL.match(s):
        return None
    words = _WORD.findall(s)
    if len(words) >= 4 or (len(words) >= 2 and all(w[0].isupper() or w in _SMALL for w in words)):
        return None  # prose or a Title Case heading ("**Understanding the Problem**")
    return s


# ---- the extractor -------------------------------------------------------------------------------
def extract(completion: str, numeric: bool, integer_gold: bool = False) -> Extracted:
    text = completion or ""
    for marker, find in (("answer_tag", _tag_span), ("boxed", _boxed_span), ("phrase", _phrase_span)):
        span = find(text)
        if span is not None:
            value = _reduce(span, integer_gold) if numeric else _clean(span)
            if value is not None:
                return Extracted(value, marker)
    for m in reversed(list(_BOLD.finditer(text))):
        value = _bold_number(m[1] or m[2], integer_gold) if numeric else _bold_text(m[1] or m[2])
        if value is not None:
            return Extracted(value, "bold")
    last = None
    for last in _NUMBER.finditer(text) if numeric else ():
        pass
    return Extracted(_canonical(last, integer_gold), "last_number") if last else Extracted(None, None)
