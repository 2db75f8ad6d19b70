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

from typing import Any, Iterator, Mapping

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


def iter_key_map(cfg: ModelConfig) -> Iterator[tuple[str, tuple[str, ...]]]:
    """:func:`key_map` one entry at a time, in file order (embedding, layer 0, 1, ..., norm, head):
    a caller that stops at the first problem never walks the layers of an absurd config."""
    olmo2 = cfg.arch == "olmo2"
    yield "embed.weight", _TOP_MAP["embed.weight"]
    for i in range(cfg.n_layers):
        for ours, theirs in _LAYER_MAP.items():
            if "norm" in ours and not olmo2:
                continue
            yield f"blocks.{i}.{ours}", tuple(f"model.layers.{i}.{t}" for t in theirs)
    if olmo2:
        yield "norm.weight", _TOP_MAP["norm.weight"]
    if not cfg.tie_embeddings:
        yield "lm_head.weight", _TOP_MAP["lm_head.weight"]


def key_map(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Every lmforge parameter name of a model with config ``cfg`` -> its HF parameter names."""
    return dict(iter_key_map(cfg))


def _hf_shape(cfg: ModelConfig, hf_name: str) -> tuple[int, ...]:
    """The shape stock transformers gives the HF tensor ``hf_name`` of a model with config ``cfg``."""
    d, q, kv, ff, v = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.mlp_hidden, cfg.padded_vocab_size
    leaf = hf_name.split(".", 3)[-1] if hf_name.startswith("model.layers.") else hf_name
    shapes = {
        "model.embed_tokens.weight": (v, d),
        "lm_head.weight": (v, d),
        "model.norm.weight": (d,),
        "self_attn.q_proj.weight": (q, d),
        "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d),
        "self_attn.o_proj.weight": (d, q),
        "self_attn.q_norm.weight": (q,),
        "self_attn.k_norm.weight": (kv,),
        "mlp.gate_proj.weight": (ff, d),
        "mlp.up_proj.weight": (ff, d),
        "mlp.down_proj.weight": (d, ff),
        "post_attention_layernorm.weight": (d,),
        "post_feedforward_layernorm.weight": (d,),
    }
    return shapes[leaf]


_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def expected_shapes(cfg: ModelConfig, names: str = "hf") -> Iterator[tuple[str, tuple[int, ...]]]:
    """(tensor name, shape) of every weight a model with config ``cfg`` has, in file order, computed
    from the config alone (nothing is built). ``names``: "hf" (transformers' names, q/k/v apart) or
    "lmforge" (this package's state dict, q/k/v fused)."""
    for ours, theirs in iter_key_map(cfg):
        shapes = [_hf_shape(cfg, t) for t in theirs]
        if names == "hf":
            yield from zip(theirs, shapes)
        else:
            yield ours, (sum(sh[0] for sh in shapes), *shapes[0][1:])


def check_hf_header(
    cfg: ModelConfig,
    header: Mapping[str, tuple[tuple[int, ...], str]],
    source: str,
    config_name: str = "config.json",
    names: str = "hf",
) -> None:
    """Compare the tensors a model with config ``cfg`` needs with a safetensors header (tensor name
    -> (shape, dtype), read without the data) and raise a one-line ConfigError naming the first
    missing or mismatching tensor. ``names`` as in :func:`expected_shapes`.

    Called before anything is loaded or built, so a config that promises absurd shapes (a hidden
    size of ten million, a billion-row vocabulary, 100,000 layers) is refused at the first tensor
    that disagrees: the walk stops there, and nothing of the config's size is ever allocated.
    Tensors the header has beyond those (e.g. a tied ``lm_head.weight``) are left to the loader.
    """
    for name, want in expected_shapes(cfg, names):
        if name not in header:
            raise ConfigError(
                f"{source} has no tensor '{name}', which {config_name} implies ({cfg.arch}, {cfg.n_layers} layers); "
                "the config does not describe these weights"
            )
        shape, dtype = header[name]
        if tuple(shape) != want:
            raise ConfigError(
                f"{source}: tensor '{name}' has shape {tuple(shape)}, {config_name} implies {want}; "
                "the config does not describe these weights"
            )
        if dtype not in _FLOAT_DTYPES:
            raise ConfigError(f"{source}: tensor '{name}' has dtype {dtype}; model weights must be floating point ({', '.join(_FLOAT_DTYPES)})")


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


_MISSING = object()


def _get(d: Mapping[str, Any], key: str, kind: str, source: str, default: Any = _MISSING) -> Any:
    """``d[key]`` checked to be of ``kind`` ('int' (> 0), 'number', 'bool', 'str', 'mapping'), or
    ``default`` when the key is absent or null; a one-line ConfigError naming the file and the key."""
    value = d.get(key)
    if value is None:
        if default is _MISSING:
            raise ConfigError(f"{source} is missing the key {key!r}" + (" (it is null)" if key in d else ""))
        return default
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{source}: {key!r} must be a positive integer, got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key!r} must be a number, got {value!r}")
        value = float(value)
    elif kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key!r} must be true or false, got {value!r}")
    elif kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{source}: {key!r} must be a string, got {value!r}")
    elif kind == "mapping" and not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key!r} must be a JSON object or null, got {value!r}")
    return value


def from_hf_config(d: Any, *, vocab_size: int | None = None, source: str = "config.json") -> ModelConfig:
    """Read an HF Olmo/Olmo2 config.json dict into a ModelConfig.

    ``vocab_size`` is the tokenizer's vocabulary when known; HF stores only the padded embedding
    size, which lmforge then keeps as is (padding to a multiple that it already is). Every key is
    type-checked: a malformed file gives one ConfigError line naming ``source`` and the key.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: must hold a JSON object (the model's config), got {type(d).__name__}")
    model_type = d.get("model_type")
    if model_type not in ("olmo", "olmo2"):
        raise ConfigError(f"{source}: model_type {model_type!r} is not an OLMo model (expected 'olmo' or 'olmo2')")
    if model_type == "olmo" and _get(d, "attention_bias", "bool", source, False):
        raise ConfigError(f"{source}: attention_bias=true is not supported (the OLMo family has no biases)")
    rope = _get(d, "rope_parameters", "mapping", source, {})
    scaling = _get(d, "rope_scaling", "mapping", source, None)
    rope_type = _get(rope, "rope_type", "str", f"{source}: rope_parameters", "default")
    if rope_type != "default" or scaling:
        raise ConfigError(f"{source}: RoPE scaling {scaling or dict(rope)} is not supported")
    theta = _get(rope, "rope_theta", "number", f"{source}: rope_parameters", None)
    if theta is None:
        theta = _get(d, "rope_theta", "number", source, 10_000.0)
    hf_vocab = _get(d, "vocab_size", "int", source)
    n_heads = _get(d, "num_attention_heads", "int", source)
    fields: dict[str, Any] = dict(
        arch="olmo2" if model_type == "olmo2" else "olmo1",
        d_model=_get(d, "hidden_size", "int", source),
        n_layers=_get(d, "num_hidden_layers", "int", source),
        n_heads=n_heads,
        n_kv_heads=_get(d, "num_key_value_heads", "int", source, n_heads),
        mlp_hidden=_get(d, "intermediate_size", "int", source),
        max_seq_len=_get(d, "max_position_embeddings", "int", source, 2048),
        rope_theta=theta,
        tie_embeddings=_get(d, "tie_word_embeddings", "bool", source, False),
        init_std=_get(d, "initializer_range", "number", source, 0.02),
    )
    if fields["n_kv_heads"] == n_heads:
        fields["n_kv_heads"] = None
    if model_type == "olmo2":
        fields["norm_eps"] = _get(d, "rms_norm_eps", "number", source, 1e-6)
    else:
        fields["clip_qkv"] = _get(d, "clip_qkv", "number", source, None)
    # Keep HF's embedding size exactly; remember the tokenizer's vocabulary when it explains it.
    if vocab_size is not None and -(-vocab_size // 128) * 128 == hf_vocab:
        fields.update(vocab_size=vocab_size, vocab_multiple=128)
    else:
        fields.update(vocab_size=hf_vocab, vocab_multiple=128 if hf_vocab % 128 == 0 else 1)
    try:
        return ModelConfig.from_dict(fields)
    except ConfigError as e:  # e.g. hidden_size not divisible by num_attention_heads
        raise ConfigError(f"{source}: {e}") from None
