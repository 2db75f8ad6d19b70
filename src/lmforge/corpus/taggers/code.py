"""Code heuristics and basic size statistics."""

from __future__ import annotations

import re
from typing import Any

from lmforge.data.documents import DataError, Document
from lmforge.corpus.taggers.base import Spans, Tagger, doc_span, register

_NONBLANK_LINE_RE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)
_INDENTED_LINE_RE = re.compile(r"^[ \t]+\S", re.MULTILINE)
# a line that looks like code: ends in ; { } ) or starts with a declaration/import keyword
_CODE_LINE_RE = re.compile(
    r"^(?:[^\S\n]*(?:def|class|import|from[ \t]+\S+[ \t]+import|#include|#define|function|fn|func|package|using|public|private|static|const|let|var)\b[^\n]*"
    r"|[^\n]*[;{})][^\S\n]*)$",
    re.MULTILINE,
)
SYMBOLS = "{}[]()<>;=+-*/%&|^!~:#@$\\"


@register("code")
class Code(Tagger):
    """Heuristics for "does this look like source code" (in the spirit of the code filters of
    The Stack, Kocetkov et al. 2022, and Dolma's code taggers), document-level keys:
    ``code_line_fraction`` (non-blank lines ending in ``; { } )`` or starting with ``def``, ``class``,
    ``import``, ``from X import``, ``#include``, ``#define``, ``function``, ``fn``, ``func``,
    ``package``, ``using``, ``public``, ``private``, ``static``, ``const``, ``let``, ``var``),
    ``indented_line_fraction`` (non-blank lines starting with a space or tab), ``symbol_density``
    (characters among ``{}[]()<>;=+-*/%&|^!~:#@$\\`` over all characters)."""

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        n_lines = len(_NONBLANK_LINE_RE.findall(text))
        code = len(_CODE_LINE_RE.findall(text))
        indented = len(_INDENTED_LINE_RE.findall(text))
        symbols = sum(text.count(c) for c in SYMBOLS)
        values = {
            "code_line_fraction": code / n_lines if n_lines else 0.0,
            "indented_line_fraction": indented / n_lines if n_lines else 0.0,
            "symbol_density": symbols / len(text) if text else 0.0,
        }
        return {k: doc_span(text, v) for k, v in values.items()}


@register("stats")
class Stats(Tagger):
    """Sizes, document-level keys: ``characters``, ``words`` (whitespace-separated), ``lines``
    (``str.splitlines``), ``bytes`` (UTF-8) and, with option ``tokenizer_path`` (a Hugging Face
    ``tokenizer.json``, loaded lazily with ``tokenizers``), ``tokens`` (without special tokens)."""

    def __init__(self, tokenizer_path: str | None = None) -> None:
        self.tokenizer_path = tokenizer_path
        self._tok: Any = None

    def _tokenizer(self) -> Any:
        if self._tok is None:
            from tokenizers import Tokenizer

            try:
                self._tok = Tokenizer.from_file(str(self.tokenizer_path))
            except Exception as e:
                raise DataError(f"stats tagger: cannot load tokenizer {self.tokenizer_path}: {e}") from None
        return self._tok

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        values = {
            "characters": len(text),
            "words": len(text.split()),
            "lines": len(text.splitlines()),
            "bytes": len(text.encode("utf-8", "surrogatepass")),
        }
        if self.tokenizer_path:
            values["tokens"] = len(self._tokenizer().encode(text, add_special_tokens=False).ids)
        return {k: doc_span(text, v) for k, v in values.items()}
