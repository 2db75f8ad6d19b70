"""The OLMo family: OLMo-1 and OLMo-2 decoder-only transformers, on one device.

Read top to bottom:

1. ``ModelConfig`` -- every shape and switch the family uses, with the two architectures' defaults.
2. ``Block``       -- one transformer layer. The two generations differ only in where the norm goes:

       OLMo-1 (pre-norm, LayerNorm *without* weights):
           h = x + Attn(LN(x))
           y = h + MLP(LN(h))

       OLMo-2 (norm on each sub-layer's *output*, RMSNorm with weights, QK-norm inside attention):
           h = x + RMSNorm(Attn(x))
           y = h + RMSNorm(MLP(h))

   Both: no biases anywhere, SwiGLU MLP, RoPE, optional grouped-query attention.
3. ``OLMo``        -- embedding -> blocks -> final norm -> LM head, plus initialisation and a FLOPs count.

Parallelism (FSDP/DDP), activation checkpointing and torch.compile are applied from outside
(``lmforge.distributed``); nothing here knows about processes.

Shapes: B batch, T new positions, S all key positions (cached + new), d d_model, V padded vocab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from lmforge.config import Config, ConfigError
from lmforge.nn.attention import Attention
from lmforge.nn.feed_forward import SwiGLU
from lmforge.nn.kv_cache import KVCache
from lmforge.nn.loss import linear_cross_entropy, linear_token_cross_entropy
from lmforge.nn.norms import ParameterFreeLayerNorm, RMSNorm
from lmforge.nn.rope import RotaryEmbedding

Arch = Literal["olmo1", "olmo2"]


@dataclasses.dataclass
class ModelConfig(Config):
    """Shapes and switches of an OLMo model. ``arch`` picks the block layout; see the module docstring."""

    arch: Arch = "olmo2"
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (multi-head); fewer = grouped-query attention
    mlp_hidden: int = 1024  # SwiGLU inner size (HF: intermediate_size)
    vocab_size: int = 50280  # ids the tokenizer can produce; the embedding is padded beyond it
    vocab_multiple: int = 128  # pad the embedding to a multiple of this (tensor-core friendly)
    max_seq_len: int = 2048
    rope_theta: float | None = None  # None = arch default: 10k (OLMo-1), 500k (OLMo-2)
    tie_embeddings: bool = False
    clip_qkv: float | None = None  # OLMo-1 option: clamp q, k, v to [-c, c]
    norm_eps: float | None = None  # None = arch default: 1e-5 (OLMo-1 LayerNorm), 1e-6 (OLMo-2 RMSNorm)
    init: Literal["mitchell", "normal"] | None = None  # None = arch default
    init_std: float = 0.02  # for init="normal"

    # --- derived values -----------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return ((self.vocab_size + m - 1) // m) * m

    @property
    def theta(self) -> float:
        return self.rope_theta if self.rope_theta is not None else (10_000.0 if self.arch == "olmo1" else 500_000.0)

    @property
    def eps(self) -> float:
        return self.norm_eps if self.norm_eps is not None else (1e-5 if self.arch == "olmo1" else 1e-6)

    @property
    def init_method(self) -> str:
        return self.init or ("mitchell" if self.arch == "olmo1" else "normal")

    def validate(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "mlp_hidden", "vocab_size", "vocab_multiple", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"model.d_model / model.n_heads = {self.head_dim} must be even for RoPE")
        if self.n_kv_heads is not None and (self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads):
            raise ConfigError(f"model.n_kv_heads ({self.n_kv_heads}) must divide model.n_heads ({self.n_heads})")
        if self.clip_qkv is not None and self.clip_qkv <= 0:
            raise ConfigError(f"model.clip_qkv must be positive or null, got {self.clip_qkv}")

    def build(self, device: torch.device | str | None = None) -> "OLMo":
        return OLMo(self, device=device)


class Block(nn.Module):
    """One transformer layer; ``arch`` decides pre-norm (OLMo-1) or output-norm (OLMo-2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.arch = cfg.arch
        olmo2 = cfg.arch == "olmo2"
        self.attn = Attention(
            cfg.d_model, cfg.n_heads, cfg.kv_heads, qk_norm=olmo2, norm_eps=cfg.eps, clip_qkv=cfg.clip_qkv
        )
        self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden)
        Norm = RMSNorm if olmo2 else ParameterFreeLayerNorm
        self.attn_norm = Norm(cfg.d_model, cfg.eps)
        self.mlp_norm = Norm(cfg.d_model, cfg.eps)

    def forward(self, x, rope, mask=None, cache=None, layer=0):  # x: (B, T, d)
        if self.arch == "olmo2":
            x = x + self.attn_norm(self.attn(x, rope, mask=mask, cache=cache, layer=layer))
            return x + self.mlp_norm(self.mlp(x))
        x = x + self.attn(self.attn_norm(x), rope, mask=mask, cache=cache, layer=layer)
        return x + self.mlp(self.mlp_norm(x))


class OLMo(nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None):
        super().__init__()
        cfg.validate()
        self.config = cfg
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.embed = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.rope = RotaryEmbedding(cfg.head_dim, cfg.theta)
            # OLMo-1's final norm has no weights; OLMo-2's is an RMSNorm with weights.
            self.norm = RMSNorm(cfg.d_model, cfg.eps) if cfg.arch == "olmo2" else ParameterFreeLayerNorm(cfg.d_model, cfg.eps)
            self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        if not (device is not None and torch.device(device).type == "meta"):
            self.reset_parameters()

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        *,
        attention_mask: torch.Tensor | None = None,  # (B, S) 1 = real token, 0 = padding; S = cached + T
        position_ids: torch.Tensor | None = None,  # (B, T); default: count of real tokens before each
        cache: KVCache | None = None,
        return_hidden: bool = False,
        labels: torch.Tensor | None = None,  # (B, T) next-token targets, -100 = not counted
        z_loss_coef: float = 0.0,
        document_ids: torch.Tensor | None = None,  # (B, T) packed documents: attend only within one
        reduction: str = "mean",  # of the loss over label tokens: "mean", "sum", or "none" (per token)
    ):
        """Return logits (B, T, V) over the padded vocabulary, or the final hidden states (B, T, d)
        with ``return_hidden``, or with ``labels`` the training loss (a LossOutput; the logits are
        never materialised whole, see ``nn.loss.linear_cross_entropy``)."""
        position_ids, mask = self._positions_and_mask(input_ids, attention_mask, position_ids, cache, document_ids)
        rope = self.rope(position_ids)  # cos, sin: (B, 1, T, hd)
        x = self.embed(input_ids)  # (B, T, d)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, i)
        x = self.norm(x)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        if return_hidden:
            return x
        if labels is not None:
            return self._loss(x, labels, z_loss_coef, reduction)
        return self.output(x)

    def _loss(self, hidden: torch.Tensor, labels: torch.Tensor, z_loss_coef: float, reduction: str):
        """Cross-entropy of ``labels`` from the final hidden states, through the LM head in chunks."""
        if reduction == "none":
            # (B, T) per-token -log p(label), 0 where ignored: for sequence-level losses (DPO).
            return linear_token_cross_entropy(hidden, self.head_weight, labels)
        return linear_cross_entropy(hidden, self.head_weight, labels, z_loss_coef=z_loss_coef, reduction=reduction)

    def decode_step(
        self,
        input_ids: torch.Tensor,  # (B, 1): each row's latest token
        position_ids: torch.Tensor,  # (B, 1): its RoPE position
        cache: KVCache,  # in static mode (cache.make_static()), holding everything before it
    ) -> torch.Tensor:
        """Logits (B, V) of the next token after one more token per row, against a *static* cache:
        every tensor has the same shape at every step (attention runs over all ``max_len`` slots,
        the unwritten ones masked), so the step can be compiled once and replayed as a CUDA graph.
        The caller then advances the cache (``cache.advance(1)``), outside any compiled region."""
        slots = torch.arange(cache.max_len, device=input_ids.device)  # (S,)
        written = slots <= cache.static_pos  # (S,) the slots that hold a token once this one is written
        mask = (cache.key_mask & written)[:, None, None, :]  # (B, 1, 1, S): no padding, nothing unwritten
        rope = self.rope(position_ids)
        x = self.embed(input_ids)  # (B, 1, d)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, i)
        return self.output(self.norm(x))[:, 0]  # (B, V)

    @property
    def head_weight(self) -> torch.Tensor:
        """The (V, d) output projection: the embedding itself when tied."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def output(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, d) -> logits (B, T, V)."""
        return hidden @ self.head_weight.t()

    # --- masks and positions ------------------------------------------------------------------
    def _positions_and_mask(self, input_ids, attention_mask, position_ids, cache, document_ids):
        """RoPE positions (B, T) and the boolean attention mask (B, 1, T, S), or None where plain
        causal attention suffices: causal over the cached keys and the new ones, without padding
        keys (``attention_mask``, remembered by the cache across calls), within one document."""
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if cache is not None:
            cache.append_mask(attention_mask[:, start:] if attention_mask is not None else None, T)
            key_mask = cache.key_mask[:, : start + T]
            padded = cache.has_padding
        else:
            key_mask = attention_mask.to(torch.bool) if attention_mask is not None else None
            padded = key_mask is not None and not bool(key_mask.all())
        if position_ids is None:
            if padded:
                # Left padding: a row's first real token is position 0, as in HF transformers.
                position_ids = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:]
            else:
                position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        mask = self._attention_mask(T, start, key_mask if padded else None, input_ids.device)
        if document_ids is not None:
            if cache is not None or start:
                raise ValueError("document_ids is for training on packed rows; it cannot be combined with a KV cache")
            doc_mask = self._document_mask(document_ids)
            mask = doc_mask if mask is None else mask & doc_mask
        return position_ids, mask

    @staticmethod
    def _attention_mask(T: int, start: int, key_mask: torch.Tensor | None, device) -> torch.Tensor | None:
        """Boolean (B, 1, T, S) mask, or None when plain causal attention over T positions suffices."""
        if key_mask is None and (start == 0 or T == 1):
            return None  # start == 0: is_causal; T == 1: one query sees every cached key
        S = start + T
        causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=start)  # (T, S)
        if key_mask is None:
            return causal[None, None]
        mask = causal[None, None] & key_mask[:, None, None, :]  # (B, 1, T, S)
        # A padding query may see no key at all; let it see itself so softmax stays finite (its
        # output is never used).
        diag = torch.zeros(T, S, dtype=torch.bool, device=device)
        diag[torch.arange(T), torch.arange(start, S)] = True
        return mask | diag

    @staticmethod
    def _document_mask(document_ids: torch.Tensor) -> torch.Tensor:
        """Intra-document masking for packed training rows (B, T): a token sees earlier tokens of its
        own document only, (B, 1, T, T). Positions are not reset (as in OLMo-core); RoPE is relative anyway."""
        T = document_ids.shape[1]
        same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=document_ids.device).tril()
        return (same & causal)[:, None]  # (B, 1, T, T)

    # --- cache, sizes --------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        cfg = self.config
        p = self.embed.weight
        return KVCache(
            cfg.n_layers, batch_size, cfg.kv_heads, max_len or cfg.max_seq_len, cfg.head_dim, dtype=p.dtype, device=p.device
        )

    def num_params(self, *, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def num_flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), the convention lmforge reports MFU with:

        ``6 * N + 12 * n_layers * d_model * seq_len``

        N counts every weight that takes part in a matmul: all parameters except the input embedding
        table (a lookup, not a matmul), plus the LM head even when it is tied to the embedding.
        The attention term (QK^T and AV, 2 matmuls x 2 FLOPs x 3 for fwd+bwd) is *not* halved for
        causality, as in PaLM and nanoGPT; OLMo-core halves it, so its MFU reads lower for the same
        speed. Norm weights are counted in N; they are negligible.
        """
        cfg = self.config
        seq_len = seq_len or cfg.max_seq_len
        n = self.num_params(non_embedding=True)
        if self.lm_head is None:
            n += self.embed.weight.numel()
        return 6 * n + 12 * cfg.n_layers * cfg.d_model * seq_len

    # --- initialisation -----------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise weights as the official recipes do.

        normal (OLMo-2): every weight ~ N(0, init_std), truncated at +-3 sigma; norm scales = 1.
        mitchell (OLMo-1): std 1/sqrt(d) for embeddings and input projections; output projections
        of layer i use 1/sqrt(2 * fan_in * (i + 1)), shrinking deeper residual contributions.
        """
        cfg = self.config

        def trunc(w: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(w, mean=0.0, std=std, a=-3 * std, b=3 * std)

        mitchell = cfg.init_method == "mitchell"
        base = 1 / math.sqrt(cfg.d_model) if mitchell else cfg.init_std
        trunc(self.embed.weight, base)
        if self.lm_head is not None:
            trunc(self.lm_head.weight, base)
        for i, block in enumerate(self.blocks):
            trunc(block.attn.qkv.weight, base)
            trunc(block.mlp.gate.weight, base)
            trunc(block.mlp.up.weight, base)
            if mitchell:
                trunc(block.attn.out.weight, 1 / math.sqrt(2 * cfg.d_model * (i + 1)))
                trunc(block.mlp.down.weight, 1 / math.sqrt(2 * cfg.mlp_hidden * (i + 1)))
            else:
                trunc(block.attn.out.weight, base)
                trunc(block.mlp.down.weight, base)
        for m in self.modules():
            if isinstance(m, (RMSNorm, RotaryEmbedding)):
                m.reset_parameters()

