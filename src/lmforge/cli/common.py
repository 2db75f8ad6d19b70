"""What the command modules share."""

from __future__ import annotations

from lmforge.config import check_sections

__all__ = ["no_overrides"]


def no_overrides(overrides, command: str) -> None:
    check_sections(overrides, [], command)
