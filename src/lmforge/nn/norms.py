"""Normalisation layers used by the OLMo family.

OLMo-1 uses LayerNorm with no learnable parameters at all (no weight, no bias); OLMo-2 uses RMSNorm
with a weight. Both normalise in float32 and cast back, as the reference implementations do, so
that bf16 training keeps the statistics exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ParameterFreeLayerNorm(nn.Module):
    """LayerNorm without weight or bias (OLMo-1)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.dim,), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable scale (OLMo-2)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype == torch.float32 and w.dtype == torch.float32:
            # the same arithmetic as below in one call, bit for bit (a CPU decode step runs 49 norms
            # on single rows, where the per-call cost of 8 small ops is most of the time)
            return F.rms_norm(x, w.shape, w, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (w * xf).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
