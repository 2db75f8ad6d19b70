"""Deduplication with Dolma-compatible attribute output: exact (documents, paragraphs, 13-gram
overlap) through a Bloom filter kept on disk, and near-duplicates through MinHash + LSH.

Every mode writes, for ``ROOT/documents/x.jsonl.gz``, the file ``ROOT/attributes/NAME/x.jsonl.gz``
with one row per valid document, in document order (``documents.write_attributes``)::

    documents   duplicate:  {"id": ..., "attributes": {"NAME": [[0, len(text), 1]]}}   else {}
    paragraphs  {"id": ..., "attributes": {"NAME": [[start, end, 1], ...]}}           ([] when none)
    ngrams      {"id": ..., "attributes": {"NAME": [[start, end, fraction], ...]}}    ([] when none)
    minhash     in a cluster: {"NAME": [[0, len, cluster_id]]} (+ "NAME_is_duplicate": [[0, len, 1]]
                for every member but the cluster's first document); else {}

(the attribute key is ``attribute_name``, which defaults to ``name``). This is what ``dolma dedupe``
1.2.1 writes, checked against it: non-duplicates get ``{}`` in document mode and an empty list in
paragraph mode; a paragraph is a ``"\\n"``-separated piece of ``text`` whose span includes its newline;
empty (whitespace-only) paragraphs are never marked; the n-gram score is the matched fraction. Two
deliberate differences: spans are *character* offsets that never pass ``len(text)`` (dolma adds one
past the end of a last paragraph in non-ASCII text, because it compares a character offset with the
byte length), and words for n-grams are whitespace-separated (dolma uses UAX-29 word boundaries).

Determinism. A Bloom filter that is tested and updated as documents stream by gives answers that
depend on the order of updates, so it cannot be shared by parallel workers (dolma's threaded dedup
flags a different number of documents from run to run). Here the work has three phases:

1. in parallel, one task per shard: read the documents, compute 64-bit keys (numpy, vectorised over
   all the text of a chunk of documents), find the keys repeated *within* the shard (a key is a
   duplicate in its shard when it occurred in an earlier group — document, or paragraph for
   paragraph/n-gram modes), and save the shard's distinct keys to a scratch directory;
2. in this process, shards in sorted order: test the shard's distinct keys against the filter and
   then add them (vectorised); a key already in the filter marks all its occurrences;
3. in parallel: combine the two answers and write the attribute files.

Outputs are therefore identical for any number of workers. The only difference from a strictly
sequential Bloom filter is that two *different* keys of the same shard cannot produce a false
positive for each other (fewer false positives, never fewer true duplicates).

Keys. Document keys (the text, ``id`` or a dotted path such as ``metadata.url``) are hashed with
``blake2b`` (8 bytes). Paragraph, word, n-gram and shingle keys are 64-bit polynomial hashes computed
for many segments at once from prefix sums (``sum c_j B^-j``, modulo 2^64) and finished with the
splitmix64 mixer and the length. Decontamination: ``build_filter`` (or ``dedup`` on the evaluation
documents) fills a filter; ``dedup(..., read_only=True)`` then marks corpus text that hits it and
never adds to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import contextlib
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from lmforge.config import atomic_write_bytes, atomic_write_text, temp_path_beside
from lmforge.data.parallel import WorkerPool
from lmforge.storage import commit_file, lock_output, remove_stale_temporaries
from lmforge.data.documents import (
    Accounting,
    DataError,
    Document,
    TruncatedFileError,
    attributes_path,
    list_shards,
    read_documents,
    write_attributes,
)


class _Workers:
    """One pool of spawned worker processes for both parallel phases (one start-up, not two), fed
    task by task so the main process can pipeline; ``workers <= 1`` runs each task at submission.
    Leaving the block with an exception (Ctrl-C included) cancels queued tasks and stops running ones."""

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __enter__(self) -> "_Workers":
        if self.workers > 1:
            self.pool = WorkerPool(self.workers)
        return self

    def __exit__(self, exc_type: Any = None, *exc: Any) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.stop()

    def submit(self, fn: Any, task: Any):
        """A future of ``fn(task)``; without a pool it runs now (exceptions surface at ``result()``)."""
        if self.pool is not None:
            return self.pool.submit(fn, task)
        from concurrent.futures import Future

        fut: Future = Future()
        try:
            fut.set_result(fn(task))
        except Exception as e:  # noqa: BLE001 - re-raised by result(); Ctrl-C propagates at once
            fut.set_exception(e)
        return fut


Mode = Literal["documents", "paragraphs", "ngrams", "minhash"]
MODES = ("documents", "paragraphs", "ngrams", "minhash")
SUMMARY_NAME = "_summary.json"
MIN_BYTES_PER_WORKER = 4 << 20  # input file bytes (compressed as stored) that justify one more process
DEFAULT_NAMES = {
    "documents": "bff_duplicate_document",
    "paragraphs": "bff_duplicate_paragraph_spans",
    "ngrams": "bff_duplicate_paragraph_spans_ngram",
    "minhash": "minhash_cluster",
}

U64 = np.uint64
_MASK64 = (1 << 64) - 1

# --- hashing ------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
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


class _Prefix:
    """Hashes of many segments [s, e) of one uint64 sequence from a prefix sum (O(1) per segment)."""

    def __init__(self, values: np.ndarray, base: int):
        n = len(values)
        self.fw, bw = _powers(base, n + 1)
        self.S = np.zeros(n + 1, dtype=U64)
        np.cumsum(values * bw[:n], out=self.S[1:])

    def segments(self, s: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Mixed 64-bit hashes of the segments (the length is mixed in; empty segments allowed)."""
        raw = (self.S[e] - self.S[s]) * self.fw[np.maximum(e - 1, 0)]
        return _mix64(raw ^ _mix64((e - s).astype(U64) + U64(0x632BE59BD9B4E019)))


_SPACE_TABLE_SIZE = 0x3002
_SPACE = np.zeros(_SPACE_TABLE_SIZE, dtype=bool)
for _c in range(_SPACE_TABLE_SIZE):
    _SPACE[_c] = chr(_c).isspace()


def _codepoints(texts: Sequence[str]) -> np.ndarray:
    return np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclasses.dataclass
class _Chunk:
    """Structure of a chunk of documents' text: paragraphs and words (absolute offsets)."""

    cp: np.ndarray  # code points of all texts concatenated
    dstart: np.ndarray  # int64 [D+1] document offsets
    pstart: np.ndarray  # paragraph starts (absolute)
    pend: np.ndarray  # paragraph ends incl. the newline (absolute)
    pdoc: np.ndarray  # document of each paragraph
    nonspace: np.ndarray  # bool per char


def _chunk(texts: Sequence[str]) -> _Chunk:
    cp = _codepoints(texts)
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
    nonspace = ~_SPACE[np.minimum(cp, _SPACE_TABLE_SIZE - 1)]
    return _Chunk(cp, dstart, pstart, pend, pdoc, nonspace)


def _char_prefix(ch: _Chunk) -> _Prefix:
    return _Prefix(ch.cp.astype(U64) + U64(1), _CHAR_BASE)


def _words(ch: _Chunk) -> tuple[np.ndarray, np.ndarray]:
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


def _windows(group_of_word: np.ndarray, n_groups: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _word_ngram_keys(ch: _Chunk, group_of_char_start: np.ndarray, n_groups: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of word n-grams within groups whose starts (absolute char offsets, sorted) are given."""
    ws, we = _words(ch)
    wh = _char_prefix(ch).segments(ws, we)
    wgroup = np.searchsorted(group_of_char_start, ws, side="right") - 1
    start, length, grp = _windows(wgroup, n_groups, n)
    keys = _Prefix(wh, _WORD_BASE).segments(start, start + length)
    return keys, grp


def text_keys(texts: Sequence[str], mode: str, *, ngram: int = 13) -> np.ndarray:
    """The filter keys ``dedup`` uses for these texts (for ``build_filter``): one per document,
    per non-empty paragraph, or per word n-gram of each paragraph."""
    if mode == "documents":
        return hash_strings(texts)
    out = []
    for chunk in _chunks_of(list(texts)):
        ch = _chunk(chunk)
        if mode == "paragraphs":
            keys, _ = _paragraph_keys(ch)
        elif mode == "ngrams":
            keys, _ = _word_ngram_keys(ch, ch.pstart, len(ch.pstart), ngram)
        else:
            raise ValueError(f"text_keys: mode must be documents, paragraphs or ngrams, not {mode!r}")
        out.append(keys)
    return np.concatenate(out) if out else np.zeros(0, dtype=U64)


def _paragraph_keys(ch: _Chunk) -> tuple[np.ndarray, np.ndarray]:
    """(keys, paragraph index) of the non-empty paragraphs (content without the newline)."""
    if not len(ch.pstart):
        return np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)
    ce = ch.pend - (ch.cp[ch.pend - 1] == 10)
    idx = np.flatnonzero(np.logical_or.reduceat(ch.nonspace, ch.pstart))  # not whitespace-only
    return _char_prefix(ch).segments(ch.pstart[idx], ce[idx]), idx


CHUNK_CHARS = 1 << 20  # ~1M characters: arrays of a few MB (big fresh arrays cost page faults)


def _chunks_of(texts: list[str], limit: int = CHUNK_CHARS) -> Iterable[list[str]]:
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


# --- Bloom filter -------------------------------------------------------------------------------------
_MAGIC = b"LMFBLOOM"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQI")  # magic, version, k, bits, items added, crc32 of the bit array
_BATCH = 1 << 15
BLOCK_BITS = 512
MAX_K = 12


def _block_slack(fp_rate: float) -> float:
    """A blocked filter needs more bits than a classic one for the same false-positive rate (blocks
    fill unevenly), the more so the lower the rate: bits = slack * -n ln p / ln^2 2. Measured on random
    keys: 1e-2 -> 0.4-0.9%, 1e-4 -> ~0.4e-4, 1e-6 -> ~1e-6."""
    return 1 + 0.065 * math.log10(1 / fp_rate)


def _as_hashes(keys: Any) -> np.ndarray:
    if isinstance(keys, np.ndarray):
        if keys.dtype != U64:
            raise TypeError(f"hashed keys must be a uint64 array, not {keys.dtype}")
        return keys
    return hash_strings(keys)


class BloomFilter:
    """A blocked Bloom filter over 64-bit keys (strings are hashed with blake2b first), numpy bits.

    Size from ``expected_items`` and ``fp_rate``: ``k = min(-log2 p, MAX_K)`` hash functions and
    ``m = slack * n * -k / ln(1 - p^(1/k))`` bits (the classic optimum when k is not capped; the slack,
    1.13 at 1e-2 to 1.39 at 1e-6, pays for blocking; measured rates are at or under target), or from
    ``size_bytes`` (k from ``expected_items`` then, else 12). All k bits of a key lie in one 512-bit
    block, so a lookup costs one cache miss.
    Batch operations (``add_many``, ``contains_many``) are vectorised over uint64 arrays; the
    one-key methods wrap them. ``read_only`` filters answer queries and refuse to add.
    ``estimated_fp_rate`` is the rate for a new random key given the bits set now.
    """

    def __init__(
        self,
        expected_items: int | None = None,
        fp_rate: float = 1e-6,
        *,
        size_bytes: int | None = None,
        num_hashes: int | None = None,
        read_only: bool = False,
    ):
        if size_bytes is None:
            if not expected_items or expected_items <= 0:
                raise ValueError("BloomFilter needs expected_items > 0 or size_bytes")
            if not 0 < fp_rate < 1:
                raise ValueError(f"fp_rate must be in (0, 1), not {fp_rate}")
            # k hash functions: the optimum (-log2 p) up to MAX_K; fewer than optimal costs a few
            # more bits (k=12 at 1e-6: +10%) but each lookup and insert does k/20 of the work
            k_opt = max(1, round(-math.log2(fp_rate)))
            k = min(k_opt, MAX_K) if num_hashes is None else num_hashes
            per_item = -k / math.log(1 - fp_rate ** (1 / k))
            bits = math.ceil(_block_slack(fp_rate) * expected_items * per_item)
            num_hashes = k
        else:
            bits = int(size_bytes) * 8
        bits = max(BLOCK_BITS, bits // BLOCK_BITS * BLOCK_BITS if size_bytes else -(-bits // BLOCK_BITS) * BLOCK_BITS)
        if num_hashes is None:
            n = expected_items if expected_items else max(1, bits // 20)
            num_hashes = max(1, min(MAX_K, round(bits / n * math.log(2))))
        self.k = int(num_hashes)
        self.bits = bits
        self.bitmap = np.zeros(bits // 8, dtype=np.uint8)  # bit p is bit p % 8 of byte p // 8
        self.items = 0  # keys added that were not already present
        self.read_only = read_only
        i = np.arange(self.k)
        self._nwords = -(-self.k // 7)
        self._wi = i // 7
        self._shift = (9 * (i % 7)).astype(U64)

    # positions -----------------------------------------------------------------------------------
    def _positions(self, h: np.ndarray) -> np.ndarray:
        """Bit positions [len(h), k]: all k bits of a key in one 512-bit block (one cache line, so
        one memory miss per key); the block from the high bits of ``h``, the bits inside it by double
        independent 9-bit fields of splitmix64 outputs chained from ``h`` (7 per 64-bit word).
        (Double hashing inside a power-of-two block collapses to a few bits for even steps, and
        low-bit double hashing makes keys share all bits too often: both gave 100x the target rate.)"""
        nblocks = self.bits // BLOCK_BITS
        g = _mix64(h ^ U64(0xD6E8FEB86659FD93))  # keys need not be uniform (e.g. small integers)
        if nblocks <= 1 << 32:  # multiply-high range reduction (no division)
            block = ((g >> U64(32)) * U64(nblocks)) >> U64(32)
        else:
            block = g % U64(nblocks)
        words = [_mix64(g)]
        for _ in range(1, self._nwords):
            words.append(_mix64(words[-1]))
        w = np.stack(words, axis=1) if len(words) > 1 else words[0][:, None]
        pos = w[:, self._wi] >> self._shift[None, :]
        pos &= U64(BLOCK_BITS - 1)
        pos += (block * U64(BLOCK_BITS))[:, None]
        return pos

    def _test(self, pos: np.ndarray) -> np.ndarray:
        byte = self.bitmap[pos >> U64(3)]
        byte >>= (pos & U64(7)).astype(np.uint8)
        byte &= np.uint8(1)
        return byte.all(axis=1)

    def _set(self, pos: np.ndarray) -> None:
        mask = np.left_shift(np.uint8(1), (pos & U64(7)).astype(np.uint8))
        np.bitwise_or.at(self.bitmap, (pos >> U64(3)).ravel(), mask.ravel())

    # queries -------------------------------------------------------------------------------------
    def contains_many(self, keys: Any) -> np.ndarray:
        """Bool array: which keys (strings or a uint64 array of hashes) may be in the filter."""
        h = _as_hashes(keys)
        out = np.empty(len(h), dtype=bool)
        for i in range(0, len(h), _BATCH):
            out[i : i + _BATCH] = self._test(self._positions(h[i : i + _BATCH]))
        return out

    def add_many(self, keys: Any, *, distinct: bool = False) -> np.ndarray:
        """Add keys; returns which were already present (an earlier equal key of the same batch
        counts as present, so ``add_many`` equals adding one by one up to false positives).
        ``distinct=True`` promises the keys are distinct (skips that check)."""
        if self.read_only:
            raise ValueError("this Bloom filter is read-only (decontamination): it can be queried, not added to")
        h = _as_hashes(keys)
        out = np.empty(len(h), dtype=bool)
        for i in range(0, len(h), _BATCH):
            pos = self._positions(h[i : i + _BATCH])
            out[i : i + _BATCH] = self._test(pos)
            self._set(pos)
        if not distinct and len(h) > 1:
            _, first = np.unique(h, return_index=True)
            repeat = np.ones(len(h), dtype=bool)
            repeat[first] = False
            out |= repeat
        self.items += int((~out).sum())
        return out

    def add(self, key: str | bytes | int) -> bool:
        """Add one key; True when it was (probably) present already."""
        return bool(self.add_many(self._one(key))[0])

    def contains(self, key: str | bytes | int) -> bool:
        return bool(self.contains_many(self._one(key))[0])

    __contains__ = contains

    @staticmethod
    def _one(key: str | bytes | int) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.array([int(key) & _MASK64], dtype=U64)
        return np.array([hash_string(key)], dtype=U64)

    # statistics ----------------------------------------------------------------------------------
    @property
    def fill_ratio(self) -> float:
        return int(np.bitwise_count(self.bitmap).sum(dtype=np.int64)) / self.bits

    @property
    def estimated_fp_rate(self) -> float:
        """False-positive rate now for a new random key: the mean over blocks of ``fill_b ** k``."""
        per_block = np.bitwise_count(self.bitmap).reshape(-1, BLOCK_BITS // 8).sum(axis=1, dtype=np.int64)
        return float(np.mean((per_block / BLOCK_BITS) ** self.k))

    def expected_fp_rate(self, n: int | None = None) -> float:
        """Classic (unblocked) theoretical rate after ``n`` distinct items (default: the items added);
        the blocked layout runs a little higher, which the sizing slack pays for."""
        n = self.items if n is None else n
        return (1 - math.exp(-self.k * n / self.bits)) ** self.k

    def __repr__(self) -> str:
        return f"BloomFilter({self.bits // 8:,} bytes, k={self.k}, items={self.items:,}{', read-only' if self.read_only else ''})"

    # files ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file + rename): header (magic, version, k, bits, items,
        crc32) then the bit array."""
        data = self.bitmap.tobytes()
        header = _HEADER.pack(_MAGIC, _VERSION, self.k, self.bits, self.items, zlib.crc32(data))
        return atomic_write_bytes(path, header, data)

    @classmethod
    def load(cls, path: str | os.PathLike, *, read_only: bool = False) -> "BloomFilter":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size or head[:8] != _MAGIC:
                    raise DataError(f"{path}: not an lmforge Bloom filter file (bad magic)")
                magic, version, k, bits, items, crc = _HEADER.unpack(head)
                if version != _VERSION:
                    raise DataError(f"{path}: Bloom filter format version {version}, this lmforge reads version {_VERSION}")
                if bits <= 0 or bits % BLOCK_BITS or not 0 < k <= 64:
                    raise DataError(f"{path}: Bloom filter header is corrupt (bits={bits}, k={k})")
                data = f.read(bits // 8 + 1)
        except FileNotFoundError:
            raise DataError(f"{path}: Bloom filter file not found") from None
        if len(data) != bits // 8:
            raise DataError(f"{path}: Bloom filter file is truncated or has trailing data ({len(data):,} bytes of bits, header says {bits // 8:,})")
        if zlib.crc32(data) != crc:
            raise DataError(f"{path}: Bloom filter bits do not match their checksum (corrupt file)")
        bf = cls(size_bytes=bits // 8, num_hashes=k, read_only=read_only)
        bf.bitmap = np.frombuffer(data, dtype=np.uint8).copy()
        bf.items = items
        return bf


def build_filter(
    texts: Iterable[str],
    bloom_path: str | os.PathLike | None = None,
    *,
    mode: Literal["documents", "paragraphs", "ngrams"] = "ngrams",
    ngram: int = 13,
    expected_items: int | None = None,
    fp_rate: float = 1e-6,
) -> BloomFilter:
    """A filter of the keys of ``texts`` (e.g. evaluation sets, for decontamination with
    ``dedup(..., bloom_path=..., read_only=True)`` in the same ``mode``); saved when a path is given."""
    keys = text_keys(list(texts), mode, ngram=ngram)
    bf = BloomFilter(expected_items or max(len(keys), 1000), fp_rate)
    bf.add_many(keys)
    if bloom_path is not None:
        bf.save(bloom_path)
    return bf


# --- phase 1: keys per shard -------------------------------------------------------------------------
def _doc_key(doc: Document, key: str | None) -> str | None:
    if key is None or key in ("text", "$.text"):
        return doc.text
    path = key[2:] if key.startswith("$.") else key
    parts = path.split(".")
    value: Any = doc.to_json()
    for p in parts:
        if not isinstance(value, dict) or p not in value:
            return None
        value = value[p]
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _local_duplicates(keys: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For key occurrences (groups nondecreasing): (distinct keys, index of each occurrence's key,
    whether the key occurred in an earlier group of this shard)."""
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    new = np.empty(len(sk), dtype=bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    uid = np.cumsum(new) - 1
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = uid
    first_group = groups[order][new]
    return sk[new], inverse, groups > first_group[inverse]


def _minhash_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * U64(2) + U64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * U64(2)
    return a, b


_MH_ROWS = 1 << 13


def minhash_signatures(shingle_keys: np.ndarray, groups: np.ndarray, n_groups: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint32 MinHash signatures [n_groups, num_perm]: ``min over shingles of (a x + b mod 2^64) >> 32``
    (multiply-shift hashing, vectorised). ``groups`` must be nondecreasing."""
    sig = np.full((len(a), n_groups), np.iinfo(np.uint32).max, dtype=U64)  # [perm, doc]
    buf = np.empty((len(a), _MH_ROWS), dtype=U64)
    for i in range(0, len(shingle_keys), _MH_ROWS):
        x = shingle_keys[i : i + _MH_ROWS]
        g = groups[i : i + _MH_ROWS]
        h = buf[:, : len(x)]
        np.multiply(a[:, None], x[None, :], out=h)
        h += b[:, None]
        h >>= U64(32)
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        part = np.minimum.reduceat(h, starts, axis=1)  # along the contiguous axis: fast
        gi = g[starts]
        np.minimum(sig[:, gi], part, out=part)
        sig[:, gi] = part
    return np.ascontiguousarray(sig.T.astype(np.uint32))


def _phase1(task: dict[str, Any]) -> dict[str, Any]:
    shard, work, mode = Path(task["shard"]), Path(task["work"]), task["mode"]
    acct = Accounting()
    docs: list[Document] = []
    try:
        for d in read_documents(shard, acct):
            docs.append(d)
    except TruncatedFileError as e:
        acct.errors.append(str(e))
    acct.keep(len(docs))
    ids = [d.id for d in docs]
    lengths = np.fromiter((len(d.text) for d in docs), dtype=np.int64, count=len(docs))
    out: dict[str, np.ndarray] = {"lengths": lengths}
    info: dict[str, Any] = {}
    if mode == "documents":
        keys_s = [_doc_key(d, task["key"]) for d in docs]
        has = np.fromiter((k is not None for k in keys_s), dtype=bool, count=len(docs))
        keys = hash_strings(k for k in keys_s if k is not None)
        groups = np.flatnonzero(has).astype(np.int64)
        info["missing_key"] = int((~has).sum())
    else:
        key_parts, grp_parts, par = [], [], {"pdoc": [], "pstart": [], "pend": []}
        d0 = g0 = 0
        texts = [d.text for d in docs]
        for chunk in _chunks_of(texts):
            ch = _chunk(chunk)
            if mode == "paragraphs":
                k, gi = _paragraph_keys(ch)
                ng = len(ch.pstart)
            elif mode == "ngrams":
                k, gi = _word_ngram_keys(ch, ch.pstart, len(ch.pstart), task["ngram"])
                ng = len(ch.pstart)
            else:  # minhash: shingles per document
                k, gi = _word_ngram_keys(ch, ch.dstart[:-1], len(chunk), task["ngram"])
                ng = len(chunk)
            key_parts.append(k)
            grp_parts.append(gi + g0)
            if mode != "minhash":
                par["pdoc"].append(ch.pdoc + d0)
                par["pstart"].append(ch.pstart - ch.dstart[ch.pdoc])
                par["pend"].append(ch.pend - ch.dstart[ch.pdoc])
            d0 += len(chunk)
            g0 += ng
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt)  # noqa: E731
        keys, groups = cat(key_parts, U64), cat(grp_parts, np.int64)
        if mode != "minhash":
            for kname, v in par.items():
                out[kname] = cat(v, np.int64)
    if mode == "minhash":
        a, b = _minhash_params(task["bands"] * task["rows"], task["seed"])
        sig = minhash_signatures(keys, groups, len(docs), a, b)
        out["sig"] = sig
        # band keys: hash of each band's rows (one column per band)
        R = task["rows"]
        bk = np.empty((len(docs), task["bands"]), dtype=U64)
        for j in range(task["bands"]):
            acc = np.full(len(docs), ((j + 1) * 0x9E3779B97F4A7C15) & _MASK64, dtype=U64)
            for r in range(R):
                acc = _mix64(acc ^ sig[:, j * R + r].astype(U64))
            bk[:, j] = acc
        out["band_keys"] = bk
    else:
        ukeys, inverse, local = _local_duplicates(keys, groups)
        out.update(ukeys=ukeys, inverse=inverse, local=local, groups=groups)
        info["keys"] = int(len(keys))
        info["distinct_keys"] = int(len(ukeys))
    np.savez(work / f"{task['index']}.npz", **out)
    with open(work / f"{task['index']}.ids.json", "w", encoding="utf-8") as f:
        json.dump(ids, f)
    return {"acct": acct, "docs": len(docs), **info}


# --- phase 3: attribute files ---------------------------------------------------------------------------
def _phase3(task: dict[str, Any]) -> dict[str, int]:
    work, i, mode, attr = Path(task["work"]), task["index"], task["mode"], task["attribute"]
    z = np.load(work / f"{i}.npz")
    with open(work / f"{i}.ids.json", encoding="utf-8") as f:
        ids = json.load(f)
    lengths = z["lengths"]
    n = len(ids)
    counts = {"duplicate_documents": 0, "duplicate_spans": 0, "duplicate_chars": 0}
    rows: list[tuple[str, dict[str, list]]] = []
    if mode == "minhash":
        cl = np.load(work / f"{i}.clusters.npy")  # cluster id (global index of the first doc) or -1
        isdup = np.load(work / f"{i}.isdup.npy")
        for j in range(n):
            a: dict[str, list] = {}
            if cl[j] >= 0:
                L = int(lengths[j])
                a[attr] = [[0, L, int(cl[j])]]
                if isdup[j]:
                    a[attr + "_is_duplicate"] = [[0, L, 1]]
                    counts["duplicate_documents"] += 1
                    counts["duplicate_chars"] += L
            rows.append((ids[j], a))
        counts["clustered_documents"] = int((cl >= 0).sum())
    else:
        present = np.load(work / f"{i}.present.npy")
        dup = present[z["inverse"]] if len(z["inverse"]) else np.zeros(0, dtype=bool)
        if not task["read_only"]:  # read-only: only hits of the (unchanged) filter count
            dup |= z["local"]
        groups = z["groups"]
        if mode == "documents":
            marked = np.zeros(n, dtype=bool)
            marked[groups[dup]] = True
            for j in range(n):
                if marked[j]:
                    L = int(lengths[j])
                    rows.append((ids[j], {attr: [[0, L, 1]]}))
                    counts["duplicate_chars"] += L
                else:
                    rows.append((ids[j], {}))
            counts["duplicate_documents"] = counts["duplicate_spans"] = int(marked.sum())
        else:
            npar = len(z["pdoc"])
            if mode == "paragraphs":
                score = np.zeros(npar)
                score[groups[dup]] = 1.0
                marked = score > 0
            else:
                tot = np.bincount(groups, minlength=npar)
                hit = np.bincount(groups, weights=dup, minlength=npar)
                score = np.divide(hit, tot, out=np.zeros(npar), where=tot > 0)
                marked = (tot > 0) & (score >= task["overlap_threshold"])
                # float32 like dolma, stored as a JSON float; 1 stays 1.0
                score = score.astype(np.float32).astype(float)
            m = np.flatnonzero(marked)
            pdoc, ps, pe = z["pdoc"][m], z["pstart"][m], z["pend"][m]
            # JSON text built directly (3x faster than json.dumps of nested lists for many spans)
            if mode == "paragraphs":
                trip = [f"[{s},{e},1]" for s, e in zip(ps.tolist(), pe.tolist())]
            else:
                trip = [f"[{s},{e},{c!r}]" for s, e, c in zip(ps.tolist(), pe.tolist(), score[m].tolist())]
            cut = np.searchsorted(pdoc, np.arange(n + 1)).tolist()
            mid = ', "attributes": {' + json.dumps(attr, ensure_ascii=False) + ": ["
            enc = json.JSONEncoder(ensure_ascii=False).encode
            lines = ['{"id": ' + enc(ids[j]) + mid + ",".join(trip[cut[j] : cut[j + 1]]) + "]}}\n" for j in range(n)]
            counts["duplicate_chars"] = int((pe - ps).sum())
            counts["duplicate_spans"] = int(marked.sum())
            counts["duplicate_documents"] = int(np.count_nonzero(np.diff(cut)))
            _write_attribute_rows(Path(task["out"]), lines=lines)
            return counts
    _write_attribute_rows(Path(task["out"]), rows)
    return counts


def _write_attribute_rows(path: Path, rows: list[tuple[str, dict[str, list]]] | None = None, *, lines: list[str] | None = None) -> None:
    """``documents.write_attributes`` (same lines), faster for ``.gz``: one buffer, gzip level 1
    (attribute files are small and rewritten often; level 6 took a third of the paragraph mode)."""
    if lines is None:
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        lines = [dumps({"id": i, "attributes": a}) + "\n" for i, a in rows or ()]
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if not str(path).endswith(".gz"):  # plain or .zst: the project's writer
        write_attributes(path, ((r["id"], r["attributes"]) for r in map(json.loads, lines)))
        return
    import gzip

    tmp = temp_path_beside(path)
    try:
        # mtime=0 and no file name in the header (a temporary name would be): same bytes every run
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as f:
            f.write(data)
        commit_file(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- MinHash clustering (main process) -------------------------------------------------------------------
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


def cluster_minhash(band_keys: np.ndarray, sigs: np.ndarray, threshold: float) -> tuple[np.ndarray, dict[str, int]]:
    """Cluster ids (index of the cluster's first document, or -1 for singletons) from LSH buckets.
    In each bucket (same band key), members in order are paired with the bucket's first member and
    with their predecessor; a pair is joined when its estimated Jaccard (fraction of equal signature
    values) is at least ``threshold``."""
    n, bands = band_keys.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), {"candidate_pairs": 0, "verified_pairs": 0, "clusters": 0}
    pairs_a, pairs_b = [], []
    for j in range(bands):
        col = band_keys[:, j]
        order = np.argsort(col, kind="stable")  # stable: members in document order
        sk = col[order]
        new = np.r_[True, sk[1:] != sk[:-1]]
        start_of = np.maximum.accumulate(np.where(new, np.arange(n), 0))
        same = ~new
        idx = np.flatnonzero(same)
        if not len(idx):
            continue
        pairs_a += [order[start_of[idx]], order[idx - 1]]
        pairs_b += [order[idx], order[idx]]
    stats = {"candidate_pairs": 0, "verified_pairs": 0}
    parent = np.arange(n)
    if pairs_a:
        pa, pb = np.concatenate(pairs_a), np.concatenate(pairs_b)
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        keep = lo != hi
        pair = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0)
        stats["candidate_pairs"] = int(len(pair))
        ok = np.zeros(len(pair), dtype=bool)
        for i in range(0, len(pair), 1 << 14):
            p = pair[i : i + (1 << 14)]
            ok[i : i + len(p)] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1) >= threshold
        pair = pair[ok]
        stats["verified_pairs"] = int(len(pair))
        for x, y in pair.tolist():
            rx, ry = _find(parent, x), _find(parent, y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)  # the root is always the smallest index
    roots = np.array([_find(parent, i) for i in range(n)], dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    size = np.bincount(roots, minlength=n)
    cluster = np.where(size[roots] > 1, roots, -1)
    stats["clusters"] = int((size > 1).sum())
    return cluster, stats


# --- the stage -----------------------------------------------------------------------------------------
def dedup(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    mode: Mode,
    name: str | None = None,
    attribute_name: str | None = None,
    bloom_path: str | os.PathLike | None = None,
    expected_items: int | None = None,
    fp_rate: float = 1e-6,
    bloom_size_bytes: int | None = None,
    read_only: bool = False,
    key: str | None = None,
    ngram: int | None = None,
    overlap_threshold: float = 0.5,
    bands: int = 16,
    rows: int = 8,
    threshold: float = 0.8,
    seed: int = 1,
    workers: int = 1,
    progress: bool = True,
) -> Accounting:
    """Mark duplicates in the document shards under ``paths``, writing ``attributes/NAME/...`` next
    to ``documents/...`` and ``attributes/NAME/_summary.json``. Returns the Accounting (every valid
    document is kept: attributes mark, a later mix drops).

    mode "documents": by ``key`` (None/"text", "id", or a dotted path like "metadata.url"); the first
    occurrence is unmarked. "paragraphs": exact "\\n"-separated paragraphs. "ngrams": a paragraph whose
    word ``ngram``-grams (default 13) were seen before in at least ``overlap_threshold`` of cases.
    These use a Bloom filter (``bloom_path``: loaded when it exists, saved after the run unless
    ``read_only``; sized from ``expected_items``/``fp_rate``, by default from the number of keys found).
    "minhash": near-duplicates, ``ngram``-word shingles (default 5), ``bands * rows`` permutations,
    LSH banding, pairs verified at estimated Jaccard >= ``threshold``, clusters by union-find.
    Results do not depend on ``workers``."""
    t0 = time.time()
    if mode not in MODES:
        raise DataError(f"dedup mode must be one of {', '.join(MODES)}, not {mode!r}")
    name = name or DEFAULT_NAMES[mode]
    attr = attribute_name or name
    ngram = ngram or (5 if mode == "minhash" else 13)
    if ngram < 1:
        raise DataError(f"ngram must be >= 1, not {ngram}")
    if mode == "ngrams" and not 0 < overlap_threshold <= 1:
        raise DataError(f"overlap_threshold must be in (0, 1], not {overlap_threshold}")
    if read_only and mode == "minhash":
        raise DataError("read_only applies to the Bloom filter modes (documents, paragraphs, ngrams), not minhash")
    if read_only and (bloom_path is None or not Path(bloom_path).exists()):
        raise DataError(f"read_only needs an existing Bloom filter file (bloom_path={bloom_path})")
    shards = list_shards(paths)
    if not shards:
        raise DataError(f"no document files found in {paths}")
    outs = [attributes_path(s, name) for s in shards]  # checks the Dolma layout up front
    attr_dirs = sorted({_attr_root(s, name) for s in shards})
    with contextlib.ExitStack() as locks:
        for d in attr_dirs:  # one dedup at a time writes an attribute set
            locks.enter_context(lock_output(d, f"lmforge data dedup --mode {mode} --name {name}"))
        for d in attr_dirs:
            for stale in d.glob(".dedup-work-*"):  # scratch of a killed run (we hold the lock: nobody else's)
                shutil.rmtree(stale, ignore_errors=True)
            remove_stale_temporaries(d, recursive=True)
        return _dedup_locked(
            shards, outs, attr_dirs, mode=mode, name=name, attr=attr, bloom_path=bloom_path, expected_items=expected_items,
            fp_rate=fp_rate, bloom_size_bytes=bloom_size_bytes, read_only=read_only, key=key, ngram=ngram,
            overlap_threshold=overlap_threshold, bands=bands, rows=rows, threshold=threshold, seed=seed, workers=workers,
            progress=progress, t0=t0,
        )


def _dedup_locked(shards, outs, attr_dirs, *, mode, name, attr, bloom_path, expected_items, fp_rate, bloom_size_bytes, read_only, key,
                  ngram, overlap_threshold, bands, rows, threshold, seed, workers, progress, t0) -> Accounting:
    work = Path(tempfile.mkdtemp(prefix=".dedup-work-", dir=attr_dirs[0]))
    # spawning a worker costs ~0.5 s (numpy import): small inputs run in fewer processes (the output
    # never depends on the number of workers)
    in_bytes = sum(s.stat().st_size for s in shards)
    workers = max(1, min(workers, len(shards), in_bytes // MIN_BYTES_PER_WORKER if MIN_BYTES_PER_WORKER else workers))
    from tqdm.auto import tqdm

    pool = _Workers(workers).__enter__()
    bar = tqdm(total=2 * len(shards), desc=f"dedup {mode} ({workers} workers)", unit="step", disable=not progress, dynamic_ncols=True)
    failed: BaseException | None = None
    try:
        base = {"work": str(work), "mode": mode, "key": key, "ngram": ngram, "bands": bands, "rows": rows, "seed": seed}
        t1 = [dict(base, shard=str(s), index=i) for i, s in enumerate(shards)]
        t3 = [dict(base, index=i, out=str(o), attribute=attr, overlap_threshold=overlap_threshold, read_only=read_only) for i, o in enumerate(outs)]
        futs1 = [pool.submit(_phase1, t) for t in t1]
        summary: dict[str, Any] = {"mode": mode, "name": name, "attribute": attr, "shards": len(shards), "workers": workers}
        serial = 0.0
        if mode == "minhash":
            res1 = [f.result() for f in futs1]
            bar.update(len(res1))
            tt = time.time()
            summary.update(_cluster_phase(work, len(shards), threshold))
            summary.update(ngram=ngram, bands=bands, rows=rows, num_perm=bands * rows, threshold=threshold, seed=seed)
            serial = time.time() - tt
            futs3 = [pool.submit(_phase3, t) for t in t3]
        else:
            # pipelined: the filter takes shard i (in order) as soon as its keys are ready, while the
            # workers go on with later shards; its attribute file is then queued at once. A new filter
            # sized from the number of keys found has to wait for all of them.
            bf, created = None, False
            if bloom_path is not None and Path(bloom_path).exists():
                bf = BloomFilter.load(bloom_path, read_only=read_only)
            elif expected_items or bloom_size_bytes:
                bf, created = BloomFilter(expected_items, fp_rate, size_bytes=bloom_size_bytes), True
            else:
                total = sum(f.result()["distinct_keys"] for f in futs1)
                bf, created = BloomFilter(max(total, 1000), fp_rate), True
            res1, futs3, hits = [], [], 0
            for i, f in enumerate(futs1):
                res1.append(f.result())
                bar.update()
                tt = time.time()
                u = np.load(work / f"{i}.npz")["ukeys"]
                present = bf.contains_many(u) if read_only else bf.add_many(u, distinct=True)
                hits += int(present.sum())
                np.save(work / f"{i}.present.npy", present)
                serial += time.time() - tt
                futs3.append(pool.submit(_phase3, t3[i]))
            summary.update(
                keys=sum(r["keys"] for r in res1),
                distinct_keys_per_shard=sum(r["distinct_keys"] for r in res1),
                keys_found_in_filter=hits,
                bloom_filter={
                    "path": str(bloom_path) if bloom_path else None,
                    "created": created,
                    "bytes": bf.bits // 8,
                    "k": bf.k,
                    "items": bf.items,
                    "estimated_fp_rate": bf.estimated_fp_rate,
                },
                read_only=read_only,
                key=key if mode == "documents" else None,
            )
            if mode == "ngrams":
                summary.update(ngram=ngram, overlap_threshold=overlap_threshold)
            if mode == "documents":
                summary["documents_without_key"] = sum(r.get("missing_key", 0) for r in res1)
        res3 = []
        for f in futs3:
            res3.append(f.result())
            bar.update()
        acct = Accounting()
        for r in res1:
            acct.merge(r["acct"])
        summary["documents"] = acct.kept
        summary["seconds_serial"] = round(serial, 3)
        for k in ("duplicate_documents", "duplicate_spans", "duplicate_chars", "clustered_documents"):
            if k in res3[0]:
                summary[k] = sum(r[k] for r in res3)
    except BaseException as e:
        failed = e
        raise
    finally:
        bar.close()
        pool.__exit__(type(failed) if failed is not None else None)
        shutil.rmtree(work, ignore_errors=True)
    acct.check()
    summary["accounting"] = acct.to_json()
    summary["seconds"] = round(time.time() - t0, 3)
    for d in attr_dirs:
        atomic_write_text(d / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    if mode != "minhash" and bloom_path is not None and not read_only:
        # last: a run killed before this point left the filter as it was, so its rerun gives the same marks
        bf.save(bloom_path)
    return acct


def _attr_root(shard: Path, name: str) -> Path:
    parts = shard.parts
    i = len(parts) - 1 - parts[::-1].index("documents")
    return Path(*parts[:i], "attributes", name)


def _cluster_phase(work: Path, n_shards: int, threshold: float) -> dict[str, Any]:
    zs = [np.load(work / f"{i}.npz") for i in range(n_shards)]
    sizes = [len(z["lengths"]) for z in zs]
    band_keys = np.concatenate([z["band_keys"] for z in zs])
    sigs = np.concatenate([z["sig"] for z in zs])
    cluster, stats = cluster_minhash(band_keys, sigs, threshold)
    gidx = np.arange(len(cluster))
    isdup = (cluster >= 0) & (cluster != gidx)
    off = 0
    for i, n in enumerate(sizes):
        np.save(work / f"{i}.clusters.npy", cluster[off : off + n])
        np.save(work / f"{i}.isdup.npy", isdup[off : off + n])
        off += n
    return stats


# --- CLI ------------------------------------------------------------------------------------------------
def cmd_dedup(documents: list[str], mode: str, name: str | None = None, **kwargs: Any) -> int:
    """``lmforge data dedup --documents ... --mode documents|paragraphs|ngrams|minhash --name NAME
    [--bloom-path F] [--read-only] ...`` (keyword arguments as ``dedup``); returns the exit code (1 with
    a one-line message on stderr for a data problem)."""
    try:
        acct = dedup(documents, mode=mode, name=name, **kwargs)  # type: ignore[arg-type]
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = name or DEFAULT_NAMES.get(mode, mode)
    roots = sorted({_attr_root(s, name) for s in list_shards(documents)})
    s = json.loads((roots[0] / SUMMARY_NAME).read_text())
    print(
        f"dedup {mode}: {s.get('duplicate_documents', 0):,} of {s['documents']:,} documents with duplicates "
        f"({s.get('duplicate_spans', s.get('clustered_documents', 0)):,} spans) in {s['seconds']:.1f}s; {acct.summary_line()}"
    )
    for r in roots:
        print(f"summary: {r / SUMMARY_NAME}")
    return 0
