"""Named model sizes: the official OLMo / OLMo-2 shapes, and small sizes that train on a CPU.

Official shapes follow the released HF configs (see docs/models.md). Small sizes use an 8192-id
vocabulary (what ``lmforge tokenizer train`` makes by default for the quickstart); their parameter
counts are quoted with that vocabulary. Any field can be overridden: ``--model.vocab_size=100278``.
"""

from __future__ import annotations

import difflib
from typing import Any

from lmforge.config import ConfigError
from lmforge.models.olmo import ModelConfig

_OLMO1 = dict(arch="olmo1", vocab_size=50280, max_seq_len=2048)
_OLMO2 = dict(arch="olmo2", vocab_size=100278, max_seq_len=4096)

PRESETS: dict[str, dict[str, Any]] = {
    # --- official ------------------------------------------------------------------------------
    "olmo-1b": dict(_OLMO1, d_model=2048, n_layers=16, n_heads=16, mlp_hidden=8192, tie_embeddings=True),
    "olmo-7b": dict(_OLMO1, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=11008),
    "olmo2-1b": dict(_OLMO2, d_model=2048, n_layers=16, n_heads=16, mlp_hidden=8192),
    "olmo2-7b": dict(_OLMO2, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=11008),
    "olmo2-13b": dict(_OLMO2, d_model=5120, n_layers=40, n_heads=40, mlp_hidden=13824),
}

# Small sizes, each for both generations (olmo-20m is OLMo-1 style, olmo2-20m OLMo-2 style).
_SMALL = {
    "1m": dict(d_model=64, n_layers=6, n_heads=4, mlp_hidden=256, tie_embeddings=True, max_seq_len=256),
    "20m": dict(d_model=256, n_layers=12, n_heads=8, mlp_hidden=1280, max_seq_len=1024),
    "60m": dict(d_model=512, n_layers=12, n_heads=8, mlp_hidden=2048, max_seq_len=1024),
    "150m": dict(d_model=768, n_layers=16, n_heads=12, mlp_hidden=2560, max_seq_len=1024),
}
for _size, _shape in _SMALL.items():
    PRESETS[f"olmo-{_size}"] = dict(arch="olmo1", vocab_size=8192, **_shape)
    PRESETS[f"olmo2-{_size}"] = dict(arch="olmo2", vocab_size=8192, **_shape)

OFFICIAL = ("olmo-1b", "olmo-7b", "olmo2-1b", "olmo2-7b", "olmo2-13b")


def get_preset(name: str, overrides: dict[str, Any] | list[str] | None = None, *, prefix: str = "model.") -> ModelConfig:
    """The ModelConfig of a named preset, with optional overrides; unknown names get a suggestion."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown model preset '{name}'; {hint}available: {', '.join(PRESETS)}")
    cfg = ModelConfig.from_dict(dict(PRESETS[name]))
    return cfg.merged(overrides, prefix=prefix) if overrides else cfg
