"""gsm8k answer extraction and exact match, code programs and pass@k, on hand-written cases and the
datasets' own reference solutions."""

import pytest

from lmforge.data.evalsets import EvalSets
from lmforge.eval.generation_metrics import code_passes, code_program, extract_gsm8k_answer, gsm8k_exact_match, pass_at_k
from lmforge.eval.generation_requests import generation_requests
from lmforge.eval.oe_eval_requests import request_bytes


@pytest.mark.parametrize("generation, answer", [
    ("She sells 9 eggs at $2 each. 9 * 2 = 18. So the answer is 18.", "18"),
    ("So the answer is $1,250.", "1,250"),
    ("It drops 13 degrees to - 10 degrees. So the answer is - 10.", "-10"),
    ("The answer is 3.5", "3.5"),
    ("first 12, then 7 more: 19", "19"),  # no answer sentence: the last number
    ("So the answer is 5. Question: 7 apples", "5"),  # the answer sentence wins over later numbers
    ("no digits at all", None),
])  # fmt: skip
def test_gsm8k_answer_extraction(generation, answer):
    assert extract_gsm8k_answer(generation) == answer


def test_gsm8k_exact_match_normalises_both_sides():
    assert gsm8k_exact_match("So the answer is $1,250.", "1250")
    assert gsm8k_exact_match("So the answer is - 10.", "-10")
    assert not gsm8k_exact_match("So the answer is 18.", "180")
    assert not gsm8k_exact_match("I do not know", "18")


def test_every_gsm8k_gold_chain_of_thought_scores_as_correct():
    src = EvalSets().source
    reqs = generation_requests(request_bytes(src, "gsm8k", "gold_bpb_5shot"), "gsm8k", "gold_bpb_5shot")
    assert all(gsm8k_exact_match(r.gold_continuation, r.gold_answer) for r in reqs)
    assert sum(gsm8k_exact_match(reqs[(i + 1) % len(reqs)].gold_continuation, r.gold_answer) for i, r in enumerate(reqs)) < 20  # not by luck


def test_pass_at_k():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    assert pass_at_k(10, 1, 5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@pytest.mark.required_in_ci
def test_reference_solutions_pass_and_wrong_ones_fail_in_the_sandbox():
    src = EvalSets().source
    he = generation_requests(request_bytes(src, "codex_humaneval", "gold_bpb_0shot"), "codex_humaneval", "gold_bpb_0shot")[:3]
    mbpp = generation_requests(request_bytes(src, "codex_mbpp", "gold_bpb_0shot"), "codex_mbpp", "gold_bpb_0shot")[:3]
    for r in he:
        assert code_passes(r, r.doc["canonical_solution"]), code_program(r, r.doc["canonical_solution"])
        assert not code_passes(r, "    return None\n")
    for r in mbpp:
        assert code_passes(r, r.gold_continuation), code_program(r, r.gold_continuation)  # " def ...\r\n": as the file has it
        assert not code_passes(r, "def nothing():\n    pass\n")


def test_squad_exact_match_and_f1_on_known_cases():
    from lmforge.eval.generation_metrics import squad_exact_match, squad_f1, squad_normalize

    assert squad_normalize("The  Eiffel Tower!") == "eiffel tower"
    assert squad_exact_match("the Eiffel tower.", ["Eiffel Tower", "Paris"]) == 1.0
    assert squad_exact_match("Tower", ["Eiffel Tower"]) == 0.0
    assert squad_f1("Tower", ["Eiffel Tower"]) == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert squad_f1("in Paris France", ["Paris", "France"]) == pytest.approx(0.5)  # best gold: p 1/3, r 1
    assert squad_f1("banana", ["apple"]) == 0.0 and squad_f1("", [""]) == 1.0 and squad_f1("a", ["the"]) == 1.0
