"""Causal self-attention with RoPE, optional grouped-query attention, QK-norm and QKV clipping.

q, k and v come from one fused projection (one matmul instead of three); the HF key map splits it
into q_proj/k_proj/v_proj. Attention itself is ``F.scaled_dot_product_attention``, which picks the
fastest kernel for the device (flash / memory-efficient on GPU, a fused kernel on CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.nn.kv_cache import KVCache
from lmforge.nn.norms import RMSNorm
from lmforge.nn.rope import apply_rotary


class Attention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        *,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        clip_qkv: float | None = None,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads {n_heads} is not divisible by n_kv_heads {n_kv_heads}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.q_dim, self.kv_dim = n_heads * self.head_dim, n_kv_heads * self.head_dim
        self.clip_qkv = clip_qkv
        self.qkv = nn.Linear(d_model, self.q_dim + 2 * self.kv_dim, bias=False)
        self.out = nn.Linear(self.q_dim, d_model, bias=False)
        # OLMo-2 normalises the *whole* q and k projections (not per head) before RoPE.
        self.q_norm = RMSNorm(self.q_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.kv_dim, norm_eps) if qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        *,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        if self.clip_qkv is not None:
            q, k, v = (t.clamp(-self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self._qk_norm(q, k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hd), S = cached + T
        gqa = self.n_kv_heads != self.n_heads
        # mask None means "plain causal over these T positions"; otherwise a boolean (B, 1, T, S).
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=gqa
        )  # (B, nh, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, self.q_dim))

    def _qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OLMo-2's norms of the whole q and k projections. In float32 without autograd and GQA (q and
        k of one size) both go through one RMSNorm call on the stacked rows: the same numbers, bit
        for bit, with half the small ops (a CPU decode step at batch 1 is mostly small ops)."""
        if self.q_dim != self.kv_dim or q.dtype != torch.float32 or q.requires_grad:
            return self.q_norm(q), self.k_norm(k)
        w = torch.stack((self.q_norm.weight, self.k_norm.weight))[:, None, None, :]  # (2, 1, 1, d)
        both = F.rms_norm(torch.stack((q, k)), (self.q_dim,), None, self.q_norm.eps) * w
        return both[0], both[1]
