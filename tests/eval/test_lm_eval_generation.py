"""Agreement with lm-evaluation-harness on generation: the same prompts, the same greedy text.

The model is tests/eval/conftest.py's ``talker`` (a tiny OLMo-2 trained to produce varied,
task-shaped text) and its HF export. The requests are lmforge's own (OLMES's prompts, stop sequences
and budgets from the packaged task data) for gsm8k, DROP, NaturalQuestions and HumanEval, first
``LIMIT`` documents each, budgets capped at ``BUDGET`` tokens, each sent twice: as OLMES's plain
prompt, and rendered as one user turn of the talker's (Tulu) chat template with its EOS as a further
stop sequence (``make_prompts(..., GenerationSettings(chat=True))``; the talker was trained on both, and in the chat format it
sometimes ends with EOS). Two routes generate from them:

    (a) lm-eval's HF backend: ``HFLM(pretrained=EXPORT_DIR).generate_until`` with
        ``Instance("generate_until", {}, (context, {"until": stops, "max_gen_toks": n, "do_sample": False}))``
        (transformers' ``Olmo2ForCausalLM.generate``, lm-eval's batching, stopping and post-processing)
    (b) lmforge's engine: ``generate_all(model, tokenizer, make_prompts(requests))``

and must give exactly the same string for every request (so the same ``score_generation`` metrics).

How the two line up, read from lm-eval 0.4.13's ``HFLM.generate_until``:

* prompt tokens: lm-eval encodes with the tokenizer's own special-token rule unless told
  (``add_bos_token``); the export adds none (its tokenizer_config says so), and ``add_bos_token=False``
  makes that explicit: both sides feed the prompt's plain tokens, no BOS;
* truncation: lm-eval keeps the last ``max_length - max_gen_toks`` prompt tokens, lmforge the last
  ``max_length - max_new_tokens`` (its budget gives way only beyond half the context,
  ``fit_budget``, which ``BUDGET`` = 64 of 256 never reaches); ``max_length=256`` is passed (the
  export's context is 256 too), and gsm8k's 8-shot prompts are longer, so truncation is exercised;
* stopping: lm-eval adds the EOS string to the stop sequences, lets transformers stop a row at EOS,
  decodes the new tokens with ``skip_special_tokens=True`` and cuts the text before the first stop
  sequence (``text.split(stop)[0]`` for each stop); lmforge stops a row at EOS or at the token that
  completes a stop sequence and cuts there. lm-eval keeps decoding a row past its stop sequence
  until every row of its batch has stopped; that only adds text past the cut. No post-processing
  differs (neither side strips whitespace), so no difference needs explaining away.

The test can fail: the text varies from prompt to prompt, a fifth of the rows end at a stop
sequence (each task has some), one at EOS, the rest at the budget, and gsm8k's 8-shot prompts are
cut from the left.

Run one-threaded (``one_thread``) in float32, greedy: no tolerance is needed and none is used.
"""

from __future__ import annotations

import pytest

from lmforge.eval.generation import generate_all
from lmforge.eval.config import GenerationSettings
from lmforge.eval.generative import make_prompts
from lmforge.eval.generative_tasks import load_generation_task, score_generation

try:  # lm-eval[hf] is a dev extra: without it every test here skips, visibly, and CI fails
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
except ImportError as e:
    MISSING = f"lm-eval[hf] is not importable ({e})"
else:
    MISSING = None

pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
    pytest.mark.usefixtures("one_thread"),
]

TASKS = ("gsm8k", "drop", "naturalqs_open", "codex_humaneval")
LIMIT = 10
BUDGET = 64  # <= MAX_LEN // 2: the same budget on both sides (see fit_budget)
BATCH = 8
MAX_LEN = 256  # the talker's context


@pytest.fixture(scope="module", autouse=True)
def offline(hf_offline):
    yield


@pytest.fixture(scope="module")
def both(talker):
    """(task names, requests, prompts, lmforge's generations, lm-eval's texts): plain, then chat."""
    names, reqs = [], []
    for t in TASKS:
        for r in load_generation_task(t, limit=LIMIT):
            names.append(t)
            reqs.append(r)
    prompts = make_prompts(reqs, GenerationSettings(max_gen_toks=BUDGET)) + make_prompts(
        reqs, GenerationSettings(max_gen_toks=BUDGET, chat=True), tokenizer=talker.tok
    )
    names, reqs = names * 2, reqs * 2
    ours = generate_all(talker.model, talker.tok, prompts, batch_size=BATCH, max_length=MAX_LEN, progress=False)
    hflm = HFLM(pretrained=str(talker.hf), device="cpu", dtype="float32", batch_size=BATCH, max_length=MAX_LEN, add_bos_token=False)
    assert type(hflm.model).__name__ == "Olmo2ForCausalLM"
    instances = [
        Instance("generate_until", {}, (p.text, {"until": list(p.stop), "max_gen_toks": p.max_new_tokens, "do_sample": False}), i)
        for i, p in enumerate(prompts)
    ]
    theirs = hflm.generate_until(instances, disable_tqdm=True)
    return names, reqs, prompts, ours, theirs


def test_same_text_as_lm_eval(both):
    names, reqs, prompts, ours, theirs = both
    assert len(theirs) == len(ours) == 2 * len(TASKS) * LIMIT
    diff = [(n, r.doc_id, i >= len(ours) // 2, o.text, t) for i, (n, r, o, t) in enumerate(zip(names, reqs, ours, theirs)) if o.text != t]
    assert not diff, diff  # (task, doc_id, chat, lmforge's text, lm-eval's text)
    # The check could fail: varied text, rows ending at stop sequences, at EOS and at the budget,
    # long prompts cut from the left.
    texts = [o.text for o in ours]
    assert len(set(texts)) >= 0.8 * len(texts), texts
    finish = [o.finish for o in ours]
    assert finish.count("stop") >= 10 and finish.count("eos") >= 1 and finish.count("length") >= len(ours) // 2, finish
    assert {n for n, o in zip(names, ours) if o.finish == "stop"} == set(TASKS)
    assert any(o.truncated for o in ours) and all(o.prompt_tokens + p.max_new_tokens <= MAX_LEN for o, p in zip(ours, prompts))


def test_same_metrics_as_lm_eval(both):
    names, reqs, _, ours, theirs = both
    for n, r, o, t in zip(names, reqs, ours, theirs):
        assert score_generation(n, r, [o.text]) == score_generation(n, r, [t]), (n, r.doc_id)
