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
        """positions (B, T) integers -> cos and *signed* sin, each (B, 1, T, hd), float32: the sin of
        the first half negated, so that rotate-half is a roll (see :func:`apply_rotary`)."""
        freqs = positions[..., None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        sin = emb.sin()
        sin[..., : self.head_dim // 2].neg_()
        return emb.cos()[:, None], sin[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hd) rotated by cos and the signed sin (B, 1, T, hd) of :class:`RotaryEmbedding`;
    computed in float32, returned in x's dtype. The reference's ``x * cos + cat(-x2, x1) * sin``
    equals ``x * cos + cat(x2, x1) * cat(-sin1, sin1)`` bit for bit (a sign flip is exact), and
    ``cat(x2, x1)`` is one roll: 4 ops instead of 6 (a CPU decode step applies it 24 times)."""
    xf = x if x.dtype == torch.float32 else x.float()
    y = xf * cos + torch.roll(xf, x.shape[-1] // 2, dims=-1) * signed_sin
    return y if y.dtype == x.dtype else y.to(x.dtype)
