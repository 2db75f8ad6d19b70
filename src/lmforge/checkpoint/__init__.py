"""Checkpoints: unsharded safetensors models (here) and sharded training state (pretraining issue)."""

from lmforge.checkpoint.unsharded import (
    CheckpointError,
    check_and_load,
    load_model,
    load_state,
    read_model_config,
    save_model,
)

__all__ = ["CheckpointError", "check_and_load", "load_model", "load_state", "read_model_config", "save_model"]

# Sharded training-state checkpoints (torch.distributed.checkpoint); imported lazily because
# torch.distributed.checkpoint adds about half a second to ``import lmforge.checkpoint``.
_SHARDED = (
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
)
__all__ += list(_SHARDED)


def __getattr__(name: str):
    if name in _SHARDED:
        from lmforge.checkpoint import sharded

        return getattr(sharded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
