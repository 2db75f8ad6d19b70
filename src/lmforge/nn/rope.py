"""Rotary position embeddings (RoPE), in the "rotate half" layout used by OLMo and HF transformers.

A head vector of size ``hd`` is split into two halves (x1, x2); position ``p`` rotates each pair
(x1[i], x2[i]) by the angle ``p * theta**(-2i/hd)``. Angles are computed in float32 from integer
positions, which keeps long contexts exact and matches the reference implementations bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_parameters(self, device: torch.device | str | None = None) -> None:
        # A model built on the meta device (then loaded with assign=True) gets its buffer here.
        device = device or self.inv_freq.device
        hd = self.head_dim
        self.inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) integers -> cos, sin each (B, 1, T, hd), float32."""
        freqs = positions[..., None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return emb.cos()[:, None], emb.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hd) rotated by cos/sin (B, 1, T, hd); computed in float32, returned in x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)
