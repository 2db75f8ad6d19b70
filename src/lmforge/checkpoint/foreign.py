"""What an imported checkpoint is before lmforge writes it: :class:`ForeignCheckpoint`, and how
its *layout* (lmforge parameter -> the source rows it is made of) becomes lmforge's state dict and
AdamW state (:func:`assemble`). The readers (:mod:`lmforge.checkpoint.olmo_core`,
:mod:`lmforge.checkpoint.olmo_trainer`) build one; :mod:`lmforge.checkpoint.imports` writes it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from lmforge.checkpoint.unsharded import CheckpointError
from lmforge.models.olmo import ModelConfig
from lmforge.optim import OptimConfig

__all__ = ["ForeignCheckpoint", "Layout", "assemble", "read_json_file", "vocab_fields"]

Rows = tuple[int, int] | None
Layout = dict[str, list[tuple[str, Rows]]]
MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclasses.dataclass
class ForeignCheckpoint:
    config: ModelConfig
    optim: OptimConfig  # the source's AdamW hyperparameters, as far as lmforge's groups express them
    tensors: dict[str, torch.Tensor]  # source name -> weight
    state: dict[str, dict[str, torch.Tensor]] | None  # source name -> {"step", "exp_avg", "exp_avg_sq"}; None: no optimizer state
    layout: Layout  # lmforge name -> the source rows it is made of
    step: int
    source: dict[str, Any]  # what to record: format, path, version, notes
    notes: list[str] = dataclasses.field(default_factory=list)  # what lmforge could not carry over exactly


def _rows(t: torch.Tensor, rows: Rows) -> torch.Tensor:
    return t if rows is None else t[rows[0] : rows[1]]


def assemble(fc: ForeignCheckpoint) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]] | None]:
    """The lmforge state dict and AdamW state (lmforge names) that ``fc.layout`` describes."""
    used: set[str] = set()
    model: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, torch.Tensor]] | None = {} if fc.state is not None else None
    where = fc.source.get("path", "checkpoint")
    for ours, parts in fc.layout.items():
        missing = [name for name, _ in parts if name not in fc.tensors]
        if missing:
            raise CheckpointError(f"{where}: no tensor {missing[0]!r} (needed for lmforge's {ours}); the checkpoint does not match its config")
        used.update(name for name, _ in parts)
        model[ours] = torch.cat([_rows(fc.tensors[n], r) for n, r in parts]) if len(parts) > 1 else _rows(fc.tensors[parts[0][0]], parts[0][1])
        if state is None:
            continue
        srcs = [fc.state.get(n) for n, _ in parts]
        if any(s is None for s in srcs):
            raise CheckpointError(f"{where}: no optimizer state for {parts[srcs.index(None)][0]!r}; import without it is not a resumable checkpoint")
        steps = {float(s["step"]) for s in srcs}
        if len(steps) != 1:
            raise CheckpointError(f"{where}: the parts of lmforge's {ours} have different AdamW step counts {sorted(steps)}")
        entry = {"step": torch.tensor(steps.pop(), dtype=torch.float32)}
        for k in MOMENTS:
            entry[k] = torch.cat([_rows(s[k], r) for s, (_, r) in zip(srcs, parts)]).float()
        state[ours] = entry
    unused = sorted(set(fc.tensors) - used)
    if unused:
        raise CheckpointError(f"{where}: tensor {unused[0]!r} has no place in an lmforge {fc.config.arch} model "
                              f"({len(unused)} unused); lmforge imports the OLMo-1/OLMo-2 architectures only")
    return model, state


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read {what} ({type(e).__name__}: {str(e)[:120]})") from None


def vocab_fields(rows: int, tokenizer_vocab: int | None) -> dict[str, int]:
    """``vocab_size`` / ``vocab_multiple`` for lmforge giving an embedding of exactly ``rows``."""
    if tokenizer_vocab and 0 < tokenizer_vocab <= rows:
        for m in (128, 64, 32, 16, 8, 4, 2, 1):
            if ((tokenizer_vocab + m - 1) // m) * m == rows:
                return {"vocab_size": tokenizer_vocab, "vocab_multiple": m}
    return {"vocab_size": rows, "vocab_multiple": 1}
