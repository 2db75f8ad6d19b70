"""Language-model loss: cross-entropy with an optional z-loss, normalised over non-masked tokens.

z-loss (PaLM; used by OLMo-2 with coefficient 1e-5) penalises log(Z)^2, the squared log-partition
function of the softmax, which keeps the output logits from drifting and stabilises bf16 training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class LossOutput(NamedTuple):
    loss: torch.Tensor  # what to backpropagate: ce + z_loss
    ce: torch.Tensor  # mean cross-entropy over counted tokens
    z_loss: torch.Tensor  # z-loss term (already multiplied by its coefficient)
    n_tokens: torch.Tensor  # number of counted (non-ignored) tokens


def lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    z_loss_coef: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> LossOutput:
    """logits (B, T, V), labels (B, T) already shifted (labels[t] is the target of logits[t]).

    ``reduction="sum"`` returns sums instead of means, for gradient accumulation that normalises by
    the token count of the whole global batch.
    """
    logits = logits.reshape(-1, logits.size(-1)).float()
    labels = labels.reshape(-1)
    mask = labels != ignore_index
    n = mask.sum()
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    if z_loss_coef:
        lse = torch.logsumexp(logits, dim=-1)
        z = z_loss_coef * (lse.pow(2) * mask).sum()
    else:
        z = torch.zeros((), device=logits.device)
    if reduction == "mean":
        denom = n.clamp(min=1)
        ce, z = ce / denom, z / denom
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return LossOutput(ce + z, ce, z, n)


class _LinearCrossEntropy(torch.autograd.Function):
    """Output projection + cross-entropy (+ z-loss), chunk by chunk, gradients computed on the way.

    The (N, V) logits never exist all at once: each chunk of rows is projected, scored, turned into
    its logits-gradient ``softmax * (1 + 2 z lse) - onehot`` and folded into the gradients of
    ``hidden`` and ``weight`` before the next chunk. That saves the logits' memory (6.5 GB in float32
    for 16k tokens of a 100k vocabulary) and one full pass over them, so it is faster as well.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, z_loss_coef, ignore_index, chunk_size):
        need_grad = hidden.requires_grad or weight.requires_grad
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        ce = torch.zeros((), dtype=torch.float32, device=hidden.device)
        z = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]  # (c, d)
            y = labels[start : start + chunk_size]  # (c,)
            keep = y != ignore_index
            target = torch.where(keep, y, 0)[:, None]
            logits = (h @ weight.t()).float()  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            ce += ((lse - logits.gather(1, target).squeeze(1)) * keep).sum()
            if z_loss_coef:
                z += z_loss_coef * (lse.pow(2) * keep).sum()
            if not need_grad:
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            if z_loss_coef:
                grad.mul_((1 + 2 * z_loss_coef * lse)[:, None])
            grad.scatter_add_(1, target, torch.full_like(lse[:, None], -1.0))
            grad.mul_(keep[:, None])
            grad = grad.to(h.dtype)
            if grad_hidden is not None:
                torch.mm(grad, weight, out=grad_hidden[start : start + chunk_size])
            if grad_weight is not None:
                grad_weight.addmm_(grad.t().float(), h.float())  # float32 accumulation across chunks
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(ce, z)
        return ce + z, ce, z

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_z):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_total if grad_hidden is not None else None
        gw = (grad_weight * grad_total).to(ctx.weight_dtype) if grad_weight is not None else None
        return gh, gw, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    z_loss_coef: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    chunk_size: int = 1024,
) -> LossOutput:
    """``lm_loss(hidden @ weight.T, labels)`` without materialising the logits.

    hidden (B, T, d) or (N, d); weight (V, d); labels shaped like hidden without its last dim.
    Same values and gradients as :func:`lm_loss` (to float rounding).
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    total, ce, z = _LinearCrossEntropy.apply(h, weight, y, float(z_loss_coef), ignore_index, chunk_size)
    n = (y != ignore_index).sum()
    if reduction == "mean":
        denom = n.clamp(min=1)
        total, ce, z = total / denom, ce / denom, z / denom
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return LossOutput(total, ce, z, n)


def _chunk_token_ce(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    logits = (h @ weight.t()).float()  # (c, V)
    keep = y != ignore_index
    ce = torch.logsumexp(logits, dim=-1) - logits.gather(1, torch.where(keep, y, 0)[:, None]).squeeze(1)
    return ce * keep


def linear_token_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token cross-entropy (= -log p(label)), shaped like ``labels``, 0 where ignored.

    For losses that weigh sequences differently (DPO needs each sequence's summed log-probability).
    Each chunk of rows is recomputed in the backward pass (activation checkpointing), so the logits
    are never all stored at once.
    """
    from torch.utils.checkpoint import checkpoint

    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    pieces = []
    for start in range(0, h.shape[0], chunk_size):
        args = (h[start : start + chunk_size], weight, y[start : start + chunk_size], ignore_index)
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_token_ce, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_token_ce(*args))
    return torch.cat(pieces).reshape(labels.shape)
