"""Release: HF export, releasing a run as revisions of a model repository, model cards.

    lmforge.release.naming     revision_name, parse_revision: ``step{N}-tokens{M}`` names (imports nothing heavy)
    lmforge.release.revisions  release_run / release(ReleaseConfig): every checkpoint a revision branch, main + card
    lmforge.release.config     ReleaseConfig: the options of a release (lmforge release's flags)
    lmforge.release.git        the git plumbing of model repositories; list_revisions, export_revision
    lmforge.release.hub        push_to_hub, check_push_target
    lmforge.release.card       CardFacts -> the model card (templates/model_card.md.j2)
    lmforge.release.facts      card_facts: what the card says, read from the run and the repository
    lmforge.release.hf         export_hf (reading HF directories: lmforge.checkpoint.hf)

``load_pretrained`` and ``import_hf`` live in :mod:`lmforge.checkpoint` and are re-exported here.
Names are resolved on first use, so ``import lmforge.release.naming`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_hf": "lmforge.release.hf",
    "import_hf": "lmforge.checkpoint.hf",
    "load_pretrained": "lmforge.checkpoint.pretrained",
    "revision_name": "lmforge.release.naming",
    "parse_revision": "lmforge.release.naming",
    "format_tokens": "lmforge.release.naming",
    "ReleaseError": "lmforge.release.errors",
    "list_revisions": "lmforge.release.git",
    "export_revision": "lmforge.release.git",
    "push_to_hub": "lmforge.release.hub",
    "check_push_target": "lmforge.release.hub",
    "ReleaseConfig": "lmforge.release.config",
    "release": "lmforge.release.revisions",
    "release_run": "lmforge.release.revisions",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
