"""The data model shared by lmforge's evaluators: requests, examples, scores.

A downstream multiple-choice *example* is one question with N answer choices. Scoring it means
asking the model for the log-likelihood of each choice's *continuation* given the *context*
(``LoglikelihoodRequest``), optionally also given an unconditional context (PMI normalisation,
oe_eval uses ``"Answer:"``), and turning those numbers into metrics.

    Example.requests()       -> the requests to score (conditional, then unconditional if any)
    scorer(requests)         -> one ``LoglikelihoodScore`` per request (lmforge.eval.scoring)
    metrics(example, scores) -> acc, acc_per_token, acc_per_char, acc_pmi, bpb (lmforge.eval.metrics)

No torch here: tasks and metrics are plain Python.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

__all__ = ["LoglikelihoodRequest", "LoglikelihoodScore", "Example", "Tokenization"]

# How a (context, answer) pair becomes tokens (lmforge.eval.scoring): ``separate`` encodes the two
# apart (olmo_eval / OLMES), ``joint`` encodes context + answer together (lm-evaluation-harness).
Tokenization = Literal["separate", "joint"]


@dataclasses.dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str  # everything before the answer (few-shot examples included)
    continuation: str  # the answer text, usually starting with a space
    key: tuple[Any, ...] = ()  # who asked: (task, doc_id, choice index, "cond" | "uncond")


@dataclasses.dataclass(frozen=True)
class LoglikelihoodScore:
    logprob: float  # sum of log p(continuation token | everything before), natural log
    n_tokens: int  # continuation tokens scored
    is_greedy: bool  # every continuation token was the argmax
    # lm-eval's per-request output is (logprob, is_greedy); n_tokens is for per-token normalisation

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


@dataclasses.dataclass(frozen=True)
class Example:
    """One multiple-choice question.

    Usually all choices share one ``context`` and differ in their continuation. Some formats are the
    other way round: WinoGrande's partial scoring (oe_eval, olmo_eval, lm-eval) puts each *option*
    into the context ("... so Sarah" / "... so Maria") and scores the same continuation
    (" always got the easier cases.") after each. Such an example sets ``contexts`` (one per choice);
    ``choices`` then still holds the continuation scored for each choice (here the same string
    twice), and ``context`` holds the longest common prefix of ``contexts``, for display only:
    ``context_for(i)`` is what choice ``i`` is scored after.
    """

    task: str
    doc_id: int
    context: str
    choices: tuple[str, ...]  # continuations, as scored (leading space included where the format has one)
    gold: int  # index into choices
    unconditional_context: str | None = None  # for PMI; None = no PMI for this task
    native_id: Any = None  # the dataset's own id, for reports
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    contexts: tuple[str, ...] | None = None  # per-choice contexts (WinoGrande); None = ``context`` for all

    def __post_init__(self):
        if self.contexts is not None and len(self.contexts) != len(self.choices):
            raise ValueError(f"{self.task}/{self.doc_id}: {len(self.contexts)} contexts for {len(self.choices)} choices")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"{self.task}/{self.doc_id}: gold {self.gold} out of range for {len(self.choices)} choices")

    def context_for(self, i: int) -> str:
        """The context choice ``i`` is scored after."""
        return self.context if self.contexts is None else self.contexts[i]

    def requests(self) -> list[LoglikelihoodRequest]:
        reqs = [LoglikelihoodRequest(self.context_for(i), c, (self.task, self.doc_id, i, "cond")) for i, c in enumerate(self.choices)]
        if self.unconditional_context is not None:
            reqs += [
                LoglikelihoodRequest(self.unconditional_context, c, (self.task, self.doc_id, i, "uncond")) for i, c in enumerate(self.choices)
            ]
        return reqs

    def n_requests(self) -> int:
        return len(self.choices) * (2 if self.unconditional_context is not None else 1)


def bits_per_byte(logprob: float, text: str) -> float:
    """-sum log p / (UTF-8 bytes * ln 2): bits the model needs per byte of ``text``."""
    n = len(text.encode("utf-8"))
    return -logprob / (max(n, 1) * math.log(2))
