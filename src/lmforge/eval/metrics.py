"""Multiple-choice metrics from log-likelihoods: ``example_metrics(example, scores)``, ``aggregate``.

For one ``Example`` with choices c_0..c_{n-1} (continuations as scored) and their scores:

    acc            argmax_i  logprob_i                                   (lm-eval "acc", OLMES "acc_raw")
    acc_per_token  argmax_i  logprob_i / n_tokens_i                      (OLMES "acc_per_token")
    acc_per_char   argmax_i  logprob_i / len(c_i)                        (lm-eval "acc_norm", OLMES
                                                                          "acc_per_char"; characters of
                                                                          the continuation, leading
                                                                          space counted)
    acc_pmi        argmax_i  logprob_i - logprob(c_i | unconditional)    (OLMES "acc_uncond"; only for
                                                                          examples with an
                                                                          ``unconditional_context``)
    bpb            -logprob_gold / (UTF-8 bytes of c_gold * ln 2)        (bits per byte of the gold
                                                                          continuation)

Each acc is 1.0 when its argmax is the gold index, else 0.0. Ties go to the *lowest* index (what
``np.argmax`` does in lm-eval and OLMES, and Python's ``max`` here); a NaN counts as -inf. So an
example whose choices all score the same is counted as answered with choice 0. Zero-length
normalisers (no tokens, empty continuation) count as 1.

``example_metrics`` also returns the per-choice numbers (``logprobs``, ``n_tokens``, ``n_chars``,
``uncond_logprobs``, ``is_greedy``) and each metric's predicted index (``pred``), for reports.
``aggregate`` averages the metrics over examples (``n`` = how many); with ``macro_by`` (e.g.
"subject" for MMLU) it averages within each group first, then over the groups.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

from lmforge.eval.requests import Example, LoglikelihoodScore, bits_per_byte

__all__ = ["METRICS", "example_metrics", "aggregate", "task_metrics", "argmax"]

METRICS = ("acc", "acc_per_token", "acc_per_char", "acc_pmi", "bpb")


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; ties -> the lowest index; NaN counts as -inf."""
    if not values:
        raise ValueError("argmax of no values")
    return max(range(len(values)), key=lambda i: -math.inf if math.isnan(values[i]) else values[i])


def _scores_for(example: Example, scores: Mapping[Any, LoglikelihoodScore] | Sequence[LoglikelihoodScore]) -> list[LoglikelihoodScore]:
    reqs = example.requests()
    if isinstance(scores, Mapping):
        out = []
        for r in reqs:
            if r.key in scores:
                out.append(scores[r.key])
            elif r in scores:
                out.append(scores[r])
            else:
                raise KeyError(f"no score for request {r.key} of {example.task}/{example.doc_id}")
        return out
    scores = list(scores)
    if len(scores) != len(reqs):
        raise ValueError(f"{example.task}/{example.doc_id}: {len(scores)} scores for {len(reqs)} requests")
    return scores


def example_metrics(example: Example, scores: Mapping[Any, LoglikelihoodScore] | Sequence[LoglikelihoodScore]) -> dict[str, Any]:
    """Metrics of one example from its scores.

    ``scores``: a mapping from request key (``LoglikelihoodRequest.key``, or the request itself) to
    ``LoglikelihoodScore``, or a sequence aligned with ``example.requests()`` (conditional requests
    first, then the unconditional ones).
    """
    s = _scores_for(example, scores)
    n = len(example.choices)
    cond, uncond = s[:n], s[n:] if example.unconditional_context is not None else None
    logprobs = [float(x.logprob) for x in cond]
    n_tokens = [int(x.n_tokens) for x in cond]
    n_chars = [len(c) for c in example.choices]
    ranked = {
        "acc": logprobs,
        "acc_per_token": [lp / max(k, 1) for lp, k in zip(logprobs, n_tokens)],
        "acc_per_char": [lp / max(k, 1) for lp, k in zip(logprobs, n_chars)],
    }
    if uncond is not None:
        ranked["acc_pmi"] = [lp - float(u.logprob) for lp, u in zip(logprobs, uncond)]
    pred = {m: argmax(v) for m, v in ranked.items()}
    out: dict[str, Any] = {"task": example.task, "doc_id": example.doc_id, "gold": example.gold}
    out.update({m: float(p == example.gold) for m, p in pred.items()})
    out["bpb"] = bits_per_byte(logprobs[example.gold], example.choices[example.gold])
    out["pred"] = pred
    out["logprobs"] = logprobs
    out["n_tokens"] = n_tokens
    out["n_chars"] = n_chars
    out["is_greedy"] = [bool(x.is_greedy) for x in cond]
    if uncond is not None:
        out["uncond_logprobs"] = [float(u.logprob) for u in uncond]
    for k in ("subject",):
        if k in example.meta:
            out[k] = example.meta[k]
    return out


def _mean_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for m in METRICS:
        vals = [r[m] for r in rows if m in r]
        if not vals:
            continue
        if len(vals) != len(rows):
            raise ValueError(f"metric '{m}' is present for {len(vals)} of {len(rows)} examples")
        out[m] = sum(vals) / len(vals)
    return out


def aggregate(rows: Sequence[Mapping[str, Any]], *, macro_by: str | None = None, primary: str | None = None) -> dict[str, Any]:
    """Means of ``METRICS`` over ``example_metrics`` outputs, plus ``n``.

    A metric is reported only if every example has it (``acc_pmi`` needs unconditional requests);
    a mix raises. ``macro_by``: group by that key (e.g. "subject"), average within groups, then
    average the group means with equal weight (``groups`` holds each group's numbers). ``primary``:
    also report that metric as ``primary`` (and its name as ``primary_metric``).
    """
    if not rows:
        raise ValueError("aggregate of no examples")
    if macro_by is None:
        out = _mean_metrics(rows)
    else:
        groups: dict[Any, list] = defaultdict(list)
        for r in rows:
            groups[r[macro_by]].append(r)
        per = {g: _mean_metrics(v) for g, v in sorted(groups.items())}
        out = {"n": len(rows)}
        for m in METRICS:
            if all(m in p for p in per.values()):
                out[m] = sum(p[m] for p in per.values()) / len(per)
        out["groups"] = per
    if primary is not None:
        if primary not in out:
            raise KeyError(f"primary metric '{primary}' not computed (have: {', '.join(m for m in METRICS if m in out)})")
        out["primary_metric"], out["primary"] = primary, out[primary]
    return out


def task_metrics(
    examples: Sequence[Example],
    scores: Mapping[Any, LoglikelihoodScore],
    *,
    macro_by: str | None = None,
    primary: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``example_metrics`` of each example (scores keyed by request key) and their ``aggregate``."""
    rows = [example_metrics(e, scores) for e in examples]
    return rows, aggregate(rows, macro_by=macro_by, primary=primary)
