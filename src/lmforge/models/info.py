"""A human-readable summary of a model config: shapes, parameter counts, FLOPs, memory."""

from __future__ import annotations

from lmforge.formatting import format_count
from lmforge.models.olmo import ModelConfig


def describe(cfg: ModelConfig, *, name: str | None = None, seq_len: int | None = None) -> str:
    """Build the model on the meta device (no memory) and describe it."""
    model = cfg.build(device="meta")
    total = model.num_params()
    emb = model.embed.weight.numel()
    per_layer = sum(p.numel() for p in model.blocks[0].parameters())
    seq = seq_len or cfg.max_seq_len
    flops = model.num_flops_per_token(seq)
    kv = f"{cfg.kv_heads} (grouped-query)" if cfg.kv_heads != cfg.n_heads else f"{cfg.kv_heads}"
    norm = "RMSNorm on sub-layer outputs + QK-norm" if cfg.arch == "olmo2" else "LayerNorm without weights, pre-norm"
    rows = [
        ("preset", name or "-"),
        ("arch", f"{cfg.arch} ({norm})"),
        ("d_model / n_layers / n_heads", f"{cfg.d_model} / {cfg.n_layers} / {cfg.n_heads}"),
        ("kv heads / head dim", f"{kv} / {cfg.head_dim}"),
        ("MLP hidden (SwiGLU)", f"{cfg.mlp_hidden}"),
        ("vocab (padded)", f"{cfg.vocab_size} ({cfg.padded_vocab_size}, multiple of {cfg.vocab_multiple})"),
        ("max sequence length", f"{cfg.max_seq_len}"),
        ("RoPE theta", f"{cfg.theta:g}"),
        ("tied embeddings", "yes" if cfg.tie_embeddings else "no"),
        ("clip_qkv", f"{cfg.clip_qkv}"),
        ("init", cfg.init_method),
        ("parameters", f"{total:,} ({format_count(total, spec='.2f')})"),
        ("  embedding", f"{emb:,}"),
        ("  non-embedding", f"{total - emb:,}"),
        ("  per layer", f"{per_layer:,}"),
        (f"training FLOPs/token @ seq {seq}", f"{flops:,} ({format_count(flops, spec='.2f')}; 6N + 12*L*d*seq)"),
        ("weights in fp32 / bf16", f"{total * 4 / 2**30:.2f} GiB / {total * 2 / 2**30:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
