"""Export to HF transformers' native OLMo format (no remote code); reading such directories back
is :mod:`lmforge.checkpoint.hf` (re-exported here: ``import_hf``, ``read_header``, ...).

An exported directory is what stock ``transformers`` (``OlmoForCausalLM`` / ``Olmo2ForCausalLM``),
``transformers.pipeline("text-generation", model=DIR)``, vLLM and lm-evaluation-harness load:

    config.json                  architectures, shapes, rope, eos/pad (see lmforge.models.hf)
    generation_config.json       eos/pad/bos for generate()
    model.safetensors            or model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json   left padding, no token_type_ids, eos and pad set
    lmforge.yaml                 the resolved lmforge model config (so import is exact)

The directory is assembled under a temporary name and renamed into place, so a killed export
never leaves a half-written model where a loader would find it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from lmforge.checkpoint.hf import (  # noqa: F401 - re-exported: the reading side lives in lmforge.checkpoint.hf
    INDEX,
    import_hf,
    read_header,
    read_hf_state,
    read_lmforge_yaml,
    weight_files,
)
from lmforge.checkpoint.unsharded import CheckpointError, atomic_save_safetensors
from lmforge.config import atomic_write_text
from lmforge.models.hf import to_hf_config, to_hf_state_dict
from lmforge.models.olmo import OLMo
from lmforge.storage import atomic_directory

__all__ = ["INDEX", "export_hf", "import_hf", "read_header", "read_hf_state", "read_lmforge_yaml", "weight_files"]


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def _shard(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def export_hf(
    model: OLMo,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    overwrite: bool = False,
) -> Path:
    """Write ``model`` and ``tokenizer`` as an HF model directory at ``out_dir``."""
    from lmforge.tokenizer import check_fits

    out = Path(out_dir)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise CheckpointError(f"{out}: directory exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    cfg = model.config
    check_fits(tokenizer, cfg.padded_vocab_size)
    dtype = dtype or model.embed.weight.dtype
    with atomic_directory(out, replace=True) as tmp:
        hf_cfg = to_hf_config(
            cfg,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        hf_cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
        hf_cfg["dtype"] = hf_cfg["torch_dtype"]
        atomic_write_text(tmp / "config.json", json.dumps(hf_cfg, indent=2) + "\n")
        gen = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        if tokenizer.bos_token_id is not None:
            gen["bos_token_id"] = tokenizer.bos_token_id
        atomic_write_text(tmp / "generation_config.json", json.dumps(gen, indent=2) + "\n")
        atomic_write_text(tmp / "lmforge.yaml", yaml.safe_dump({"model": cfg.to_dict()}, sort_keys=False))

        state = {k: v.detach().to("cpu", dtype) for k, v in to_hf_state_dict(model.state_dict(), cfg).items()}
        shards = _shard(state, _parse_size(max_shard_size))
        meta = {"format": "pt"}
        if len(shards) == 1:
            atomic_save_safetensors(shards[0], tmp / "model.safetensors", meta)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                atomic_save_safetensors(shard, tmp / name, meta)
                weight_map.update({k: name for k in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            atomic_write_text(tmp / INDEX, json.dumps(index, indent=2) + "\n")
        tokenizer.to_hf_files(tmp)
    return out
