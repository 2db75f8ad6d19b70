"""Unsharded model checkpoints: one safetensors file plus the config that rebuilds the model.

A checkpoint directory holds

    config.yaml          the resolved config (``model:`` section at least), written atomically
    model.safetensors    the weights; its metadata repeats the model config, so the file alone
                         rebuilds the model
    tokenizer.json, tokenizer_config.json   when a tokenizer is given

Nothing here unpickles: weights are safetensors, configs are YAML/JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from lmforge.config import ConfigError, atomic_write_text
from lmforge.storage import commit_file, temp_path_beside, umask
from lmforge.models.olmo import OLMo, ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
#: safetensors metadata key holding the model config (the file alone rebuilds the model)
META_KEY = "lmforge_model_config"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match its config (one line)."""


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = temp_path_beside(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~umask())  # safetensors re-creates the file 0600
        commit_file(tmp, path)  # fsync, rename, fsync the directory: durable before any marker vouches for it
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(
    out_dir: str | os.PathLike,
    model: OLMo,
    *,
    tokenizer: Any | None = None,
    config: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (and optionally its tokenizer and the full run config) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {META_KEY: json.dumps(model.config.to_dict()), "format": "pt"}
    atomic_save_safetensors(state, out / WEIGHTS, meta)
    full = dict(config or {})
    full["model"] = model.config.to_dict()
    atomic_write_text(out / CONFIG, yaml.safe_dump(full, sort_keys=False))
    if tokenizer is not None:
        tokenizer.to_hf_files(out)
    return out


def read_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
    path = Path(ckpt_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: no {CONFIG}; not an lmforge checkpoint directory")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"{path}: has no 'model' section")
    try:
        return ModelConfig.from_dict(data["model"], _prefix="model.")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file with a one-line error for missing or corrupt files."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors ({str(e).splitlines()[0]}); the file is truncated or corrupt") from None


def check_and_load(model: OLMo, state: dict[str, torch.Tensor], source: str) -> OLMo:
    """Load ``state`` into ``model`` after checking every name and shape, naming the first mismatch."""
    expected = model.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise CheckpointError(f"{source}: missing tensor '{k}'")
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: tensor '{k}' has shape {tuple(state[k].shape)}, the config expects {tuple(v.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor '{extra[0]}' (config and weights disagree)")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_model(ckpt_dir: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> OLMo:
    """Rebuild and load the model saved in an lmforge checkpoint directory."""
    ckpt = Path(ckpt_dir)
    cfg = read_model_config(ckpt)
    state = load_state(ckpt / WEIGHTS)
    model = check_and_load(OLMo(cfg, device="meta"), state, str(ckpt / WEIGHTS))
    model.rope.reset_parameters(device="cpu")  # RoPE's buffer is not saved; compute it for real
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def config_from_safetensors(path: str | os.PathLike) -> ModelConfig:
    """The model config stored in a safetensors file's metadata (files written by lmforge)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if META_KEY not in meta:
        raise CheckpointError(f"{path}: no lmforge model config in the file's metadata")
    return ModelConfig.from_dict(json.loads(meta[META_KEY]))
