"""Loading a model from whatever path a user gives: an lmforge checkpoint, a run directory or an HF
model directory.

    model, tokenizer = load_pretrained("runs/x")              # the run's latest complete checkpoint
    model, tokenizer = load_pretrained("runs/x/checkpoints/step0000200")
    model, tokenizer = load_pretrained("release/")            # an HF export (``lmforge export``, a release)

(Also importable as ``lmforge.release.load_pretrained``.)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lmforge.checkpoint.hf import import_hf, read_header
from lmforge.checkpoint.listing import resolve_checkpoint
from lmforge.checkpoint.unsharded import CONFIG, WEIGHTS, CheckpointError, load_model, read_model_config
from lmforge.config import ConfigError
from lmforge.models.hf import check_hf_header

__all__ = ["load_pretrained"]


def load_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` from an lmforge checkpoint directory, a run directory (its latest
    complete checkpoint) or an HF model directory.

    The tokenizer is None when the directory holds none.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or model directory")
    p = resolve_checkpoint(p)  # a run directory: its latest complete checkpoint
    if p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file():
        _check_checkpoint_header(p)
        model = load_model(p, device=device, dtype=dtype)
        tokenizer = None
        if (p / "tokenizer.json").is_file():
            from lmforge.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_dir(p)
        return model, tokenizer
    if p.is_dir() and (p / "config.json").is_file():
        return import_hf(p, device=device, dtype=dtype)
    raise CheckpointError(
        f"{p}: not an lmforge checkpoint ({CONFIG} + {WEIGHTS}) or an HF model directory (config.json + safetensors)"
    )


def _check_checkpoint_header(ckpt: Path) -> None:
    """Refuse an lmforge checkpoint whose config.yaml disagrees with its weights' safetensors header
    before anything is loaded or built (a config claiming 100,000 layers over a tiny file would
    otherwise have the loader build 100,000 layers first)."""
    cfg = read_model_config(ckpt)
    try:
        check_hf_header(cfg, read_header([ckpt / WEIGHTS]), str(ckpt / WEIGHTS), config_name=CONFIG, names="lmforge")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
