"""Turning one step's logits into the next token: penalties, filters, then argmax or a draw.

Every function takes and returns float logits of shape (B, V), one row per sequence in the batch.
The order follows HF transformers, so greedy decoding with a repetition penalty gives the same
tokens as ``model.generate(repetition_penalty=...)``:

    mask ids the tokenizer cannot produce -> repetition penalty -> (sampling only:)
    temperature -> top-k -> top-p -> softmax -> multinomial draw
"""

from __future__ import annotations

import torch

from lmforge.generate.config import GenerationConfig

NEG_INF = float("-inf")


def mask_padded_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Forbid ids >= ``vocab_size``.

    The embedding is padded to a multiple of 128 for speed; the extra rows were never trained on a
    real token, and a tokenizer cannot decode them, so they must never be chosen.
    """
    if vocab_size < logits.shape[-1]:
        logits[:, vocab_size:] = NEG_INF
    return logits


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already present (``seen`` (B, V) bool) less likely, as HF does.

    Dividing a positive logit and multiplying a negative one both move it towards "less likely",
    whatever its sign; a plain division would make negative logits *more* likely.
    """
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits of each row (ties with the k-th are kept too); -inf the rest."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p.

    A token is kept when the probability mass of the tokens ranked above it is still below p, so
    the most likely token is always kept.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # (B, V) probability of all better-ranked tokens
    drop_sorted = mass_above >= p
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)


def choose_next(
    logits: torch.Tensor,  # (B, V) float, already masked and penalised
    gen: GenerationConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of every row (B,): argmax when greedy, otherwise a filtered draw."""
    if not gen.do_sample:
        return logits.argmax(dim=-1)
    logits = logits / gen.temperature
    logits = top_k_filter(logits, gen.top_k)
    logits = top_p_filter(logits, gen.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
