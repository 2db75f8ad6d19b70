"""lmforge's generation engine for evaluation, on a model trained to produce task-shaped text
(tests/eval/conftest.py's ``talker``): batch-size invariance, stop sequences, budgets, sampling,
the same text as ``lmforge.generate`` and as transformers' ``generate`` on the export."""

from __future__ import annotations

import dataclasses

import pytest

from lmforge.eval.config import GenerationSettings
from lmforge.eval.generation import Prompt, generate_all
from lmforge.eval.generative import make_prompts
from lmforge.eval.generative_tasks import load_generation_task
from lmforge.generate import GenerationConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


def _prompts(tasks=("gsm8k", "drop", "naturalqs_open", "codex_humaneval"), limit=6, budget=32):
    reqs = [r for t in tasks for r in load_generation_task(t, limit=limit)]
    return make_prompts(reqs, GenerationSettings(max_gen_toks=budget))


def test_batch_size_does_not_change_the_text(talker):
    prompts = _prompts()
    runs = {b: generate_all(talker.model, talker.tok, prompts, batch_size=b, progress=False) for b in (1, 3, 8)}
    assert runs[1] == runs[3] == runs[8]
    texts = [g.text for g in runs[1]]
    assert len(set(texts)) >= 0.8 * len(texts), texts  # varied text, not one string repeated
    assert {g.finish for g in runs[1]} >= {"stop", "length"}
    long = [g for g in runs[1] if g.truncated]  # gsm8k's 8 shots do not fit in 256 tokens: cut from the left
    assert long and all(g.prompt_tokens + 32 == 256 for g in long)


def test_each_row_keeps_its_own_stops_and_budget(talker):
    base = _prompts(("naturalqs_open", "drop"), limit=5, budget=40)
    prompts = [dataclasses.replace(p, max_new_tokens=[3, 17, 40][i % 3]) for i, p in enumerate(base)]
    gens = generate_all(talker.model, talker.tok, prompts, batch_size=10, progress=False)
    free = generate_all(talker.model, talker.tok, [dataclasses.replace(p, stop=()) for p in prompts], batch_size=10, progress=False)
    assert any(g.finish == "stop" for g in gens)
    for p, g, f in zip(prompts, gens, free):
        assert g.n_tokens <= p.max_new_tokens
        assert not any(s in g.text for s in p.stop)
        assert f.text.startswith(g.text)  # the stopped text is the free text, cut
        if g.finish == "stop":
            rest = f.text[len(g.text) :]
            assert any(rest.startswith(s) for s in p.stop), (g.text, rest)
        elif g.finish == "length":
            assert g.n_tokens == p.max_new_tokens and g.text == f.text


def test_same_text_as_lmforge_generate(talker):
    prompts = [dataclasses.replace(p, text=p.text[-250:]) for p in _prompts(("codex_humaneval", "naturalqs_open"), limit=3, budget=30)]
    gens = generate_all(talker.model, talker.tok, prompts, batch_size=4, progress=False)
    whole = [(p, g) for p, g in zip(prompts, gens) if not g.truncated]  # generate() does not cut prompts
    assert len(whole) >= 5
    for p, g in whole:
        one = generate(talker.model, talker.tok, p.text, GenerationConfig(max_new_tokens=p.max_new_tokens, stop_strings=list(p.stop)))
        assert one == g.text


def test_samples_draw_from_their_own_seeds(talker):
    reqs = load_generation_task("naturalqs_open", limit=4)
    prompts = make_prompts(reqs, GenerationSettings(samples=3, temperature=1.0, max_gen_toks=12))
    assert len(prompts) == 12 and all(p.do_sample for p in prompts)
    a = generate_all(talker.model, talker.tok, prompts, batch_size=1, progress=False)
    b = generate_all(talker.model, talker.tok, prompts, batch_size=5, progress=False)
    assert a == b  # a row's draws do not depend on its batch
    assert len({g.text for g in a[:3]}) > 1  # three samples of one prompt differ
    again = make_prompts(reqs, GenerationSettings(samples=3, temperature=1.0, max_gen_toks=12, seed=7))
    c = generate_all(talker.model, talker.tok, again, batch_size=5, progress=False)
    assert [g.text for g in c] != [g.text for g in a]


def test_transformers_backend_gives_the_same_text(talker):
    from lmforge.eval.hf_generate import hf_backend

    prompts = _prompts(("naturalqs_open", "drop", "codex_humaneval"), limit=4, budget=24)
    ours = generate_all(talker.model, talker.tok, prompts, batch_size=4, progress=False)
    theirs = hf_backend(talker.hf, batch_size=4, device="cpu", progress=False)(prompts)
    assert [g.text for g in theirs] == [g.text for g in ours]
    assert [g.truncated for g in theirs] == [g.truncated for g in ours]


def test_bad_prompts_are_refused(talker):
    with pytest.raises(ValueError, match="batch_size"):
        generate_all(talker.model, talker.tok, [Prompt("x")], batch_size=0, progress=False)
    (g,) = generate_all(talker.model, talker.tok, [Prompt("", max_new_tokens=0)], progress=False)
    assert g.text == "" and g.n_tokens == 0


def test_a_budget_gives_way_to_half_the_context():
    from lmforge.eval.generation import fit_budget

    assert fit_budget(100, 50, 256) == 50  # both fit: untouched
    assert fit_budget(150, 512, 256) == 128  # HumanEval's 512 in a 256 context: the prompt keeps half
    assert fit_budget(100, 512, 256) == 156  # ... or all of itself, when it is shorter
    assert fit_budget(1000, 32, 256) == 32  # a short budget: the prompt is cut instead
    assert fit_budget(0, 512, 256) == 255 and fit_budget(10, 0, 256) == 0


def test_refilled_slots_and_compacted_cache_give_each_prompts_own_text(talker, monkeypatch):
    """Twenty short prompts with budgets from 2 to 45 through 3 slots, prefilled in buckets of 2: rows
    finish at different steps, their slots are refilled, the cache runs out of columns and is
    compacted; each text is still the text of that prompt generated alone."""
    import lmforge.eval.refill as refill

    base = [dataclasses.replace(p, text=p.text[-200:]) for p in _prompts(("naturalqs_open", "drop", "codex_humaneval"), limit=7)][:20]
    prompts = [dataclasses.replace(p, max_new_tokens=[2, 45, 9, 30, 17][i % 5]) for i, p in enumerate(base)]
    compactions = []
    real = refill._compact
    monkeypatch.setattr(refill, "_compact", lambda *a, **k: (compactions.append(1), real(*a, **k))[1])
    monkeypatch.setattr(refill, "PREFILL_ROWS", 2)
    gens = generate_all(talker.model, talker.tok, prompts, batch_size=3, progress=False)
    assert len(compactions) >= 2  # the cache ran out of columns
    for p, g in zip(prompts, gens):
        alone = generate(talker.model, talker.tok, p.text, GenerationConfig(max_new_tokens=p.max_new_tokens, stop_strings=list(p.stop)))
        assert g.text == alone and g.n_tokens <= p.max_new_tokens
    assert len({g.text for g in gens}) > 12
