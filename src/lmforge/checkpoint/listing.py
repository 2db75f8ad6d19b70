"""Finding a run's checkpoints: listing, what each one says about itself, resolving a run directory.

    for info in list_checkpoint_infos("runs/x"):      # complete checkpoints, oldest first
        info.step, info.tokens_seen, info.world_size, info.global_batch, info.seq_len, info.path
    ckpt = resolve_checkpoint("runs/x")               # a run directory -> its latest complete checkpoint
    records = read_metrics("runs/x")                  # what the run logged: runs/x/metrics.jsonl

A checkpoint is ``run_dir/checkpoints/step{step:07d}/`` (see :mod:`lmforge.checkpoint.sharded`); it is
complete once its ``COMPLETE`` marker exists. Its ``extra.json`` holds what the trainer saved with it:
``step``, ``tokens_seen``, ``world_size``, ``global_batch`` and ``seq_len`` (the last two since they
were added; older checkpoints have None there). Nothing here imports torch.distributed, so listing
checkpoints stays cheap.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from lmforge.checkpoint.unsharded import WEIGHTS, CheckpointError

__all__ = [
    "CHECKPOINTS",
    "COMPLETE",
    "EXTRA_JSON",
    "METRICS",
    "CheckpointInfo",
    "checkpoint_dir",
    "checkpoint_info",
    "incomplete_checkpoints",
    "is_run_dir",
    "latest_checkpoint",
    "list_checkpoint_infos",
    "list_checkpoints",
    "read_extra",
    "read_metrics",
    "resolve_checkpoint",
]

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
EXTRA_JSON = "extra.json"
METRICS = "metrics.jsonl"  # RUN/metrics.jsonl: one JSON record per logged step or evaluation
_NAME = re.compile(r"^step(\d{7,})$")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One complete checkpoint: its step, what ``extra.json`` says about it (None where it says
    nothing usable) and its directory."""

    step: int
    tokens_seen: int | None
    world_size: int | None
    path: Path
    global_batch: int | None = None  # sequences per optimizer step
    seq_len: int | None = None  # tokens per sequence


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under ``run_dir/checkpoints``, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint (temporaries and ones without ``COMPLETE`` are skipped)."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def incomplete_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """What lies under ``run_dir/checkpoints`` that is not a complete checkpoint, each as its name
    followed by why (a save that was interrupted or is still running, or its temporary)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    names = {p.name for _, p in list_checkpoints(run_dir)}
    out = []
    for p in sorted(root.iterdir()):
        if p.name in names:
            continue
        if _NAME.match(p.name) and p.is_dir():
            out.append(f"{p.name} (no {COMPLETE} marker: the save was interrupted or is still running)")
        elif p.name.startswith(".step") and ".tmp-" in p.name:
            out.append(f"{p.name} (a temporary left by an interrupted save)")
    return out


def read_extra(ckpt: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``extra.json`` as saved ({} when it has none; tensors stay references)."""
    path = Path(ckpt) / EXTRA_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    return data if isinstance(data, dict) else {}


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` ([] when there is none; a torn last line, from a
    killed run, and anything but a JSON object are ignored)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            records.append(r)
    return records


def _count(value: Any) -> int | None:
    """An integer count from JSON: ints, and floats that are finite (saved by older code); else None."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def checkpoint_info(step: int, path: str | os.PathLike) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of the checkpoint ``path`` at ``step``, from its ``extra.json``."""
    extra = read_extra(path)
    return CheckpointInfo(
        step=step,
        tokens_seen=_count(extra.get("tokens_seen")),
        world_size=_count(extra.get("world_size")),
        path=Path(path),
        global_batch=_count(extra.get("global_batch")),
        seq_len=_count(extra.get("seq_len")),
    )


def list_checkpoint_infos(run_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """Every complete checkpoint of ``run_dir`` with what it says about itself, oldest first."""
    return [checkpoint_info(step, path) for step, path in list_checkpoints(run_dir)]


def is_run_dir(path: str | os.PathLike) -> bool:
    """A training run directory (``checkpoints/`` inside, no model weights of its own)."""
    p = Path(path)
    return p.is_dir() and (p / CHECKPOINTS).is_dir() and not (p / WEIGHTS).is_file()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a run directory its latest complete checkpoint (a CheckpointError
    when it has none). Other paths (checkpoints, HF directories, missing ones) are returned as given."""
    p = Path(path)
    if not is_run_dir(p):
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise CheckpointError(f"{p}: a run directory without a complete checkpoint in {p / CHECKPOINTS}")
    return latest
