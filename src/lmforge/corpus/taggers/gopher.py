"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis
& Insights from Training Gopher", appendix A.1.1 and Table A1). Our own implementation.

Conventions used by both taggers (stated because the paper leaves them open):

* *words* are whitespace-separated tokens (``str.split()``); word characters exclude whitespace;
* *lines* are the non-blank lines of the text (blank lines neither count nor repeat);
* *paragraphs* are the non-blank pieces between blank lines.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from lmforge.data.documents import Document
from lmforge.corpus.taggers.base import Spans, Tagger, doc_span, register

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# r"the(?<=\bthe)\b" is r"\bthe\b" written to start with a literal, which the regex engine scans for fast
_STOP_RES = [re.compile(r"%s(?<=\b%s)\b" % (w, w)) for w in STOP_WORDS]  # searched in the lower-cased text
# words without an ASCII letter (candidates for "no letter at all"; a regex then looks for any letter)
_NO_ASCII_LETTER_WORD_RE = re.compile(r"(?<!\S)[^\sA-Za-z]+(?!\S)")
_LETTER_RE = re.compile(r"[^\W\d_]")
_NONBLANK_LINE_RE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)
_BULLET_LINE_RE = re.compile(r"^[^\S\n]*[-*\u2022\u2023\u2043\u25e6\u25cf\u25aa\u00b7]", re.MULTILINE)
_ELLIPSIS_LINE_RE = re.compile(r"(?:\.\.\.|\u2026)[^\S\n]*$", re.MULTILINE)
_PARAGRAPH_SPLIT_RE = re.compile(r"\n(?:[^\S\n]*\n)+")


def _count_stop_words(text: str) -> int:
    """How many of STOP_WORDS occur as whole words (``\\bword\\b``), case-insensitive."""
    lower = text.lower()
    return sum(1 for r in _STOP_RES if r.search(lower))


@register("gopher_quality")
class GopherQuality(Tagger):
    """Gopher's quality filter (Rae et al. 2021, A.1.1 "Quality filtering"), document-level keys:

    ``word_count``; ``mean_word_length``; ``symbol_to_word_ratio`` (occurrences of ``#``, ``...``
    and ``…`` per word, the two symbols taken together); ``bullet_line_fraction`` (lines whose first
    non-space character is a bullet ``- * • ‣ ⁃ ◦ ● ▪ ·``); ``ellipsis_line_fraction`` (lines ending
    in ``...`` or ``…``); ``alpha_word_fraction`` (words holding at least one letter);
    ``stop_word_count`` (how many *distinct* words of {the, be, to, of, and, that, have, with} occur,
    case-insensitive, whole words); ``passes``: 1 when all the paper's thresholds hold
    (50 <= words <= 100,000; 3 <= mean word length <= 10; symbol ratio <= 0.1; bullet lines <= 0.9;
    ellipsis lines <= 0.3; alpha words >= 0.8; at least 2 stop words), else 0.
    """

    def __init__(self, min_words: int = 50, max_words: int = 100_000, min_stop_words: int = 2) -> None:
        self.min_words, self.max_words, self.min_stop_words = min_words, max_words, min_stop_words

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        words = text.split()
        n_words = len(words)
        n_lines = len(_NONBLANK_LINE_RE.findall(text))
        mean_len = sum(map(len, words)) / n_words if n_words else 0.0
        symbols = text.count("#") + text.count("...") + text.count("\u2026")
        symbol_ratio = symbols / n_words if n_words else 0.0
        bullet = len(_BULLET_LINE_RE.findall(text)) / n_lines if n_lines else 0.0
        ellipsis = len(_ELLIPSIS_LINE_RE.findall(text)) / n_lines if n_lines else 0.0
        no_letter = sum(1 for w in _NO_ASCII_LETTER_WORD_RE.findall(text) if not _LETTER_RE.search(w))
        alpha = (n_words - no_letter) / n_words if n_words else 0.0
        stop = _count_stop_words(text)
        passes = (
            self.min_words <= n_words <= self.max_words
            and 3 <= mean_len <= 10
            and symbol_ratio <= 0.1
            and bullet <= 0.9
            and ellipsis <= 0.3
            and alpha >= 0.8
            and stop >= self.min_stop_words
        )
        values: dict[str, Any] = {
            "word_count": n_words,
            "mean_word_length": mean_len,
            "symbol_to_word_ratio": symbol_ratio,
            "bullet_line_fraction": bullet,
            "ellipsis_line_fraction": ellipsis,
            "alpha_word_fraction": alpha,
            "stop_word_count": stop,
            "passes": int(passes),
        }
        return {k: doc_span(text, v) for k, v in values.items()}


# Gopher Table A1 thresholds (a document passes when every value is <= its threshold)
REPETITION_THRESHOLDS: dict[str, float] = {
    "duplicate_line_fraction": 0.30,
    "duplicate_paragraph_fraction": 0.30,
    "duplicate_line_char_fraction": 0.20,
    "duplicate_paragraph_char_fraction": 0.20,
    "top_2gram_char_fraction": 0.20,
    "top_3gram_char_fraction": 0.18,
    "top_4gram_char_fraction": 0.16,
    **{f"duplicate_{n}gram_char_fraction": round(0.15 - 0.01 * (n - 5), 2) for n in range(5, 11)},
}

_M1, _M2, _P = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x100000001B3)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: decorrelates the word hashes before they are combined into n-gram hashes."""
    x = x + np.uint64(0x9E3779B97F4A7C15)  # uint64 arithmetic wraps
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _duplicate_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items equal to an earlier item, fraction of characters in such items)."""
    if not items:
        return 0.0, 0.0
    unique = set(items)
    total = sum(map(len, items))
    dup_chars = total - sum(map(len, unique))
    return (len(items) - len(unique)) / len(items), (dup_chars / total if total else 0.0)


def ngram_fractions(words: list[str]) -> dict[str, float]:
    """Top 2/3/4-gram and duplicate 5..10-gram character fractions of a word list.

    * ``top_{n}gram_char_fraction``: characters in all occurrences of the most frequent n-gram over
      all word characters (0 when no n-gram occurs twice; on ties the n-gram with most characters;
      overlapping occurrences each count, so the value is clipped to 1);
    * ``duplicate_{n}gram_char_fraction``: characters of the words covered by any occurrence of an
      n-gram that occurs at least twice (overlapping occurrences counted once) over all word characters.

    n-grams are compared through 64-bit hashes of the word sequence (vectorised with numpy)."""
    out = {f"top_{n}gram_char_fraction": 0.0 for n in (2, 3, 4)}
    out.update({f"duplicate_{n}gram_char_fraction": 0.0 for n in range(5, 11)})
    n_words = len(words)
    if n_words < 3:  # no n-gram (n >= 2) can occur twice (overlapping: "a a a" holds "a a" twice)
        return out
    # Python's string hash stands in for the word (equal words, equal hashes; 64-bit collisions are
    # negligible); only equality inside one document matters, so per-process hash salting is harmless
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=n_words).view(np.uint64)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n_words)
    csum = np.concatenate(([0], np.cumsum(lens)))
    total = float(csum[-1])
    r = _mix(ids)
    h = r
    for n in range(2, 11):
        if n > n_words:
            break
        h = h[:-1] * _P + r[n - 1 :]  # uint64 arithmetic wraps: a polynomial rolling hash
        _, inv, counts = np.unique(h, return_inverse=True, return_counts=True)
        if counts.max() < 2:
            break  # no repeated n-gram, so no repeated longer n-gram either
        count_at = counts[inv]
        chars = csum[n:] - csum[:-n]  # characters of the n-gram starting at each position
        if n <= 4:
            top = counts.max()
            out[f"top_{n}gram_char_fraction"] = min(1.0, float(top * chars[count_at == top].max()) / total)
        else:
            starts = np.flatnonzero(count_at >= 2)
            cover = np.bincount(starts, minlength=n_words + 1) - np.bincount(starts + n, minlength=n_words + 1)
            covered = np.cumsum(cover[:n_words]) > 0
            out[f"duplicate_{n}gram_char_fraction"] = float(lens[covered].sum()) / total
    return out


@register("gopher_repetition")
class GopherRepetition(Tagger):
    """Gopher's repetition removal (Rae et al. 2021, A.1.1 "Repetition removal", Table A1),
    document-level keys: ``duplicate_line_fraction`` / ``duplicate_paragraph_fraction`` (lines or
    paragraphs equal to an earlier one, over all), ``duplicate_line_char_fraction`` /
    ``duplicate_paragraph_char_fraction`` (their characters over all line/paragraph characters),
    ``top_{2,3,4}gram_char_fraction``, ``duplicate_{5..10}gram_char_fraction`` (see
    :func:`ngram_fractions`), and ``passes``: 1 when every value is within Table A1's threshold
    (0.30, 0.30, 0.20, 0.20; 0.20, 0.18, 0.16; 0.15, 0.14, 0.13, 0.12, 0.11, 0.10)."""

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        lines = [line for line in text.split("\n") if line.strip()]
        paragraphs = [p for p in _PARAGRAPH_SPLIT_RE.split(text) if p.strip()]
        values: dict[str, float] = {}
        values["duplicate_line_fraction"], values["duplicate_line_char_fraction"] = _duplicate_fractions(lines)
        values["duplicate_paragraph_fraction"], values["duplicate_paragraph_char_fraction"] = _duplicate_fractions(paragraphs)
        values.update(ngram_fractions(text.split()))
        passes = all(values[k] <= t for k, t in REPETITION_THRESHOLDS.items())
        out = {k: doc_span(text, v) for k, v in values.items()}
        out["passes"] = doc_span(text, int(passes))
        return out
