"""Scores of generated text: gsm8k exact match after answer extraction, code pass@k.

gsm8k (8-shot chain of thought; each shot ends "So the answer is N."): the answer is the number
after the last "answer is" in the generation, else its last number; it is compared with the gold
``short_answer`` after both pass through the task's ``regexes_to_ignore`` (its config's
``metric_kwargs``: thousands commas, ``$``, anything up to ``#### ``, a final period), with a space
after a minus sign removed (two gold chains of thought write "- 10").

Code (``codex_humaneval``, ``codex_mbpp``): the program is the prompt's function header and the
completion (HumanEval) or the completion (MBPP), then the task's tests; it passes when it exits 0 in
:func:`lmforge.eval.sandbox.run_python`. pass@k from n samples with c passing is the unbiased
estimator of the Codex paper, ``1 - C(n-c, k) / C(n, k)``.

Short answers (SQuAD-style tasks): exact match and token F1 after the official SQuAD v1.1
normalisation (lower case, punctuation and articles removed), the best over the gold answers.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Sequence

from lmforge.eval.generation_requests import GenerationRequest

__all__ = ["GSM8K_REGEXES_TO_IGNORE", "code_passes", "code_program", "extract_gsm8k_answer", "gsm8k_exact_match", "normalize_answer",
           "pass_at_k", "squad_exact_match", "squad_f1", "squad_normalize"]

GSM8K_REGEXES_TO_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\s*(-\s?)?(\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(-\s?)?(\d[\d,]*(?:\.\d+)?)")


def extract_gsm8k_answer(generation: str) -> str | None:
    """The number after the last "answer is", else the last number; None when there is none."""
    found = list(_ANSWER_IS.finditer(generation)) or list(_NUMBER.finditer(generation))
    if not found:
        return None
    sign, digits = found[-1].group(1), found[-1].group(2)
    return ("-" if sign else "") + digits


def normalize_answer(text: str, regexes_to_ignore: Sequence[str] = GSM8K_REGEXES_TO_IGNORE) -> str:
    text = re.sub(r"^-\s+", "-", text.strip())
    for rx in regexes_to_ignore:
        text = re.sub(rx, "", text)
    return text.strip()


def gsm8k_exact_match(generation: str, gold: str, regexes_to_ignore: Sequence[str] = GSM8K_REGEXES_TO_IGNORE) -> bool:
    answer = extract_gsm8k_answer(generation)
    return answer is not None and normalize_answer(answer, regexes_to_ignore) == normalize_answer(gold, regexes_to_ignore)


def _tests(value) -> list[str]:
    """MBPP's test lists come as a list, or as its Python text (``"['assert ...', ...]"``)."""
    if isinstance(value, str):
        value = ast.literal_eval(value) if value.strip().startswith("[") else [value]
    return [str(v) for v in value]


def code_program(req: GenerationRequest, completion: str) -> str:
    """The program that tests ``completion`` for a code request."""
    doc = req.doc
    if "entry_point" in doc:  # HumanEval: the completion continues the prompt's function
        return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"
    if "test_list" in doc:  # MBPP: the completion is the whole function
        setup = doc.get("test_setup_code") or ""
        return completion.lstrip(" ").replace("\r\n", "\n") + "\n\n" + setup + "\n" + "\n".join(_tests(doc["test_list"])) + "\n"
    raise ValueError(f"{req.task} doc {req.doc_id}: not a code task (no entry_point or test_list)")


def code_passes(req: GenerationRequest, completion: str, *, timeout: float = 10.0) -> bool:
    from lmforge.eval.sandbox import run_python

    return run_python(code_program(req, completion), timeout=timeout).passed


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples (of n drawn, c correct) passes."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- extractive QA (SQuAD, NaturalQuestions, TriviaQA, CoQA, Jeopardy): the official SQuAD v1.1 rules --------
def squad_normalize(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(squad_normalize(prediction) == squad_normalize(g) for g in golds))


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    """Token-overlap F1 against the best-matching gold answer."""
    from collections import Counter

    pred = squad_normalize(prediction).split()
    best = 0.0
    for gold in golds:
        ref = squad_normalize(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if not pred or not ref:
            best = max(best, float(pred == ref))
        elif common:
            p, r = common / len(pred), common / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best
