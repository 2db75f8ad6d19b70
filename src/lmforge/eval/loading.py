"""What every ``lmforge eval`` command does first: load a model with its tokenizer.

The one loader of the evaluators (downstream, perplexity, across checkpoints); ``--dtype`` is read
with :func:`lmforge.config.parse_dtype`."""

from __future__ import annotations

import os
from typing import Any

import torch

from lmforge.config import ConfigError, parse_dtype

__all__ = ["load_for_eval", "resolve_tokenizer"]


def resolve_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer file, directory or OLMo name -> the loaded tokenizer; a loaded one or None passes through."""
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from lmforge.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer)


def load_for_eval(model_path: str | os.PathLike, *, tokenizer: Any = None, device: str | None = None, dtype: Any = None):
    """``(model, tokenizer, device)`` for an lmforge checkpoint, run directory or HF directory.
    ``tokenizer`` (a loaded tokenizer, or a file, directory or OLMo name) replaces the one saved with
    the model; a model without one needs it. ``device``: default ``cuda`` when available, else ``cpu``."""
    from lmforge.release import load_pretrained

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_pretrained(model_path, device=device, dtype=parse_dtype(dtype))
    if tokenizer is not None:
        tok = resolve_tokenizer(tokenizer)
    if tok is None:
        raise ConfigError(f"{model_path}: holds no tokenizer.json; pass --tokenizer PATH")
    return model, tok, device
