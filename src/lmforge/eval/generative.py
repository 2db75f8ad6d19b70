"""Generative evaluation: requests -> prompts -> generations -> per-example scores -> task metrics.

    results = evaluate_generative(backend, ["gsm8k", "drop"], GenerationSettings(max_gen_toks=64), limit=50)
    results["tasks"]["gsm8k"]["primary"]                       # exact match
    results["examples"][0]["generations"], results["examples"][0]["metrics"]

The tasks are :mod:`lmforge.eval.generative_tasks`; the generations come from a *backend*, a
function ``prompts -> [Generation]``: lmforge's engine (:func:`lmforge.eval.generation.generate_all`,
the default), transformers' ``generate`` on an HF export, or vLLM
(:mod:`lmforge.eval.hf_generate`). ``chat=True`` renders each prompt as one user turn of the
model's own chat template (OLMES's chat format for instruct models), and then stops at the
template's end-of-turn token as well.

``samples=n > 1`` draws n generations per prompt (temperature ``temperature``, top-p ``top_p``,
each from its own seed) and reports ``pass@k`` for code (k = 1, 5, 10, ... up to n) or the mean of
the n scores otherwise. Under a :class:`~lmforge.eval.spread.Spread` the batches of generation and
the scoring are shared by the processes, and every process returns the one-process results.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from lmforge.eval.config import GenerationSettings
from lmforge.eval.generation import Generation, Prompt
from lmforge.eval.generation_requests import GenerationRequest
from lmforge.eval.generative_tasks import GEN_TASKS, gen_task_version, gold_answers, load_generation_task, score_generation
from lmforge.eval.spread import Spread

__all__ = ["GEN_METRICS", "Backend", "evaluate_generative", "make_prompts", "pass_ks"]

GEN_METRICS = ("exact_match", "f1", "pass@1", "pass@5", "pass@10")
Backend = Callable[[Sequence[Prompt]], list[Generation]]


def pass_ks(samples: int) -> list[int]:
    """The k of pass@k reported for n samples: 1, 5, 10, 20, 50, 100 up to n."""
    return [k for k in (1, 5, 10, 20, 50, 100) if k <= samples]


def _seed(seed: int, req: GenerationRequest, j: int) -> int:
    key = f"{seed}\0{req.task}\0{req.doc_id}\0{j}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def make_prompts(requests: Sequence[GenerationRequest], settings: GenerationSettings = GenerationSettings(), *, tokenizer: Any = None) -> list[Prompt]:
    """``settings.samples`` prompts per request (request-major). Greedy for one sample, unless the
    request asks to sample; ``settings.max_gen_toks`` caps every budget (quick runs); ``tokenizer``:
    for ``settings.chat`` (the template)."""
    from lmforge.generate.chat import render_chat

    chat, samples, temperature, top_p = settings.chat, settings.samples, settings.temperature, settings.top_p
    out = []
    for req in requests:
        text = render_chat(tokenizer, [{"role": "user", "content": req.context}]) if chat else req.context
        stops = tuple(req.stop_sequences)
        if chat and getattr(tokenizer, "eos_token", None):
            stops = (*stops, tokenizer.eos_token)
        budget = req.max_gen_toks if settings.max_gen_toks is None else min(req.max_gen_toks, settings.max_gen_toks)
        sample = samples > 1 or req.do_sample
        t = temperature if samples > 1 else (req.temperature or temperature)
        for j in range(samples):
            out.append(Prompt(text=text, stop=stops, max_new_tokens=budget, do_sample=sample,
                              temperature=t if sample else 1.0, top_p=top_p if sample else 1.0, seed=_seed(settings.seed, req, j)))
    return out


def _score_all(jobs: list[tuple[str, GenerationRequest, list[str]]], ks: list[int], spread: Spread) -> dict[int, dict[str, float]]:
    """Metrics per job index; each process scores every ``world``-th job (code runs in parallel
    sandboxes), then they are shared."""
    mine = spread.take(list(range(len(jobs))))
    workers = max(1, min(8, os.cpu_count() or 1))

    def one(i: int) -> tuple[int, dict[str, float]]:
        name, req, texts = jobs[i]
        return i, score_generation(name, req, texts, pass_ks=ks)

    with ThreadPoolExecutor(workers) as pool:
        part = dict(pool.map(one, mine))
    return spread.merge(part)


def evaluate_generative(
    backend: Backend,
    tasks: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    *,
    tokenizer: Any = None,
    limit: int | None = None,
    spread: Spread | None = None,
) -> dict[str, Any]:
    """Generate for every request of ``tasks`` through ``backend`` and score; returns::

        {"tasks": {name: {"kind": "generative", "primary_metric", "primary", METRIC: mean, "n",
                          "samples", "version"[, "groups"]}},
         "examples": [{"task", "doc_id", "native_id", "gold", "generations", "finish",
                       "prompt_tokens", "truncated", "metrics"}, ...]}

    ``tokenizer``: for ``settings.chat`` (the template). Macro tasks (``minerva_math``) average their
    subtasks' means; ``groups`` holds each subtask's numbers.
    """
    samples = settings.samples
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    spread = spread or Spread()
    by_task = {name: load_generation_task(name, limit=limit) for name in dict.fromkeys(tasks)}
    requests = [(name, r) for name, reqs in by_task.items() for r in reqs]
    prompts = make_prompts([r for _, r in requests], settings, tokenizer=tokenizer)
    gens = backend(prompts)
    ks = pass_ks(samples)
    per_req = [gens[i * samples : (i + 1) * samples] for i in range(len(requests))]
    scores = _score_all([(name, r, [g.text for g in gs]) for (name, r), gs in zip(requests, per_req)], ks, spread)

    examples = []
    for i, ((name, r), gs) in enumerate(zip(requests, per_req)):
        examples.append({
            "task": name, "subtask": r.task if r.task != name else None, "doc_id": r.doc_id, "native_id": r.native_id,
            "gold": gold_answers(r) or None, "generations": [g.text for g in gs], "finish": [g.finish for g in gs],
            "prompt_tokens": gs[0].prompt_tokens, "truncated": gs[0].truncated, "metrics": scores[i],
        })
    out_tasks: dict[str, Any] = {}
    for name in by_task:
        spec = GEN_TASKS[name]
        rows = [e for e in examples if e["task"] == name]
        row: dict[str, Any] = {"kind": "generative", "primary_metric": spec.primary_metric}
        metric_names = [m for m in dict.fromkeys(k for e in rows for k in e["metrics"])]
        if spec.subtasks:
            groups = {}
            for sub in spec.subtasks:
                sub_rows = [e for e in rows if e["subtask"] == sub]
                groups[sub] = {m: _mean([e["metrics"][m] for e in sub_rows]) for m in metric_names}
                groups[sub]["n"] = len(sub_rows)
            row.update({m: _mean([g[m] for g in groups.values() if g[m] is not None]) for m in metric_names})
            row["groups"] = groups
        else:
            row.update({m: _mean([e["metrics"][m] for e in rows]) for m in metric_names})
        row["primary"] = row.get(spec.primary_metric)
        row.update({"n": len(rows), "samples": samples, "version": gen_task_version(name)})
        out_tasks[name] = row
    used: dict[str, Any] = {"chat": settings.chat, "samples": samples, "max_gen_toks": settings.max_gen_toks}
    if samples > 1:
        used.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    return {"tasks": out_tasks, "examples": examples, "generation": used}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None
