"""What the command modules share."""

from __future__ import annotations

from lmforge.config import ConfigError, check_sections

__all__ = ["DTYPES", "no_overrides", "parse_dtype"]

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def parse_dtype(name: str | None):
    """``float32 | bfloat16 | float16`` (or fp32/bf16/fp16) -> the torch dtype; None -> None."""
    import torch

    if name is None:
        return None
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(sorted(set(DTYPES.values())))}, got {name!r}")
    return getattr(torch, DTYPES[name])


def no_overrides(overrides, command: str) -> None:
    check_sections(overrides, [], command)
