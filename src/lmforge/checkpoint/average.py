"""Checkpoint averaging ("model soups", OLMo-2's final souped models): the weighted mean of several
checkpoints of one architecture, written as an lmforge checkpoint that exports like any other.

    out = average_checkpoints(["runs/a/checkpoints/step0001000", "runs/b/checkpoints/step0001000"], "soup")
    out = average_checkpoints(paths, "soup", weights=[2, 1, 1])   # normalised to sum to 1

Inputs are lmforge checkpoint directories (their ``model.safetensors``, unsharded whatever the world
size that trained them), run directories (their latest complete checkpoint) or any mix. Every input
must have the same model config; each tensor is averaged in float64, one tensor at a time (memory:
the output plus one tensor per input), and stored in the first input's dtype. Non-float tensors must
be equal in every input. The output holds ``model.safetensors``, ``config.yaml`` (the first input's,
``model:`` section checked equal), the first input's tokenizer files and ``averaged_from.json``
(inputs, their weights and sha256). It is written into a temporary directory beside ``out`` and
renamed into place (:func:`lmforge.storage.atomic_directory`); an existing ``out`` is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import yaml
from safetensors import SafetensorError, safe_open

from lmforge.checkpoint.listing import resolve_checkpoint
from lmforge.checkpoint.unsharded import CONFIG, META_KEY, WEIGHTS, CheckpointError, atomic_save_safetensors, read_model_config
from lmforge.config import atomic_write_text, sha256_file
from lmforge.storage import atomic_directory

__all__ = ["average_checkpoints"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
PROVENANCE = "averaged_from.json"


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise CheckpointError(f"--weights has {len(w)} value(s) for {n} checkpoint(s); give one weight per checkpoint")
    if any(not x >= 0 for x in w) or sum(w) <= 0:
        raise CheckpointError(f"--weights {w} must be non-negative with a positive sum")
    total = sum(w)
    return [x / total for x in w]


def _inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    if len(paths) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    out = []
    for p in paths:
        ckpt = resolve_checkpoint(Path(p))
        if not (ckpt / WEIGHTS).is_file() or not (ckpt / CONFIG).is_file():
            raise CheckpointError(f"{ckpt}: not an lmforge checkpoint ({CONFIG} + {WEIGHTS}); import HF directories first with `lmforge import`")
        out.append(ckpt)
    return out


def average_checkpoints(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, weights: Sequence[float] | None = None,
                        replace: bool = False) -> Path:
    """Write the weighted mean of ``paths`` to the new directory ``out`` (module doc); returns it.
    ``replace``: an existing ``out`` is replaced whole (the trainer's ``RUN/average``)."""
    ckpts = _inputs(paths)
    w = _weights(weights, len(ckpts))
    out = Path(out)
    if out.exists() and not replace:
        raise CheckpointError(f"{out} already exists; choose a new --out (an average is never written over another directory)")
    configs = [read_model_config(c) for c in ckpts]
    for c, cfg in zip(ckpts[1:], configs[1:]):
        if cfg.to_dict() != configs[0].to_dict():
            diff = sorted(k for k, v in cfg.to_dict().items() if configs[0].to_dict().get(k) != v)
            raise CheckpointError(f"{c}: model config differs from {ckpts[0]}'s ({', '.join(diff)}); only checkpoints of one architecture can be averaged")
    files = []
    try:
        files = [safe_open(str(c / WEIGHTS), framework="pt") for c in ckpts]
        names = list(files[0].keys())
        for c, f in zip(ckpts[1:], files[1:]):
            if sorted(f.keys()) != sorted(names):
                raise CheckpointError(f"{c / WEIGHTS}: its tensors differ from {ckpts[0] / WEIGHTS}'s")
        state: dict[str, torch.Tensor] = {}
        for name in names:
            first = files[0].get_tensor(name)
            if not first.is_floating_point():
                for c, f in zip(ckpts[1:], files[1:]):
                    if not torch.equal(f.get_tensor(name), first):
                        raise CheckpointError(f"{c / WEIGHTS}: non-float tensor '{name}' differs from {ckpts[0]}'s; cannot average it")
                state[name] = first
                continue
            acc = first.to(torch.float64) * w[0]
            for f, wi in zip(files[1:], w[1:]):
                t = f.get_tensor(name)
                if t.shape != first.shape:
                    raise CheckpointError(f"tensor '{name}' has shape {tuple(t.shape)} in one checkpoint and {tuple(first.shape)} in another")
                acc += t.to(torch.float64) * wi
            state[name] = acc.to(first.dtype)
        meta = files[0].metadata() or {}
    except SafetensorError as e:
        raise CheckpointError(f"cannot read a checkpoint's {WEIGHTS} ({str(e).splitlines()[0]}); the file is truncated or corrupt") from None
    finally:
        files.clear()
    if out.exists() and not replace:  # again: the reading took a while
        raise CheckpointError(f"{out} already exists; choose a new --out")
    with atomic_directory(out, replace=replace) as tmp:  # published whole, or not at all
        atomic_save_safetensors(state, tmp / WEIGHTS, {META_KEY: meta.get(META_KEY, json.dumps(configs[0].to_dict())), "format": "pt"})
        run_config = yaml.safe_load((ckpts[0] / CONFIG).read_text(encoding="utf-8")) or {}
        run_config["model"] = configs[0].to_dict()
        atomic_write_text(tmp / CONFIG, yaml.safe_dump(run_config, sort_keys=False))
        for name in TOKENIZER_FILES:
            if (ckpts[0] / name).is_file():
                atomic_write_text(tmp / name, (ckpts[0] / name).read_text(encoding="utf-8"))
        provenance = {"inputs": [{"path": str(c.resolve()), "weight": wi, "sha256": sha256_file(c / WEIGHTS)} for c, wi in zip(ckpts, w)],
                      "accumulated_in": "float64", "dtype": "as in the first input"}
        atomic_write_text(tmp / PROVENANCE, json.dumps(provenance, indent=1) + "\n")
    return out
