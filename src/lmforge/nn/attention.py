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
        qkv = self.qkv(x)  # (B, T, q_dim + 2 kv_dim)
        if self.clip_qkv is not None:
            qkv = qkv.clamp(-self.clip_qkv, self.clip_qkv)
        q, k, v = qkv.split_with_sizes([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        if self.q_norm is not None and self._stacked(qkv):
            q, k = self._qk_norm_rope_stacked(qkv, rope)
        else:
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
            k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hd), S = cached + T
        gqa = self.n_kv_heads != self.n_heads
        # mask None means "plain causal over these T positions"; otherwise a boolean (B, 1, T, S).
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=gqa
        )  # (B, nh, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, self.q_dim))

    def _stacked(self, qkv: torch.Tensor) -> bool:
        """Whether q and k can go through QK-norm and RoPE side by side, as one tensor: float32
        without autograd (inference) and q and k of one size (no GQA)."""
        return self.q_dim == self.kv_dim and qkv.dtype == torch.float32 and not qkv.requires_grad

    def _qk_norm_rope_stacked(self, qkv: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """OLMo-2's norms of the whole q and k projections, then RoPE, on q and k side by side in
        the fused projection's output: the same numbers as the plain path, bit for bit (the same
        ops, row by row), with half the small ops (a CPU decode step at batch 1 is mostly those)."""
        B, T, _ = qkv.shape
        qk = qkv[..., : 2 * self.q_dim].view(B, T, 2, self.q_dim)  # q and k, no copy
        w = torch.stack((self.q_norm.weight, self.k_norm.weight))  # (2, d)
        qk = F.rms_norm(qk, (self.q_dim,), None, self.q_norm.eps) * w
        qk = qk.view(B, T, 2, self.n_heads, self.head_dim)
        cos, sin = (t.transpose(1, 2)[:, :, None] for t in rope)  # (B, T, 1, 1, hd): over q|k and heads
        qk = apply_rotary(qk, cos, sin)
        return qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)  # (B, nh, T, hd) each
