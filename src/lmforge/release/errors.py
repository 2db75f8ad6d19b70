"""The error of a release that cannot go ahead."""

from __future__ import annotations

from lmforge.config import ConfigError

__all__ = ["ReleaseError"]


class ReleaseError(ConfigError):
    """A release that cannot go ahead (one line: what is wrong and what to do)."""
