"""DROP exact match and F1 on hand-worked cases (expected values derived by hand from the official rules)."""

import pytest

from lmforge.eval.drop_metric import (
    drop_answer_bags,
    drop_em_f1,
    drop_normalize,
    drop_score,
)


@pytest.mark.parametrize("raw, normal", [
    ("Konkani", "konkani"), ("The  Quick, brown-fox!", "quick brown fox"), ("an apple", "apple"),
    ("2,000", "2000.0"), ("1,000", "1000.0"), ("3", "3.0"), ("3.50", "3.5"), ("$5", "5.0"), ("12 yards.", "12.0 yards"),
    ("well-known", "well known"), ("theater", "theater"), ("", ""), (" - ", ""),
])  # fmt: skip
def test_normalize(raw, normal):
    assert drop_normalize(raw) == normal


def test_answer_bags_are_normalized_spans_and_token_sets():
    assert drop_answer_bags("The Bob") == (["bob"], [{"bob"}])
    assert drop_answer_bags(["The Bob", "Alice-Smith", "bob bob"]) == (["bob", "alice smith", "bob bob"], [{"bob"}, {"alice", "smith"}, {"bob"}])


@pytest.mark.parametrize("prediction, gold, expected", [
    ("Konkani", "Konkani", (1.0, 1.0)),  # exact span
    ("The KONKANI!", "konkani", (1.0, 1.0)),  # case, punctuation, articles ignored
    ("2,000", "2000", (1.0, 1.0)),  # both "2000.0"
    ("3", "3.0", (1.0, 1.0)),
    ("well-known", "well known", (1.0, 1.0)),  # hyphens split tokens
    ("12 yards", "13 yards", (0.0, 0.0)),  # number rule: would be F1 0.5 without it
    ("yards", "12 yards", (0.0, 0.0)),  # gold holds a number the prediction lacks
    ("12 Broncos", "Broncos", (0.0, 0.67)),  # gold without numbers: plain bag F1, p 1/2 r 1 -> 2/3
    ("12 points", "12 yards and 3 points", (0.0, 0.57)),  # numbers intersect: p 2/2, r 2/5 -> 4/7
    ("the Denver Broncos team", "Denver Broncos", (0.0, 0.8)),  # p 2/3, r 1 -> 0.8
    ("Broncos Broncos", "Broncos", (0.0, 1.0)),  # bags are sets, the spans differ
    ("", "Konkani", (0.0, 0.0)),
])  # fmt: skip
def test_single_spans(prediction, gold, expected):
    assert drop_em_f1(prediction, gold) == expected


@pytest.mark.parametrize("prediction, gold, expected", [
    (["Alice", "Bob"], ["Bob", "Alice"], (1.0, 1.0)),  # order does not matter
    (("the alice", "BOB."), ("Bob", "Alice"), (1.0, 1.0)),  # tuples, normalised per span
    (["Alice"], ["Bob", "Alice"], (0.0, 0.5)),  # one matched span over the larger side's 2
    (["Alice", "Bob", "Carol"], ["Alice", "Bob"], (0.0, 0.67)),  # 2 / 3
    (["Alice", "Alice"], ["Alice"], (0.0, 0.5)),  # same span set, different span count: no EM, 1 / 2
    ("Alice and Bob", ["Bob", "Alice"], (0.0, 0.25)),  # single span vs two: best pair F1 0.5 (p 1/3, r 1), / 2
    (["Bob", "Alice"], "Alice and Bob", (0.0, 0.25)),  # and the other way round
    # optimal, not greedy, matching: greedy takes the 1.0 pair and then 0 (F1 0.5); the best total is 2/3 + 2/3
    (["red blue", "blue"], ["red blue", "red"], (0.0, 0.67)),
    (["12 yards", "Alice"], ["13 yards", "Alice"], (0.0, 0.5)),  # the number rule per span pair
])  # fmt: skip
def test_multiple_spans(prediction, gold, expected):
    assert drop_em_f1(prediction, gold) == expected


def test_score_is_the_max_over_gold_answers():
    golds = [["Bob", "Alice"], ["Alice and Bob"]]
    assert drop_score("Alice and Bob", golds) == {"exact_match": 1.0, "f1": 1.0}  # the second gold answer
    assert drop_score("alice & bob", golds) == {"exact_match": 0.0, "f1": 0.8}  # "alice bob" vs 3 tokens: p 1, r 2/3
    # first gold: bob vs {bob, and, carol} F1 0.5, over 2 spans -> 0.25; second: 2 shared of 3 and 3 -> 0.67
    assert drop_score("Bob and Carol", golds) == {"exact_match": 0.0, "f1": 0.67}
    assert drop_score("  Konkani\n", [["Konkani"]]) == {"exact_match": 1.0, "f1": 1.0}  # stripped
    assert drop_score("1,000 yards", [["1000"], ["1000 yards"]]) == {"exact_match": 1.0, "f1": 1.0}


def test_empty_predictions_and_blank_gold_answers():
    assert drop_score("", [["Konkani"]]) == {"exact_match": 0.0, "f1": 0.0}
    assert drop_score("   ", [["Konkani"], ["Goa"]]) == {"exact_match": 0.0, "f1": 0.0}
    # a gold answer with a blank first span is skipped (it would match the empty prediction exactly)
    assert drop_score("", [[""], ["Konkani"]]) == {"exact_match": 0.0, "f1": 0.0}
    assert drop_score("Konkani", [[" "]]) == {"exact_match": 0.0, "f1": 0.0}
    assert drop_score("Konkani", []) == {"exact_match": 0.0, "f1": 0.0}
