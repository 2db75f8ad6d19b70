"""64-bit keys of text for deduplication: documents (blake2b), and paragraphs, words, word n-grams
and shingles as polynomial hashes computed for many segments at once from prefix sums (``sum c_j
B^-j``, modulo 2^64), finished with the splitmix64 mixer and the length. Vectorised with numpy over
all the text of a chunk of documents (:func:`text_chunk`)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "CHUNK_CHARS", "U64", "PrefixHashes", "TextChunk", "char_prefix", "chunks_of", "codepoints", "hash_string", "hash_strings",
    "mix64", "paragraph_keys", "text_chunk", "text_keys", "word_ngram_keys", "word_spans", "word_windows",
]

U64 = np.uint64

def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise over a uint64 array (wrapping arithmetic)."""
    x = x.astype(U64, copy=True)
    x ^= x >> U64(30)
    x *= U64(0xBF58476D1CE4E5B9)
    x ^= x >> U64(27)
    x *= U64(0x94D049BB133111EB)
    x ^= x >> U64(31)
    return x


def hash_string(s: str | bytes) -> int:
    """64-bit key of a string (blake2b, 8 bytes)."""
    if isinstance(s, str):
        s = s.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(s, digest_size=8).digest(), "little")


def hash_strings(items: Iterable[str | bytes]) -> np.ndarray:
    return np.fromiter((hash_string(s) for s in items), dtype=U64)


_CHAR_BASE = 0x100000001B3 * 2 + 1  # odd bases: invertible modulo 2^64
_WORD_BASE = 0x9E3779B97F4A7C15 | 1
_POW_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _power_table(base: int, n: int) -> np.ndarray:
    """base^j mod 2^64 for j < n, as an outer product of two short cumulative products."""
    blk = 4096
    rows = -(-n // blk)
    small = np.full(blk, base, dtype=U64)
    small[0] = 1
    small = np.cumprod(small, dtype=U64)
    big = np.full(rows, pow(base, blk, 1 << 64), dtype=U64)
    big[0] = 1
    big = np.cumprod(big, dtype=U64)
    return (big[:, None] * small[None, :]).ravel()[:n]


def _powers(base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(base^j, base^-j) mod 2^64 for j < n (cached, grown on demand)."""
    have = _POW_CACHE.get(base)
    if have is not None and len(have[0]) >= n:
        return have
    size = max(n, CHUNK_CHARS + 1, 2 * len(have[0]) if have is not None else 0)  # usually computed once
    out = (_power_table(base, size), _power_table(pow(base, -1, 1 << 64), size))
    _POW_CACHE[base] = out
    return out


class PrefixHashes:
    """Hashes of many segments [s, e) of one uint64 sequence from a prefix sum (O(1) per segment)."""

    def __init__(self, values: np.ndarray, base: int, offset: int = 0):
        """Over ``values + offset`` (the offset added on the fly: no widened copy of ``values``)."""
        n = len(values)
        self.fw, bw = _powers(base, n + 1)
        self.S = np.zeros(n + 1, dtype=U64)
        terms = np.multiply(values, bw[:n], dtype=U64)
        if offset:
            terms += bw[:n] * U64(offset) if offset != 1 else bw[:n]
        np.cumsum(terms, out=self.S[1:])

    def segments(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Mixed 64-bit hashes of the segments (the length is mixed in; empty segments allowed)."""
        raw = (self.S[e] - self.S[s]) * self.fw[np.maximum(e - 1, 0)]
        return mix64(raw ^ mix64((e - s).astype(U64) + U64(0x632BE59BD9B4E019)))


_SPACE_TABLE_SIZE = 0x3002
_SPACE = np.zeros(_SPACE_TABLE_SIZE, dtype=bool)
for _c in range(_SPACE_TABLE_SIZE):
    _SPACE[_c] = chr(_c).isspace()


def codepoints(texts: Sequence[str]) -> np.ndarray:
    """The code points of the texts, concatenated (uint32). ASCII texts are copied as bytes (CPython
    holds them one byte per character; UTF-32-encoding them costs ~8x more)."""
    joined = "".join(texts)
    if joined.isascii():
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8).astype(np.uint32)
    parts = [np.frombuffer(t.encode("ascii"), dtype=np.uint8) if t.isascii() else
             np.frombuffer(t.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) for t in texts]
    return np.concatenate(parts).astype(np.uint32, copy=False) if parts else np.zeros(0, dtype=np.uint32)


@dataclasses.dataclass
class TextChunk:
    """Structure of a chunk of documents' text: paragraphs and words (absolute offsets)."""

    cp: np.ndarray  # code points of all texts concatenated
    dstart: np.ndarray  # int64 [D+1] document offsets
    pstart: np.ndarray  # paragraph starts (absolute)
    pend: np.ndarray  # paragraph ends incl. the newline (absolute)
    pdoc: np.ndarray  # document of each paragraph
    nonspace: np.ndarray  # bool per char


def text_chunk(texts: Sequence[str]) -> TextChunk:
    cp = codepoints(texts)
    total = len(cp)
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    dstart = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens, out=dstart[1:])
    nl = np.flatnonzero(cp == 10) + 1
    nl = nl[nl < total]
    is_start = np.zeros(total + 1, dtype=bool)
    is_start[dstart[:-1]] = True
    is_start[nl] = True
    pstart = np.flatnonzero(is_start[:total])
    pend = np.empty_like(pstart)
    pend[:-1] = pstart[1:]
    if len(pend):
        pend[-1] = total
    pdoc = np.searchsorted(dstart, pstart, side="right") - 1
    nonspace = ~_SPACE[cp if total and int(cp.max()) < _SPACE_TABLE_SIZE else np.minimum(cp, _SPACE_TABLE_SIZE - 1)]
    return TextChunk(cp, dstart, pstart, pend, pdoc, nonspace)


def char_prefix(ch: TextChunk) -> PrefixHashes:
    return PrefixHashes(ch.cp, _CHAR_BASE, offset=1)  # code point + 1: a NUL still counts


def word_spans(ch: TextChunk) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every maximal run of non-whitespace characters; runs never cross documents."""
    ns = ch.nonspace
    if not len(ns):
        z = np.zeros(0, dtype=np.int64)
        return z, z
    prev = np.empty_like(ns)
    prev[0] = False
    prev[1:] = ns[:-1]
    prev[ch.dstart[:-1]] = False
    nxt = np.empty_like(ns)
    nxt[-1] = False
    nxt[:-1] = ns[1:]
    nxt[ch.dstart[1:] - 1] = False
    return np.flatnonzero(ns & ~prev), np.flatnonzero(ns & ~nxt) + 1


def word_windows(group_of_word: np.ndarray, n_groups: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word windows of length n, stride 1, inside each group; a group with 0 < words < n gives one
    window of all its words. Returns (first word, length, group) per window."""
    cnt = np.bincount(group_of_word, minlength=n_groups)
    first = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(cnt[:-1], out=first[1:])
    nw = np.where(cnt >= n, cnt - n + 1, (cnt > 0).astype(np.int64))
    length = np.where(cnt >= n, n, cnt)
    total = int(nw.sum())
    grp = np.repeat(np.arange(n_groups, dtype=np.int64), nw)
    off = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(nw[:-1], out=off[1:])
    start = first[grp] + (np.arange(total, dtype=np.int64) - off[grp])
    return start, length[grp], grp


def word_ngram_keys(ch: TextChunk, group_of_char_start: np.ndarray, n_groups: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of word n-grams within groups whose starts (absolute char offsets, sorted) are given."""
    ws, we = word_spans(ch)
    wh = char_prefix(ch).segments(ws, we)
    wgroup = np.searchsorted(group_of_char_start, ws, side="right") - 1
    start, length, grp = word_windows(wgroup, n_groups, n)
    keys = PrefixHashes(wh, _WORD_BASE).segments(start, start + length)
    return keys, grp


def text_keys(texts: Sequence[str], mode: str, *, ngram: int = 13) -> np.ndarray:
    """The filter keys ``dedup`` uses for these texts (for ``build_filter``): one per document,
    per non-empty paragraph, or per word n-gram of each paragraph."""
    if mode == "documents":
        return hash_strings(texts)
    out = []
    for chunk in chunks_of(list(texts)):
        ch = text_chunk(chunk)
        if mode == "paragraphs":
            keys, _ = paragraph_keys(ch)
        elif mode == "ngrams":
            keys, _ = word_ngram_keys(ch, ch.pstart, len(ch.pstart), ngram)
        else:
            raise ValueError(f"text_keys: mode must be documents, paragraphs or ngrams, not {mode!r}")
        out.append(keys)
    return np.concatenate(out) if out else np.zeros(0, dtype=U64)


def paragraph_keys(ch: TextChunk) -> tuple[np.ndarray, np.ndarray]:
    """(keys, paragraph index) of the non-empty paragraphs (content without the newline)."""
    if not len(ch.pstart):
        return np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)
    newline = ch.cp[ch.pend - 1] == 10
    idx = np.flatnonzero(np.logical_or.reduceat(ch.nonspace, ch.pstart))  # not whitespace-only
    # The paragraphs tile the chunk, so each one's sum of terms is one reduceat (no prefix-sum array
    # to allocate and gather from); the same keys as ``char_prefix(ch).segments(start, end)``.
    n = len(ch.cp)
    fw, bw = _powers(_CHAR_BASE, n + 1)
    terms = ch.cp.astype(U64)
    terms += U64(1)  # code point + 1: a NUL still counts
    terms *= bw[:n]
    sums = np.add.reduceat(terms, ch.pstart)
    sums -= np.where(newline, terms[ch.pend - 1], U64(0))  # the content ends before the newline
    s, e = ch.pstart[idx], ch.pend[idx] - newline[idx]
    raw = sums[idx] * fw[np.maximum(e - 1, 0)]
    return mix64(raw ^ mix64((e - s).astype(U64) + U64(0x632BE59BD9B4E019))), idx


CHUNK_CHARS = 1 << 20  # ~1M characters: arrays of a few MB (big fresh arrays cost page faults)


def chunks_of(texts: list[str], limit: int = CHUNK_CHARS) -> Iterable[list[str]]:
    cur: list[str] = []
    size = 0
    for t in texts:
        if cur and size + len(t) > limit:
            yield cur
            cur, size = [], 0
        cur.append(t)
        size += len(t)
    if cur:
        yield cur
