"""DROP exact match and F1 "with number handling", following the official DROP evaluation rules.

These are the semantics of the DROP script (allennlp-reading-comprehension ``drop_eval.py``), which
lm-evaluation-harness and OLMES use for their ``drop`` task; this is an independent implementation.

Normalisation (:func:`drop_normalize`). The text is split on single spaces and hyphens; each token is
lowercased; unless it already parses as a float it loses its ASCII punctuation (so ``"1,000"`` becomes
``"1000"``, while ``"3.5"`` keeps its point); a token that now parses as a float is rewritten as
``str(float(token))`` (``"2,000"`` -> ``"2000.0"``, ``"3"`` and ``"3.0"`` -> ``"3.0"``); the articles
a/an/the are removed and whitespace collapsed. Empty tokens are dropped and the rest joined by spaces.

An answer is a span or a sequence of spans. Each span becomes its normalised string and its *bag*: the
**set** of its normalised tokens (:func:`drop_answer_bags`).

Scoring one prediction against one gold answer (:func:`drop_em_f1`):

* exact match is 1 when the sets of normalised spans are equal and both sides have the same number of
  spans, else 0;
* each (gold span, predicted span) pair gets the bag F1 (precision = shared / predicted tokens, recall
  = shared / gold tokens; an empty bag has precision, or recall, 1), except that the pair scores 0 when
  the gold span holds numbers and the predicted span holds none of them (the number rule);
* gold and predicted spans are matched one-to-one so that the total F1 is as large as possible; the
  F1 is that total divided by the number of spans on the larger side (unmatched spans count 0),
  rounded to 2 decimals like the official script (``numpy.round``).

A DROP document has several gold answers (:func:`drop_score`): gold answers whose first span is blank
are skipped, and exact match and F1 are each the maximum over the remaining ones. The prediction, a
model's generation, is stripped and scored as a single span.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

__all__ = ["drop_answer_bags", "drop_em_f1", "drop_normalize", "drop_score"]

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_MAX_MATCHED_SPANS = 12  # exact matching below is exponential in the smaller side's span count


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def drop_normalize(text: str) -> str:
    """The normal form of one span: tokens (split on spaces and hyphens) normalised, empty ones dropped."""
    parts = (_normalize_token(token) for token in re.split(" |-", text))
    return " ".join(part for part in parts if part.strip()).strip()


def drop_answer_bags(answer: str | Sequence[str]) -> tuple[list[str], list[set[str]]]:
    """The normalised spans of an answer (one span or several) and, per span, the set of its tokens."""
    spans = [answer] if isinstance(answer, str) else list(answer)
    normalized = [drop_normalize(span) for span in spans]
    return normalized, [set(span.split()) for span in normalized]


def _bag_f1(predicted: set[str], gold: set[str]) -> float:
    shared = len(predicted & gold)
    precision = shared / len(predicted) if predicted else 1.0
    recall = shared / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_agree(predicted: set[str], gold: set[str]) -> bool:
    """False when the gold bag holds numbers and the predicted bag shares none of them."""
    gold_numbers = {word for word in gold if _is_number(word)}
    return not gold_numbers or bool(gold_numbers & {word for word in predicted if _is_number(word)})


def _best_matching_total(scores: list[list[float]]) -> float:
    """The largest total score of a one-to-one matching of rows to columns (a rectangular assignment).

    Dynamic programming over the subsets of the smaller side's items that are already matched: exact,
    and cheap for the few spans of a DROP answer."""
    if scores and len(scores[0]) > len(scores):
        scores = [list(column) for column in zip(*scores)]  # make the columns the smaller side
    n_columns = len(scores[0]) if scores else 0
    if n_columns > _MAX_MATCHED_SPANS:
        raise ValueError(f"cannot match more than {_MAX_MATCHED_SPANS} spans on both sides, got {n_columns}")
    best: dict[int, float] = {0: 0.0}  # set of matched columns (bit mask) -> best total so far
    for row in scores:
        extended = dict(best)  # this row left unmatched
        for used, total in best.items():
            for column, score in enumerate(row):
                if not (used >> column) & 1:
                    key = used | (1 << column)
                    extended[key] = max(extended.get(key, 0.0), total + score)
        best = extended
    return max(best.values())


def drop_em_f1(prediction: str | Sequence[str], gold: str | Sequence[str]) -> tuple[float, float]:
    """Exact match and F1 of a predicted answer against one gold answer, each a span or several spans."""
    predicted_spans, predicted_bags = drop_answer_bags(prediction)
    gold_spans, gold_bags = drop_answer_bags(gold)
    same_spans = set(predicted_spans) == set(gold_spans) and len(predicted_spans) == len(gold_spans)
    scores = [[_bag_f1(p, g) if _numbers_agree(p, g) else 0.0 for p in predicted_bags] for g in gold_bags]
    n_spans = max(len(gold_bags), len(predicted_bags))
    f1 = _best_matching_total(scores) / n_spans if n_spans else 0.0
    return (1.0 if same_spans else 0.0), float(np.round(f1, 2))


def drop_score(prediction: str, gold_answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """The best exact match and the best F1 of a generation over a DROP document's gold answers.

    The generation is stripped and taken as one span; gold answers whose first span is blank are skipped
    (as lm-evaluation-harness does), so a document with no usable gold answer scores 0."""
    span = prediction.strip()
    exact_match = f1 = 0.0
    for gold in gold_answers:
        if not gold or not gold[0].strip():
            continue
        gold_em, gold_f1 = drop_em_f1(span, gold)
        exact_match, f1 = max(exact_match, gold_em), max(f1, gold_f1)
    return {"exact_match": exact_match, "f1": f1}
