"""The tagger interface and registry.

A tagger looks at one document and returns attribute spans in Dolma's form::

    {"key": [[start, end, score], ...]}

``start``/``end`` are character offsets into ``doc.text`` (end exclusive). Document-level values
are one span over the whole text, ``[0, len(text), value]``, as Dolma writes them.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, TypeVar

from lmforge.data.documents import DataError, Document

Spans = list[list[Any]]
T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type["Tagger"]] = {}


class Tagger:
    """Base class. Subclasses set options in ``__init__`` (keyword arguments only) and implement
    :meth:`tag`. Instances are created once per shard in the worker process, so expensive state
    (models, tokenizers) belongs in ``__init__`` or is loaded lazily on first use."""

    name: str = ""

    def __init__(self, **options: Any) -> None:
        if options:
            raise DataError(f"tagger {self.name!r} takes no options (got {', '.join(sorted(options))})")

    def tag(self, doc: Document) -> dict[str, Spans]:  # pragma: no cover - interface
        raise NotImplementedError


def doc_span(text: str, value: float | int) -> Spans:
    """A document-level value as Dolma writes it: one span over the whole text."""
    return [[0, len(text), value]]


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a :class:`Tagger` subclass available as ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"tagger name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def list_taggers() -> list[str]:
    """Names of all registered taggers, sorted."""
    return sorted(_REGISTRY)


def tagger_class(name: str) -> type[Tagger]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown tagger {name!r}; {hint}known taggers: {', '.join(list_taggers())}") from None


def get_tagger(name: str, **options: Any) -> Tagger:
    """A new instance of the tagger registered as ``name``; an unknown name raises a one-line
    :class:`DataError` suggesting the closest known name."""
    cls = tagger_class(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise DataError(f"tagger {name!r}: bad options {sorted(options)}: {e}") from None
