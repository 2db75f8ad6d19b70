"""Metrics on constructed log-likelihoods whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest

from lmforge.eval.metrics import aggregate, argmax, example_metrics, task_metrics
from lmforge.eval.requests import Example, LoglikelihoodScore


def S(logprob, n_tokens=1, greedy=False):
    return LoglikelihoodScore(logprob, n_tokens, greedy)


def test_per_token_and_per_char_pick_different_answers():
    # choice 0: " a"          2 chars, 1 token,  logprob -3   -> per-token -3,   per-char -1.5
    # choice 1: " bbbbbbbbb" 10 chars, 5 tokens, logprob -10  -> per-token -2,   per-char -1.0
    # choice 2: " cc"         3 chars, 1 token,  logprob -2.5 -> per-token -2.5, per-char -0.833...
    ex = Example("t", 0, "Q:", (" a", " bbbbbbbbb", " cc"), gold=1)
    m = example_metrics(ex, [S(-3.0, 1), S(-10.0, 5), S(-2.5, 1)])
    assert m["pred"] == {"acc": 2, "acc_per_token": 1, "acc_per_char": 2}
    assert (m["acc"], m["acc_per_token"], m["acc_per_char"]) == (0.0, 1.0, 0.0)
    assert "acc_pmi" not in m and "uncond_logprobs" not in m
    assert m["n_chars"] == [2, 10, 3] and m["n_tokens"] == [1, 5, 1] and m["logprobs"] == [-3.0, -10.0, -2.5]
    assert m["bpb"] == pytest.approx(10.0 / (10 * math.log(2)))  # gold " bbbbbbbbb": 10 bytes


def test_per_char_counts_the_leading_space():
    # " x" (2 chars) -1.9 -> -0.95 ; " xyz" (4 chars) -3.9 -> -0.975 : picks 0 with the space
    # counted; without it (1 and 3 chars) -1.9 vs -1.3 would pick 1.
    ex = Example("t", 0, "Q:", (" x", " xyz"), gold=0)
    m = example_metrics(ex, [S(-1.9), S(-3.9)])
    assert m["pred"]["acc_per_char"] == 0 and m["acc_per_char"] == 1.0


def test_pmi_flips_the_answer():
    # conditional: choice 0 -2.0, choice 1 -3.0 -> acc picks 0
    # unconditional: choice 0 -1.0 (a priori likely), choice 1 -5.0 -> PMI: -1.0 vs +2.0 -> picks 1
    ex = Example("t", 7, "Q: x\nAnswer:", (" common", " rare"), gold=1, unconditional_context="Answer:")
    scores = [S(-2.0), S(-3.0), S(-1.0), S(-5.0)]  # aligned with ex.requests(): cond, cond, uncond, uncond
    m = example_metrics(ex, scores)
    assert m["pred"]["acc"] == 0 and m["acc"] == 0.0
    assert m["pred"]["acc_pmi"] == 1 and m["acc_pmi"] == 1.0
    assert m["uncond_logprobs"] == [-1.0, -5.0]
    # the same scores keyed by request key
    keyed = {r.key: s for r, s in zip(ex.requests(), scores)}
    assert example_metrics(ex, keyed) == m
    assert example_metrics(ex, {r: s for r, s in zip(ex.requests(), scores)}) == m  # or by request
    with pytest.raises(KeyError):
        example_metrics(ex, dict(list(keyed.items())[:3]))
    with pytest.raises(ValueError):
        example_metrics(ex, scores[:2])


def test_bpb_by_hand():
    # gold " café" = 1 + 3 + 2 = 6 UTF-8 bytes (é is 2 bytes); logprob -4.158883 = ln(1/64)
    # -> 6 bits over 6 bytes = 1 bit per byte
    ex = Example("t", 0, "Q:", (" tea", " café"), gold=1)
    m = example_metrics(ex, [S(-1.0), S(math.log(1 / 64), 2)])
    assert m["bpb"] == pytest.approx(1.0)
    assert m["n_chars"] == [4, 5]  # characters, not bytes


def test_ties_go_to_the_lowest_index():
    assert argmax([1.0, 3.0, 3.0]) == 1
    assert argmax([float("nan"), -5.0]) == 1
    assert argmax([-math.inf, -math.inf]) == 0
    ex = Example("t", 0, "Q:", (" a", " b", " c"), gold=1)
    m = example_metrics(ex, [S(-2.0), S(-1.0), S(-1.0)])
    assert m["pred"]["acc"] == 1 and m["acc"] == 1.0
    ex2 = Example("t", 0, "Q:", (" a", " b", " c"), gold=2)
    assert example_metrics(ex2, [S(-2.0), S(-1.0), S(-1.0)])["acc"] == 0.0
    # all equal: choice 0 is the prediction
    assert example_metrics(ex, [S(-1.0)] * 3)["pred"] == {"acc": 0, "acc_per_token": 0, "acc_per_char": 0}


def test_zero_lengths_do_not_divide_by_zero():
    ex = Example("t", 0, "Q:", ("", " b"), gold=0)
    m = example_metrics(ex, [S(-1.0, 0), S(-0.5, 1)])
    assert m["pred"]["acc_per_token"] == 1 and m["pred"]["acc_per_char"] == 1
    assert m["bpb"] == pytest.approx(1.0 / math.log(2))  # 0 bytes counts as 1


def test_per_choice_contexts_winogrande_style():
    ex = Example("wg", 3, "so ", (" won.", " won."), gold=1, contexts=("so Ann", "so Bob"))
    reqs = ex.requests()
    assert [r.context for r in reqs] == ["so Ann", "so Bob"] and ex.context_for(1) == "so Bob"
    m = example_metrics(ex, [S(-4.0, 2), S(-3.0, 2)])
    assert (m["acc"], m["acc_per_token"], m["acc_per_char"]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="contexts"):
        Example("wg", 3, "so ", (" won.", " won."), gold=1, contexts=("so Ann",))
    with pytest.raises(ValueError, match="gold"):
        Example("wg", 3, "so ", (" won.", " won."), gold=2)


def test_aggregate_means_and_macro_average():
    exs = [
        Example("m_a", 0, "Q:", (" x", " y"), gold=0, meta={"subject": "a"}),
        Example("m_a", 1, "Q:", (" x", " y"), gold=1, meta={"subject": "a"}),
        Example("m_a", 2, "Q:", (" x", " y"), gold=1, meta={"subject": "a"}),
        Example("m_b", 0, "Q:", (" x", " y"), gold=0, meta={"subject": "b"}),
    ]
    # predictions: choice 0 everywhere -> correct on a0, b0: micro 2/4, subject a 1/3, b 1/1
    scores = {}
    for e in exs:
        for r, lp in zip(e.requests(), (-1.0, -2.0)):
            scores[r.key] = S(lp)
    rows, agg = task_metrics(exs, scores, primary="acc")
    assert agg["n"] == 4 and agg["acc"] == pytest.approx(0.5) and agg["primary"] == pytest.approx(0.5)
    assert agg["primary_metric"] == "acc" and "acc_pmi" not in agg
    assert [r["subject"] for r in rows] == ["a", "a", "a", "b"]
    gold_lp = [-1.0, -2.0, -2.0, -1.0]
    assert agg["bpb"] == pytest.approx(sum(-lp / (2 * math.log(2)) for lp in gold_lp) / 4)
    macro = aggregate(rows, macro_by="subject")
    assert macro["acc"] == pytest.approx((1 / 3 + 1) / 2)
    assert macro["groups"]["a"]["n"] == 3 and macro["groups"]["b"]["acc"] == 1.0
    with pytest.raises(KeyError):
        aggregate(rows, primary="acc_pmi")
    with pytest.raises(ValueError):
        aggregate([])


def test_aggregate_refuses_a_mix_of_pmi_and_no_pmi():
    a = example_metrics(Example("t", 0, "Q:", (" x", " y"), 0, unconditional_context="A:"), [S(-1.0)] * 4)
    b = example_metrics(Example("t", 1, "Q:", (" x", " y"), 0), [S(-1.0)] * 2)
    assert aggregate([a, a])["acc_pmi"] == 1.0
    with pytest.raises(ValueError, match="acc_pmi"):
        aggregate([a, b])
