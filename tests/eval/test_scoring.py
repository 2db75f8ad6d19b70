"""score_requests: batched + shared-prefix scoring equals the naive per-request computation."""

from __future__ import annotations

import pytest
import torch

from lmforge.eval.requests import LoglikelihoodRequest, LoglikelihoodScore
from lmforge.eval import scoring
from lmforge.eval.scoring import encode_pair, score_requests
from tests.conftest import tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = tiny_config(max_seq_len=48).build()
    m.eval()
    return m


def naive(model, tokenizer, req, *, max_length, tokenization="separate"):
    """One request, no batching, no cache: full forward on (ctx + cont)[:-1], log_softmax, gather."""
    ctx, cont = encode_pair(tokenizer, req.context, req.continuation, tokenization)
    inp = (ctx + cont)[-(max_length + 1) :][:-1]
    with torch.no_grad():
        logits = model(torch.tensor([inp]))[0]
    logp = torch.log_softmax(logits.double(), -1)[-len(cont) :]
    target = torch.tensor(cont)
    lp = logp.gather(-1, target[:, None]).sum().item()
    greedy = bool((logp.argmax(-1) == target).all())
    return lp, len(cont), greedy


def mixed_requests():
    long_ctx = " ".join(["the model reads open data and learns"] * 12)  # > 48 tokens: truncated
    reqs = []
    for q, ctx in enumerate(
        [
            "Question: which river runs through the city?\nAnswer:",
            "The garden light",
            long_ctx,
            "",  # empty context: scored after the EOS token
            "Python table chair:",
        ]
    ):
        for i, c in enumerate([" the river", " mountain", " a window in the garden with music", " 3.14159", " x"]):
            reqs.append(LoglikelihoodRequest(ctx, c, (q, i)))
    reqs.append(LoglikelihoodRequest("Answer:", " the river", ("uncond", 0)))
    reqs.append(LoglikelihoodRequest("The garden light", " mountain", ("dup", 0)))  # duplicate of an earlier one
    reqs.append(LoglikelihoodRequest("A short question about the river and the city", " " + " ".join(["science history"] * 14), ("long-cont", 0)))  # truncated ctx
    return reqs


@pytest.mark.parametrize("tokenization,overhead", [("separate", 256), ("joint", 256), ("separate", 0)])
def test_batched_shared_prefix_equals_naive(model, bpe_tokenizer, tokenization, overhead, monkeypatch):
    # overhead 0: the continuation pass of a shared batch split into one pass per length
    monkeypatch.setattr(scoring, "_PASS_OVERHEAD_TOKENS", overhead)
    reqs = mixed_requests()
    L = model.config.max_seq_len
    # some really are truncated, one of them only because its continuation is long
    lens = [list(map(len, encode_pair(bpe_tokenizer, r.context, r.continuation, tokenization))) for r in reqs]
    assert L + 1 < sum(lens[-1]) and lens[-1][1] <= L
    assert any(sum(map(len, encode_pair(bpe_tokenizer, r.context, r.continuation, tokenization))) > L + 1 for r in reqs)
    want = [naive(model, bpe_tokenizer, r, max_length=L, tokenization=tokenization) for r in reqs]
    for shared in (True, False):
        for bs in (3, 64):
            got = score_requests(
                model, bpe_tokenizer, reqs, batch_size=bs, progress=False, tokenization=tokenization, shared_prefix=shared
            )
            assert len(got) == len(reqs)
            for g, (lp, n, greedy) in zip(got, want):
                assert isinstance(g, LoglikelihoodScore)
                assert g.n_tokens == n
                assert g.logprob == pytest.approx(lp, abs=1e-5, rel=1e-6)
                assert g.is_greedy == greedy


def test_order_preserved(model, bpe_tokenizer, monkeypatch):
    reqs = mixed_requests()
    base = score_requests(model, bpe_tokenizer, reqs, batch_size=4, progress=False)
    monkeypatch.setattr(scoring, "_HEAD_CHUNK", 5)  # the LM head in small pieces: same numbers
    perm = list(reversed(range(len(reqs))))
    shuffled = score_requests(model, bpe_tokenizer, [reqs[i] for i in perm], batch_size=4, progress=False)
    for j, i in enumerate(perm):
        assert shuffled[j].logprob == pytest.approx(base[i].logprob, abs=1e-5)
        assert shuffled[j].n_tokens == base[i].n_tokens


def test_explicit_max_length_truncates(model, bpe_tokenizer):
    req = LoglikelihoodRequest("the model reads open data and learns to predict the next token", " from the context")
    got = score_requests(model, bpe_tokenizer, [req], max_length=8, progress=False)[0]
    assert got.logprob == pytest.approx(naive(model, bpe_tokenizer, req, max_length=8)[0], abs=1e-5)
    with pytest.raises(ValueError, match="longer than max_length"):
        score_requests(model, bpe_tokenizer, [LoglikelihoodRequest("a", " the river " * 10)], max_length=4, progress=False)


def test_joint_vs_separate_on_trailing_space(bpe_tokenizer):
    tok = bpe_tokenizer
    ctx, cont = "Answer: ", "river"
    s_ctx, s_cont = encode_pair(tok, ctx, cont, "separate")
    j_ctx, j_cont = encode_pair(tok, ctx, cont, "joint")
    # separate: the context keeps its space, the continuation is "river" on its own
    assert s_ctx == tok.encode("Answer: ") and s_cont == tok.encode("river")
    # joint (lm-eval _encode_pair): the space moves to the continuation, " river" after "Answer:"
    assert j_ctx == tok.encode("Answer:")
    assert j_cont == tok.encode("Answer: river")[len(tok.encode("Answer:")) :]
    assert tok.decode(j_cont) == " river"
    assert (s_ctx, s_cont) != (j_ctx, j_cont)
    # no trailing space and a leading-space continuation: both agree
    assert encode_pair(tok, "Answer:", " river", "separate") == encode_pair(tok, "Answer:", " river", "joint")
    # empty context: the EOS token, both ways (the tokenizer has no BOS) ...
    assert tok.bos_token_id is None
    assert encode_pair(tok, "", " river", "joint") == ([tok.eos_token_id], tok.encode(" river"))
    assert encode_pair(tok, "", " river", "separate") == ([tok.eos_token_id], tok.encode(" river"))
    # ... a whitespace-only context in joint mode: the space moves, the context becomes EOS
    assert encode_pair(tok, " ", "river", "joint") == ([tok.eos_token_id], tok.encode(" river"))

    class WithBos:  # ... and BOS when the tokenizer has one (lm-eval's prefix_token_id)
        bos_token_id, eos_token_id = 5, 0

        def encode(self, text):
            return tok.encode(text)

    assert encode_pair(WithBos(), "", " river", "joint")[0] == [5]
    with pytest.raises(ValueError, match="tokenization"):
        encode_pair(tok, "a", "b", "both")


def test_is_greedy_constructed(bpe_tokenizer):
    """A model whose argmax is always token 7: continuations of 7s are greedy, others not."""
    torch.manual_seed(0)
    m = tiny_config(max_seq_len=32).build()
    bonus = torch.zeros(m.config.padded_vocab_size)
    bonus[7] = 100.0
    m.output = lambda h: h @ m.head_weight.t() + bonus  # every position's argmax is 7

    class FixedTok:
        eos_token_id = bpe_tokenizer.eos_token_id
        pad_token_id = bpe_tokenizer.pad_token_id

        def encode(self, text):
            return [int(t) for t in text.split()]

    reqs = [
        LoglikelihoodRequest("1 2 3", " 7 7", "greedy"),
        LoglikelihoodRequest("1 2 3", " 7 8", "not"),
        LoglikelihoodRequest("4 5", " 7", "greedy1"),
        LoglikelihoodRequest("4 5", " 9", "not1"),
        LoglikelihoodRequest("4 5 6", " 8 7 7", "not, first token"),
    ]
    for shared in (True, False):
        got = score_requests(m, FixedTok(), reqs, progress=False, shared_prefix=shared)
        assert [g.is_greedy for g in got] == [True, False, True, False, False]
        assert got[0].logprob > -1e-3 and got[1].logprob < -50  # p(7) ~ 1, p(8) ~ e^-100


def test_empty_continuation_scores_zero(model, bpe_tokenizer):
    got = score_requests(model, bpe_tokenizer, [LoglikelihoodRequest("abc", "")], progress=False)[0]
    assert (got.logprob, got.n_tokens, got.is_greedy) == (0.0, 0, True)


def test_split_by_length():
    assert scoring._split_by_length([]) == []
    assert scoring._split_by_length([5, 5, 5], overhead=0) == [(0, 3)]
    assert scoring._split_by_length([40, 39, 3, 2, 2], overhead=0) == [(0, 1), (1, 2), (2, 3), (3, 5)]
    # a pass costs 10 positions: splitting 40,39 | 3,2,2 saves 37*3 - 10 positions; more splits do not pay
    assert scoring._split_by_length([40, 39, 3, 2, 2], overhead=10) == [(0, 2), (2, 5)]
    assert scoring._split_by_length([40, 39, 3, 2, 2], overhead=1000) == [(0, 5)]


def test_continuation_longer_than_the_window_in_the_logits_path(model):
    """The in-loop (logits-only) path with a continuation longer than max_length scores the last
    max_length continuation tokens, the ones the window can predict (regression: it used to index
    before the row's start)."""
    ctx, cont = (5, 6, 7), tuple(range(10, 30))  # 20 continuation tokens, window 8
    item = scoring._Item(ctx, cont, 0)
    (lp, _), = scoring.run_plain_batch(model, [item], max_length=8)
    inp = (list(ctx) + list(cont))[-9:][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([inp]))[0].double(), -1)
    expected = logp.gather(-1, torch.tensor(cont[-8:])[:, None]).sum().item()
    assert lp == pytest.approx(expected, abs=1e-4)
