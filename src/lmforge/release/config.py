"""The options of a release (``lmforge release``'s flags): :class:`ReleaseConfig`.

    cfg = ReleaseConfig(run="runs/quickstart/train", repo="runs/quickstart/release", eval="runs/quickstart/eval")
    summary = lmforge.release.revisions.release(cfg)

Imports nothing but :mod:`lmforge.config`, so building the command line stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lmforge.config import Config, option

__all__ = ["ReleaseConfig"]


@dataclasses.dataclass
class ReleaseConfig(Config):
    """What ``lmforge release`` takes, one field per flag (``lmforge.cli.args`` builds the flags from them);
    :func:`lmforge.release.revisions.release` releases it."""

    run: str = option(positional=True, help="run directory written by `lmforge train`")
    repo: str = option(help="local model repository (a git repository; created if missing)")
    eval: str | None = option(None, help="directory written by `lmforge eval checkpoints` (tables and plots for the card)")
    manifest: str | None = option(None, help="data manifest.json (from `lmforge data fetch`) for the card")
    license: str = option("apache-2.0")
    dtype: str | None = option(None, help="float32 | bfloat16 | float16 (default: as trained)")
    token_unit: Literal["auto", "B", "M", "K"] = option("auto")
    tokenizer: str | None = option(None)
    name: str | None = option(None, help="model name for the card")
    push: str | None = option(None, metavar="REPO_ID", help="also upload every revision to the HF Hub (needs a token)")
    public: bool = option(False, help="with --push: create a public repository")
    force: bool = option(
        False,
        help="with --push: upload even into an existing Hub repository that is not an lmforge release of this repository (its files on main are replaced)",
    )
