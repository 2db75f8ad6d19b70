"""C4's cleaning heuristics (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2). Our own implementation."""

from __future__ import annotations

import re

from lmforge.data.documents import Document
from lmforge.corpus.taggers.base import Spans, Tagger, doc_span, register

TERMINAL = '.!?"'
_NONBLANK_LINE_RE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)
# a non-blank line whose last non-space character is not terminal punctuation
_NO_TERMINAL_RE = re.compile(r'^[^\n]*[^\s.!?"][^\S\n]*$', re.MULTILINE)
_TERMINAL_LINE_RE = re.compile(r'^[^\n]*[.!?"][^\S\n]*$', re.MULTILINE)
_JS_LINE_RE = re.compile(r"^[^\n]*javascript[^\n]*$", re.MULTILINE | re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


@register("c4")
class C4(Tagger):
    """C4's rules (Raffel et al. 2020, 2.2 "Colossal Clean Crawled Corpus").

    Line-level keys (one span per line, end exclusive, without the newline, score 1.0):
    ``line_no_terminal_punct`` (non-blank lines not ending in ``. ! ? "``), ``short_line`` (non-blank
    lines with fewer than ``min_words_per_line`` words; C4 keeps only lines with enough words, the
    default 3 follows dolma's c4_v2), ``javascript_line`` (lines containing "javascript",
    any case).

    Document-level keys: ``no_terminal_punct_count`` / ``no_terminal_punct_fraction`` (over non-blank
    lines), ``short_line_count``, ``javascript_line_count``, ``lorem_ipsum`` (0/1), ``curly_brace``
    (0/1), ``sentence_count`` (sentence ends ``. ! ?`` in the lines C4 keeps: terminal punctuation,
    enough words, no "javascript"), and ``passes``: 1 when the page survives C4's page-level rules
    (no "lorem ipsum", no curly brace, at least ``min_sentences`` = 3 sentences kept), else 0.
    (C4's bad-words list is not applied: it is not shipped here.)
    """

    def __init__(self, min_words_per_line: int = 3, min_sentences: int = 3) -> None:
        self.min_words_per_line, self.min_sentences = min_words_per_line, min_sentences
        if min_words_per_line > 1:
            k = min_words_per_line - 2
            # possessive quantifiers (Python >= 3.11): no backtracking into a line that has too many words
            self._short_re = re.compile(r"^[^\S\n]*+\S++(?:[^\S\n]++\S++){0,%d}+[^\S\n]*+$" % k, re.MULTILINE)
        else:
            self._short_re = None

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        n_lines = len(_NONBLANK_LINE_RE.findall(text))
        no_term = [[*m.span(), 1.0] for m in _NO_TERMINAL_RE.finditer(text)]
        short = [[*m.span(), 1.0] for m in self._short_re.finditer(text)] if self._short_re else []
        lower = text.lower()
        js = [[*m.span(), 1.0] for m in _JS_LINE_RE.finditer(text)] if "javascript" in lower else []
        sentences = 0
        for m in _TERMINAL_LINE_RE.finditer(text):
            line = m.group()
            if len(line.split()) >= self.min_words_per_line and "javascript" not in line.lower():
                sentences += len(_SENTENCE_END_RE.findall(line))
        lorem = int("lorem ipsum" in lower)
        curly = int("{" in text or "}" in text)
        passes = not lorem and not curly and sentences >= self.min_sentences
        out: dict[str, Spans] = {
            "line_no_terminal_punct": no_term,
            "short_line": short,
            "javascript_line": js,
        }
        for key, value in (
            ("no_terminal_punct_count", len(no_term)),
            ("no_terminal_punct_fraction", len(no_term) / n_lines if n_lines else 0.0),
            ("short_line_count", len(short)),
            ("javascript_line_count", len(js)),
            ("lorem_ipsum", lorem),
            ("curly_brace", curly),
            ("sentence_count", sentences),
            ("passes", int(passes)),
        ):
            out[key] = doc_span(text, value)
        return out
