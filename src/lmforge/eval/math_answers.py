"""MATH (Minerva) answers: extraction from a generation and normalisation for exact match.

The 4-shot Minerva prompt ends each solution with "Final Answer: The final answer is $X$. I hope it
is correct."; the answer is that X, else the content of the generation's last ``\\boxed{...}``.
Both it and the gold ``answer`` are normalised as in the Minerva paper (appendix D: the part after
the last ``=``, units and filler words removed, ``\\text{}``/``\\boxed{}`` unwrapped, ``\\frac12`` ->
``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``, dollar signs and thousands commas dropped), plus
``\\dfrac``/``\\tfrac`` -> ``\\frac``; equal normal forms score 1. (Symbolic equivalence, OLMES's
"flex" match, is not attempted.)
"""

from __future__ import annotations

import re

__all__ = ["extract_math_answer", "last_boxed", "math_exact_match", "normalize_math_answer"]

SUBSTITUTIONS = [("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"), (",\\text{and}", ","),
                 ("\\text{and}", ","), ("\\text{m}", "\\text{}"), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac")]
REMOVED_EXPRESSIONS = ["square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue", "points",
                       "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
                       "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
                       "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots"]
_FINAL = re.compile(r"final answer is\s*(.*?)\.\s*I hope it is correct", re.IGNORECASE | re.DOTALL)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_math_answer(generation: str) -> str | None:
    found = _FINAL.findall(generation)
    if found:
        return found[-1].strip()
    return last_boxed(generation)


def normalize_math_answer(answer: str) -> str:
    answer = answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        answer = answer.replace(expr, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def math_exact_match(generation: str, gold: str) -> bool:
    answer = extract_math_answer(generation)
    return answer is not None and normalize_math_answer(answer) == normalize_math_answer(gold)
