"""HF transformers interop for the OLMo family: one declarative key map, plus config conversion.

lmforge fuses q, k and v into one projection, so that lmforge tensor maps to three HF tensors,
concatenated along the output dimension (dim 0) in the order listed; every other key maps 1:1.

    lmforge                         HF (OlmoForCausalLM / Olmo2ForCausalLM)
    embed.weight                    model.embed_tokens.weight
    blocks.{i}.attn.qkv.weight      model.layers.{i}.self_attn.{q,k,v}_proj.weight  (concatenated)
    blocks.{i}.attn.out.weight      model.layers.{i}.self_attn.o_proj.weight
    blocks.{i}.attn.q_norm.weight   model.layers.{i}.self_attn.q_norm.weight         (OLMo-2)
    blocks.{i}.attn.k_norm.weight   model.layers.{i}.self_attn.k_norm.weight         (OLMo-2)
    blocks.{i}.mlp.gate.weight      model.layers.{i}.mlp.gate_proj.weight
    blocks.{i}.mlp.up.weight        model.layers.{i}.mlp.up_proj.weight
    blocks.{i}.mlp.down.weight      model.layers.{i}.mlp.down_proj.weight
    blocks.{i}.attn_norm.weight     model.layers.{i}.post_attention_layernorm.weight  (OLMo-2)
    blocks.{i}.mlp_norm.weight      model.layers.{i}.post_feedforward_layernorm.weight (OLMo-2)
    norm.weight                     model.norm.weight                                 (OLMo-2)
    lm_head.weight                  lm_head.weight                                    (untied)

OLMo-1 in HF has no norm weights at all (its LayerNorms are parameter-free), like lmforge.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.config import ConfigError
from lmforge.models.olmo import ModelConfig

# lmforge key (with {i} for the layer) -> HF keys concatenated along dim 0.
_LAYER_MAP: dict[str, tuple[str, ...]] = {
    "attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.out.weight": ("self_attn.o_proj.weight",),
    "attn.q_norm.weight": ("self_attn.q_norm.weight",),
    "attn.k_norm.weight": ("self_attn.k_norm.weight",),
    "mlp.gate.weight": ("mlp.gate_proj.weight",),
    "mlp.up.weight": ("mlp.up_proj.weight",),
    "mlp.down.weight": ("mlp.down_proj.weight",),
    "attn_norm.weight": ("post_attention_layernorm.weight",),
    "mlp_norm.weight": ("post_feedforward_layernorm.weight",),
}
_TOP_MAP: dict[str, tuple[str, ...]] = {
    "embed.weight": ("model.embed_tokens.weight",),
    "norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
}


def key_map(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Every lmforge parameter name of a model with config ``cfg`` -> its HF parameter names."""
    olmo2 = cfg.arch == "olmo2"
    out: dict[str, tuple[str, ...]] = {"embed.weight": _TOP_MAP["embed.weight"]}
    for i in range(cfg.n_layers):
        for ours, theirs in _LAYER_MAP.items():
            if "norm" in ours and not olmo2:
                continue
            out[f"blocks.{i}.{ours}"] = tuple(f"model.layers.{i}.{t}" for t in theirs)
    if olmo2:
        out["norm.weight"] = _TOP_MAP["norm.weight"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = _TOP_MAP["lm_head.weight"]
    return out


def _split_sizes(cfg: ModelConfig, key: str) -> list[int]:
    if key.endswith("attn.qkv.weight"):
        q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        return [q, kv, kv]
    raise KeyError(key)


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmforge state dict -> HF state dict (fused tensors split; tensors made contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map(cfg).items():
        if ours not in state:
            raise ConfigError(f"model state is missing '{ours}'; is it a {cfg.arch} model with this config?")
        t = state[ours]
        parts = t.split(_split_sizes(cfg, ours), dim=0) if len(theirs) > 1 else (t,)
        for name, part in zip(theirs, parts):
            out[name] = part.contiguous()
    return out


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """HF state dict -> lmforge state dict. Missing keys or wrong shapes raise one clear line."""
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in key_map(cfg).items():
        missing = [k for k in theirs if k not in hf]
        if missing:
            raise ConfigError(f"{source} is missing tensor '{missing[0]}' (expected for {cfg.arch} with this config.json)")
        out[ours] = torch.cat([hf[k] for k in theirs], dim=0) if len(theirs) > 1 else hf[theirs[0]]
    return out


# --- config ----------------------------------------------------------------------------------------
def to_hf_config(cfg: ModelConfig, *, eos_token_id: int, pad_token_id: int, bos_token_id: int | None = None) -> dict[str, Any]:
    """The config.json that stock transformers (and vLLM) read as OlmoForCausalLM / Olmo2ForCausalLM."""
    olmo2 = cfg.arch == "olmo2"
    d: dict[str, Any] = {
        "architectures": ["Olmo2ForCausalLM" if olmo2 else "OlmoForCausalLM"],
        "model_type": "olmo2" if olmo2 else "olmo",
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "vocab_size": cfg.padded_vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        # Both spellings: transformers >= 5 reads rope_parameters, older releases and vLLM rope_theta.
        "rope_theta": cfg.theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.theta},
        "rope_scaling": None,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if olmo2:
        d["rms_norm_eps"] = cfg.eps
    else:
        d["clip_qkv"] = cfg.clip_qkv
    return d


def from_hf_config(d: dict[str, Any], *, vocab_size: int | None = None, source: str = "config.json") -> ModelConfig:
    """Read an HF Olmo/Olmo2 config.json dict into a ModelConfig.

    ``vocab_size`` is the tokenizer's vocabulary when known; HF stores only the padded embedding
    size, which lmforge then keeps as is (padding to a multiple that it already is).
    """
    model_type = d.get("model_type")
    if model_type not in ("olmo", "olmo2"):
        raise ConfigError(f"{source}: model_type {model_type!r} is not an OLMo model (expected 'olmo' or 'olmo2')")
    if model_type == "olmo" and d.get("attention_bias"):
        raise ConfigError(f"{source}: attention_bias=true is not supported (the OLMo family has no biases)")
    try:
        rope = d.get("rope_parameters") or {}
        theta = rope.get("rope_theta", d.get("rope_theta", 10_000.0))
        if (rope.get("rope_type") or "default") != "default" or d.get("rope_scaling"):
            raise ConfigError(f"{source}: RoPE scaling {rope or d.get('rope_scaling')} is not supported")
        hf_vocab = int(d["vocab_size"])
        n_heads = int(d["num_attention_heads"])
        fields = dict(
            arch="olmo2" if model_type == "olmo2" else "olmo1",
            d_model=int(d["hidden_size"]),
            n_layers=int(d["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(d.get("num_key_value_heads") or n_heads),
            mlp_hidden=int(d["intermediate_size"]),
            max_seq_len=int(d.get("max_position_embeddings", 2048)),
            rope_theta=float(theta),
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            init_std=float(d.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise ConfigError(f"{source} is missing the key {e.args[0]!r}") from None
    if fields["n_kv_heads"] == n_heads:
        fields["n_kv_heads"] = None
    if model_type == "olmo2":
        fields["norm_eps"] = float(d.get("rms_norm_eps", 1e-6))
    else:
        fields["clip_qkv"] = d.get("clip_qkv")
    # Keep HF's embedding size exactly; remember the tokenizer's vocabulary when it explains it.
    if vocab_size is not None and -(-vocab_size // 128) * 128 == hf_vocab:
        fields.update(vocab_size=vocab_size, vocab_multiple=128)
    else:
        fields.update(vocab_size=hf_vocab, vocab_multiple=128 if hf_vocab % 128 == 0 else 1)
    return ModelConfig.from_dict(fields)
