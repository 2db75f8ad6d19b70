"""MATH answers: extraction and Minerva normalisation, on hand-written cases and the datasets' solutions."""

import pytest

from lmforge.data.evalsets import EvalSets
from lmforge.eval.generation_requests import generation_requests
from lmforge.eval.math_answers import extract_math_answer, last_boxed, math_exact_match, normalize_math_answer
from lmforge.eval.oe_eval_requests import request_bytes


@pytest.mark.parametrize("raw, normal", [
    ("\\dfrac{9}{7}", "\\frac{9}{7}"), ("\\frac12", "\\frac{1}{2}"), ("$x = 5$", "5"), ("10\\text{ inches}", "10"),
    ("1,000", "1000"), ("\\boxed{3\\sqrt2}", "3\\sqrt{2}"), ("45^\\circ", "45"), ("x\\in[-2,7]", "x\\in[-2,7]"),
])  # fmt: skip
def test_normalisation(raw, normal):
    assert normalize_math_answer(raw) == normal


def test_extraction_prefers_the_final_answer_sentence_then_the_last_box():
    assert extract_math_answer("so $\\boxed{4}$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.") == "$\\frac{1}{2}$"
    assert extract_math_answer("We get $\\boxed{\\frac{a}{b}}$ and then $\\boxed{\\{1,2\\}}$") == "\\{1,2\\}"
    assert last_boxed("\\boxed{x") is None and extract_math_answer("no answer") is None
    assert math_exact_match("Final Answer: The final answer is $\\dfrac{9}{7}$. I hope it is correct.", "\\frac{9}{7}")
    assert not math_exact_match("Final Answer: The final answer is $9$. I hope it is correct.", "\\frac{9}{7}")


SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus"]


def test_every_reference_solution_scores_as_correct_and_not_by_luck():
    src = EvalSets().source
    reqs = [r for s in SUBJECTS for r in generation_requests(request_bytes(src, f"minerva_math_{s}", "gold_bpb_0shot"), s, "gold_bpb_0shot")]
    assert len(reqs) == 5000
    assert all(math_exact_match(r.doc["solution"], r.doc["answer"]) for r in reqs)
    shifted = sum(math_exact_match(reqs[(i + 1) % len(reqs)].doc["solution"], r.doc["answer"]) for i, r in enumerate(reqs))
    assert shifted < 400  # small answers (2, 3, ...) repeat; most do not
