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
