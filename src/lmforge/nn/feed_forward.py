"""SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases.

gate and up are two separate matrices on purpose. Fusing them into one (2*hidden, d) matmul saves
a little in the forward pass but makes autograd re-assemble a (B, T, 2*hidden) gradient with a copy
in every backward pass, which measured ~2% slower per training step on CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d)
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, hidden) inside
