"""Checkpoints: unsharded safetensors models, sharded training state, finding a run's checkpoints,
and loading a model from any path (lmforge checkpoint, run directory, HF directory).

    lmforge.checkpoint.unsharded   save_model / load_model: one safetensors file + config.yaml
    lmforge.checkpoint.sharded     save_checkpoint / load_checkpoint / prune_checkpoints (torch.distributed.checkpoint)
    lmforge.checkpoint.listing     list_checkpoints, list_checkpoint_infos (CheckpointInfo), resolve_checkpoint, read_metrics
    lmforge.checkpoint.hf          import_hf: reading HF transformers directories, hardened
    lmforge.checkpoint.pretrained  load_pretrained
    lmforge.checkpoint.average     average_checkpoints: weighted means of checkpoints (model soups)
"""

from lmforge.checkpoint.listing import (
    CheckpointInfo,
    latest_checkpoint,
    list_checkpoint_infos,
    list_checkpoints,
    read_metrics,
    resolve_checkpoint,
)
from lmforge.checkpoint.unsharded import (
    CheckpointError,
    check_and_load,
    load_model,
    load_state,
    read_model_config,
    save_model,
)

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "check_and_load",
    "latest_checkpoint",
    "list_checkpoint_infos",
    "list_checkpoints",
    "load_model",
    "load_state",
    "read_metrics",
    "read_model_config",
    "resolve_checkpoint",
    "save_model",
]

# Imported lazily: torch.distributed.checkpoint adds about half a second to ``import lmforge.checkpoint``.
_LAZY = {
    "load_checkpoint": "sharded",
    "prune_checkpoints": "sharded",
    "rng_state": "sharded",
    "save_checkpoint": "sharded",
    "set_rng_state": "sharded",
    "import_hf": "hf",
    "load_pretrained": "pretrained",
    "average_checkpoints": "average",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lmforge.checkpoint.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
