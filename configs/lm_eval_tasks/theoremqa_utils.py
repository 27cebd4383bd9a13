"""TheoremQA for lm-eval: the prompt, and the score of the final "The answer is X"."""

import math
import re

FINAL = re.compile(r"answer is[:\s]*(.+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?")


def doc_to_text(doc: dict) -> str:
    return (f"Question: {doc['Question']}\nSolve it step by step, then end with \"The answer is X\", where X "
            "is a number, a list of numbers, True or False, or an option letter.")


def final_answer(text: str) -> str:
    found = FINAL.findall(text)
    return found[-1].strip().strip("$").rstrip(".").strip() if found else ""


def _numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text.replace(",", "") if "[" not in text else text)]


def correct(pred: str, gold: str, kind: str) -> bool:
    if not pred:
        return False
    if kind == "bool":
        return pred.split()[0].strip(".,").lower() == gold.strip().lower()
    if kind == "option":
        letter = re.search(r"\(?([a-dA-D])\)?", pred)
        return bool(letter) and letter.group(1).lower() == gold.strip("() ").lower()
    want, got = _numbers(gold), _numbers(pred)
    if not want or len(got) < len(want):
        return False
    got = got[: len(want)] if kind.startswith("list") else got[:1]
    return len(got) == len(want) and all(math.isclose(g, w, rel_tol=1e-2, abs_tol=1e-9) for g, w in zip(got, want))


def process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": int(correct(final_answer(results[0]), str(doc["Answer"]), str(doc.get("Answer_type", ""))))}
