"""Other trainers' checkpoints -> an lmforge training checkpoint (weights and AdamW state).

    lmforge import --from olmo-core RUN_OR_STEP_DIR --out CKPT     # OLMo-core's distributed checkpoint
    lmforge import --from olmo STEP_DIR --out CKPT                 # the original OLMo trainer (model.pt + optim.pt)
    lmforge train CONFIG --init-from CKPT --keep-optimizer         # and train on from it

A reader (:mod:`lmforge.checkpoint.olmo_core`, :mod:`lmforge.checkpoint.olmo_trainer`) turns a source
into a :class:`ForeignCheckpoint`: the lmforge model config, the source's tensors by name, its AdamW
state by name, and a *layout*, one entry per lmforge parameter naming the source rows it is made of::

    "blocks.0.attn.qkv.weight": [("blocks.0.attention.w_q.weight", None), ("...w_k.weight", None), ("...w_v.weight", None)]
    "blocks.0.mlp.up.weight":   [("transformer.blocks.0.ff_proj.weight", (0, 768))]      # first half of a fused tensor

The same rows are taken from the weights, ``exp_avg`` and ``exp_avg_sq`` (AdamW is elementwise, so
moments move with their weights); the step count of an lmforge parameter is that of its sources,
which must agree. Every source tensor must be used: an unknown one (another architecture) is an
error naming it, never silently dropped.

:func:`write_checkpoint` then builds the lmforge model and an AdamW with the source's
hyperparameters, checks every shape, and writes a complete training checkpoint (the format of
:mod:`lmforge.checkpoint.sharded`, ``extra.json`` recording the source) to ``out``, atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmforge.checkpoint.foreign import ForeignCheckpoint, assemble
from lmforge.checkpoint.olmo_core import read_olmo_core
from lmforge.checkpoint.olmo_trainer import read_olmo
from lmforge.checkpoint.unsharded import CheckpointError
from lmforge.storage import fsync_dir

__all__ = ["FORMATS", "import_checkpoint", "read_foreign", "write_checkpoint"]


def write_checkpoint(fc: ForeignCheckpoint, out: str | os.PathLike, *, tokenizer: Any | None = None) -> Path:
    """Write ``fc`` as a complete lmforge training checkpoint at ``out`` (which must not exist)."""
    from lmforge.checkpoint.sharded import save_checkpoint

    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out}: exists; pass a new --out directory")
    weights, state = assemble(fc)
    model = fc.config.build("cpu")
    expected = model.state_dict()
    for name, t in expected.items():
        if name not in weights:
            raise CheckpointError(f"{fc.source.get('path')}: nothing maps to lmforge's {name}")
        if tuple(weights[name].shape) != tuple(t.shape):
            raise CheckpointError(f"{fc.source.get('path')}: {name} has shape {tuple(weights[name].shape)}, the config gives {tuple(t.shape)}; "
                                  "the config does not describe these tensors")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    optimizer = fc.optim.build(model)
    if state is not None:
        by_param = dict(model.named_parameters())
        for name, entry in state.items():
            optimizer.state[by_param[name]] = entry
    extra = {"step": fc.step, "imported_from": {**fc.source, "step": fc.step, "notes": fc.notes, "optimizer_state": state is not None}}
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        written = save_checkpoint(scratch, fc.step, model=model, optimizer=optimizer, extra=extra,
                                  config={"optim": fc.optim.to_dict(), "imported_from": fc.source}, tokenizer=tokenizer)
        if out.exists():
            raise CheckpointError(f"{out}: appeared while importing (another command writes there?); nothing written")
        os.replace(written, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


FORMATS = ("olmo-core", "olmo")


def read_foreign(fmt: str, path: str | os.PathLike, *, config: str | os.PathLike | None = None) -> ForeignCheckpoint:
    if fmt == "olmo-core":
        return read_olmo_core(path, config=config)
    if fmt == "olmo":
        return read_olmo(path, config=config)
    raise CheckpointError(f"--from {fmt!r}: not a known format; use one of {', '.join(FORMATS)} (or hf with --model)")


def import_checkpoint(fmt: str, path: str | os.PathLike, out: str | os.PathLike, *, config: str | os.PathLike | None = None) -> tuple[Path, ForeignCheckpoint]:
    fc = read_foreign(fmt, path, config=config)
    return write_checkpoint(fc, out), fc


