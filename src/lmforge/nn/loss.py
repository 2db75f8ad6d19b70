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
