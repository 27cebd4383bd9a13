"""Final-answer extraction from free-form completions (pure unit tests, no I/O)."""

from __future__ import annotations

import re

import pytest

from deltalab.answers import EXPLICIT, MARKERS, Extracted, canonical_number, extract, is_numeric

# (completion, gold, expected text, expected marker)
CASES = [
    # 1. <answer> tags: the last pair wins, and they beat \boxed
    ("<answer>x = 12</answer>", "12", "12", "answer_tag"),
    ("So \\boxed{3}.\n<answer>4</answer>", "4", "4", "answer_tag"),
    ("<answer>5</answer> wait, no.\n<ANSWER>\n-6\n</ANSWER>", "-6", "-6", "answer_tag"),
    ("<answer> True </answer>", "True", "True", "answer_tag"),
    ("<answer>[1, 2, 3]</answer>", "[1, 2, 3]", "[1, 2, 3]", "answer_tag"),
    ("<answer>N</answer>\nSo 3 + 4 = 7.", "7", "7", "last_number"),  # template echoed back
    # 2. \boxed: the last complete one, nested braces matched
    ("First \\boxed{3}, then corrected: \\boxed{5}", "5", "5", "boxed"),
    ("$\\boxed{\\frac{1}{2}}$", "1/2", "1/2", "boxed"),
    ("\\[\\boxed{\\dfrac{-3}{4}}\\]", "-3/4", "-3/4", "boxed"),
    ("\\boxed{\\sqrt{\\frac{1}{2}}}", "\\sqrt{\\frac{1}{2}}", "\\sqrt{\\frac{1}{2}}", "boxed"),
    ("\\fbox{42}", "42", "42", "boxed"),
    ("\\boxed{12}. Let me recheck... \\boxed{1", "12", "12", "boxed"),  # truncated box skipped
    ("Thus 3 + 4 = 7. \\boxed{", "7", "7", "last_number"),
    ("\\boxed{1,234,567}", "1234567", "1234567", "boxed"),
    ("\\boxed{x = -5}", "-5", "-5", "boxed"),
    ("\\boxed{\\text{(C)}}", "(c)", "(C)", "boxed"),
    # 3. answer phrases
    ("Let's add.\n3 + 4 = 7\nThe answer to this arithmetic problem is 7.", "7", "7", "phrase"),
    ("5 * 2 = 10\nThe final answer to the given arithmetic problem is 10.", "10", "10", "phrase"),
    ("Steps: 3 * 4 = 12\n\n**Final Answer:** 12", "12", "12", "phrase"),
    ("We get -3.\nFinal answer: $-3$", "-3", "-3", "phrase"),
    ("Therefore, the answer is: 1,234.", "1234", "1234", "phrase"),
    ("So the answer is \\(5\\)", "5", "5", "phrase"),
    ("The answer is 3.5.", "3.5", "3.5", "phrase"),
    ("The answer is 12 - 5 = 7.", "7", "7", "phrase"),
    ("The answer is 7 (because 3 + 4 = 7).", "7", "7", "phrase"),
    ("The answer is 5 apples. They were 2 + 3 = 5 apples.", "5", "5", "phrase"),
    ("The answer is $\\frac{3}{4}$.", "3/4", "3/4", "phrase"),
    ("So the answer is x = −3.", "-3", "-3", "phrase"),
    ("**The answer is 9**", "9", "9", "phrase"),
    ("So the answer is 7.0", "7", "7", "phrase"),
    ("## Final Answer\n\n42", "42", "42", "phrase"),
    ("3 * 24 = 72\n#### 72", "72", "72", "phrase"),
    ("The answer is N.\n3 + 4 = 7", "7", "7", "last_number"),  # placeholder: fall through
    ("The answer is N.\nSo it is **7**.", "7", "7", "bold"),
    # an early line says "answer", the last one states it
    ("The answer is 3 + 4 = 7.\nThen double it: 7 * 2 = 14.\nThe answer is 14.", "14", "14", "phrase"),
    ("Answer: let me think step by step.\n3 + 4 = 7\n7 * 2 = 14", "14", "14", "last_number"),
    ("The answer is 12.\nLet me check this answer is correct: 3 * 4 = 12 and 12 / 2 = 6.", "12", "12", "phrase"),
    # non-numeric golds through the phrase rule
    ("The statement holds for all n, so the answer is True.", "True", "True", "phrase"),
    ("After checking each option, the correct answer is (c).", "(c)", "(c)", "phrase"),
    ("Final answer: [1, 2, 3]", "[1, 2, 3]", "[1, 2, 3]", "phrase"),
    ("**Answer:**\n(b)", "(b)", "(b)", "phrase"),
    ("The answer is $\\frac{\\pi}{2}$.", "\\frac{\\pi}{2}", "\\frac{\\pi}{2}", "phrase"),
    # 4. bold: the last answer-like span; labels are not answers
    ("**Step 1:** 3 + 4 = 7\n**Step 2:** 7 * 3 = 21\n\nSo we get **21**.", "21", "21", "bold"),
    ("**Solution**\n6 * 7 = 42\n**x = 42**", "42", "42", "bold"),
    ("**Step 2:** 5 + 5 = 10, so she has **10 apples** in all.", "10", "10", "bold"),
    ("**Step 1:** add 3 and 4 to get 7.\n**Step 2:** subtract 2 to get 5.", "5", "5", "last_number"),
    ("The difference is **−4**.", "-4", "-4", "bold"),
    ("**Analysis**\nIt holds for every n.\n\n**True**", "True", "True", "bold"),
    ("**Understanding the Problem**\nOption (a) fails.\n**Solution:**\n__(b)__", "(b)", "(b)", "bold"),
    ("Options (a) and (b) fail; only **(c)** works.", "(c)", "(c)", "bold"),
    ("**Step 1:** sort the list.\nSorted: **[1, 2, 3]**", "[1, 2, 3]", "[1, 2, 3]", "bold"),
    ("Checking n = 4 gives a counterexample. The answer is False.", "False", "False", "phrase"),
    # 5. last number (numeric golds only)
    ("3 + 4 = 7, then 7 - 2 = 5", "5", "5", "last_number"),
    ("We compute 8-5=3", "3", "3", "last_number"),
    ("Compute 10-4", "4", "4", "last_number"),  # subtraction, not -4
    ("so the total is = -12", "-12", "-12", "last_number"),
    ("The difference is −4", "-4", "-4", "last_number"),
    ("(7)-2 leaves 5 and then (2)-3", "3", "3", "last_number"),
    ("The items are 1,2,3", "3", "3", "last_number"),  # a list, not 123
    ("It costs 1,234,567 dollars", "1234567", "1234567", "last_number"),
    ("Each friend gets 3/4 of a pie", "3/4", "3/4", "last_number"),
    ("It weighs 7.00 kg", "7", "7", "last_number"),
    ("It weighs 7.25 kg", "7.25", "7.25", "last_number"),
    ("Each gets \\tfrac{1}{2}", "1/2", "1/2", "last_number"),
    # nothing found
    ("I could not solve this problem.", "7", None, None),
    ("", "7", None, None),
    ("There are 5 options to consider.", "True", None, None),  # no last-number rule for text golds
]


def _integer(gold: str) -> bool:
    return re.fullmatch(r"[-+\u2212]?[0-9][0-9,]*", gold) is not None


@pytest.mark.parametrize(("completion", "gold", "text", "marker"), CASES)
def test_extract(completion, gold, text, marker):
    got = extract(completion, numeric=is_numeric(gold), integer_gold=_integer(gold))
    assert (got.text, got.marker) == (text, marker)


@pytest.mark.parametrize(
    ("text", "integer_gold", "expected"),
    [
        ("−4", False, "-4"),
        ("+5", False, "5"),
        ("x=-3", False, "-3"),
        ("8-5", False, "8"),
        ("(2)-3", False, "2"),
        ("1,234,567", False, "1234567"),
        ("1,2,3", False, "1"),
        ("12,34", False, "12"),
        (".5", False, "0.5"),
        ("-.5", False, "-0.5"),
        ("3.", False, "3"),
        ("7.0", False, "7.0"),
        ("7.00", True, "7"),
        ("3.50", True, "3.50"),
        ("-3/4", False, "-3/4"),
        ("\\frac{3}{4}", False, "3/4"),
        ("-\\dfrac{3}{4}", False, "-3/4"),
        ("\\frac{-6}{-8}", False, "6/8"),
        ("-0", False, "0"),
        ("007", False, "7"),
        ("no number here", False, None),
    ],
)
def test_canonical_number(text, integer_gold, expected):
    assert canonical_number(text, integer_gold) == expected


@pytest.mark.parametrize(
    ("gold", "numeric"),
    [
        ("-4", True),
        ("−4", True),
        ("+7", True),
        ("1,234", True),
        ("0.5", True),
        ("3/4", True),
        ("\\frac{3}{4}", True),
        (" 12 ", True),
        ("True", False),
        ("(c)", False),
        ("[1, 2]", False),
        ("1,2,3", False),
        ("x^2", False),
        ("N", False),
        ("", False),
    ],
)
def test_is_numeric(gold, numeric):
    assert is_numeric(gold) is numeric


def test_explicit_markers():
    assert MARKERS == ("answer_tag", "boxed", "phrase", "bold", "last_number")
    assert all(Extracted("5", m).explicit for m in EXPLICIT)
    assert not Extracted("5", "last_number").explicit
    assert not Extracted(None, None).explicit
    assert extract("\\boxed{5}", numeric=True).explicit
    assert not extract("3 + 2 = 5", numeric=True).explicit
