"""The extractor registry (``register_extractor``, ``get_extractor``) and what every extractor uses:
:class:`Piece`, :class:`SkipFile`, reading (``read_maybe_gz``, ``decode_text``) and ``tidy``."""

from __future__ import annotations

import dataclasses
import gzip
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["Extractor", "ExtractFn", "Piece", "SkipFile", "decode_text", "get_extractor", "list_extractors", "read_maybe_gz", "register_extractor", "tidy"]


@dataclasses.dataclass
class Piece:
    key: str | None
    text: str
    meta: dict[str, Any] | None = None


class SkipFile(Exception):
    """This file gives no text; the message is the reason (counted in the manifest)."""


ExtractFn = Callable[[Path, str, dict], Iterator[Piece]]


@dataclasses.dataclass
class Extractor:
    name: str
    fn: ExtractFn
    options: dict[str, Any]
    companions: tuple[str, ...]
    description: str

    def resolve_options(self, given: dict[str, Any] | None, where: str = "options") -> dict[str, Any]:
        """Declared defaults overridden by ``given``; an unknown option raises ValueError naming it."""
        out = dict(self.options)
        for key, value in (given or {}).items():
            if key not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise ValueError(f"{where}: extractor '{self.name}' has no option '{key}' (valid: {valid})")
            out[key] = value
        return out


_REGISTRY: dict[str, Extractor] = {}


def register_extractor(
    name: str, *, options: dict[str, Any] | None = None, companions: tuple[str, ...] = (), aliases: tuple[str, ...] = ()
) -> Callable[[ExtractFn], ExtractFn]:
    """Decorator: make ``fn(path, rel, opts) -> Iterator[Piece]`` available to recipes as ``name``."""

    def deco(fn: ExtractFn) -> ExtractFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        ex = Extractor(name, fn, dict(options or {}), tuple(companions), doc[0] if doc else "")
        for n in (name, *aliases):
            _REGISTRY[n] = ex
        return fn

    return deco


def get_extractor(name: str) -> Extractor:
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown extractor '{name}'{hint} (registered: {', '.join(sorted(_REGISTRY))})") from None


def list_extractors() -> dict[str, Extractor]:
    return dict(sorted(_REGISTRY.items()))


# --- reading and tidying text -----------------------------------------------------------------------
def read_maybe_gz(path: Path) -> bytes:
    """File bytes; ``.gz`` files (and dictzip ``.dz``) are decompressed."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise SkipFile(f"corrupt gzip ({type(e).__name__})") from None
    return data


def decode_text(data: bytes, *, fallback: str | None = "cp1252") -> str:
    """UTF-8 (BOM dropped), else ``fallback`` (None: raise SkipFile); newlines normalized, NULs removed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if fallback is None:
            raise SkipFile("not UTF-8") from None
        text = data.decode(fallback, errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "")


_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING = re.compile(r"[ \t]+\n")


def tidy(text: str) -> str:
    """Strip trailing spaces, collapse runs of blank lines to one, strip the ends."""
    return _BLANKS.sub("\n\n", _TRAILING.sub("\n", text)).strip()

