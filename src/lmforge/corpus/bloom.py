"""A blocked Bloom filter of 64-bit keys, kept on disk (header with a CRC of the bit array), and
:func:`build_filter` for decontamination (a filter of evaluation sets' keys)."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

from lmforge.data.documents import DataError
from lmforge.corpus.hashing import U64, hash_string, hash_strings, mix64, text_keys
from lmforge.storage import atomic_write_bytes

__all__ = ["BLOCK_BITS", "MAX_K", "BloomFilter", "EvalFilterTask", "as_hashes", "block_slack", "build_filter", "eval_set_filter"]

_MASK64 = (1 << 64) - 1

_MAGIC = b"LMFBLOOM"
_VERSION = 1
_HEADER = struct.Struct("<8sIIQQI")  # magic, version, k, bits, items added, crc32 of the bit array
_BATCH = 1 << 15
BLOCK_BITS = 512
MAX_K = 12


def block_slack(fp_rate: float) -> float:
    """A blocked filter needs more bits than a classic one for the same false-positive rate (blocks
    fill unevenly), the more so the lower the rate: bits = slack * -n ln p / ln^2 2. Measured on random
    keys: 1e-2 -> 0.4-0.9%, 1e-4 -> ~0.4e-4, 1e-6 -> ~1e-6."""
    return 1 + 0.065 * math.log10(1 / fp_rate)


def as_hashes(keys: Any) -> np.ndarray:
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
            bits = math.ceil(block_slack(fp_rate) * expected_items * per_item)
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
        g, block = self._block(h)
        words = [mix64(g)]
        for _ in range(1, self._nwords):
            words.append(mix64(words[-1]))
        w = np.stack(words, axis=1) if len(words) > 1 else words[0][:, None]
        pos = w[:, self._wi] >> self._shift[None, :]
        pos &= U64(BLOCK_BITS - 1)
        pos += (block * U64(BLOCK_BITS))[:, None]
        return pos

    def _block(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nblocks = self.bits // BLOCK_BITS
        g = mix64(h ^ U64(0xD6E8FEB86659FD93))  # keys need not be uniform (e.g. small integers)
        if nblocks <= 1 << 32:  # multiply-high range reduction (no division)
            return g, ((g >> U64(32)) * U64(nblocks)) >> U64(32)
        return g, g % U64(nblocks)

    def part_of(self, h: np.ndarray, parts: int) -> np.ndarray:
        """Which of ``parts`` equal ranges of blocks each key's bits lie in (int64). Keys of different
        parts touch disjoint bits, so the parts can be tested and updated independently, in parallel,
        with the same result as one filter updated key by key."""
        nblocks = self.bits // BLOCK_BITS
        return (self._block(h)[1].astype(np.int64) * parts) // nblocks

    def part_bytes(self, part: int, parts: int) -> tuple[int, int]:
        """The byte range of the bit array holding the blocks of ``part`` (see :meth:`part_of`)."""
        nblocks, per = self.bits // BLOCK_BITS, BLOCK_BITS // 8
        lo = -(-part * nblocks // parts)  # first block b with b * parts // nblocks == part
        hi = -(-(part + 1) * nblocks // parts)
        return lo * per, hi * per

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
        h = as_hashes(keys)
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
        h = as_hashes(keys)
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


@dataclasses.dataclass(frozen=True)
class EvalFilterTask:
    """The work of ``lmforge data eval-filter`` (picklable: it may run on a worker)."""

    tasks: tuple[str, ...]  # downstream evaluation task names
    out: str
    mode: Literal["documents", "paragraphs", "ngrams"]
    ngram: int


def eval_set_filter(task: EvalFilterTask) -> int:
    """``lmforge data eval-filter`` as one task: the filter of the downstream evaluation sets'
    examples (``task.tasks``) in ``task.mode``, saved to ``task.out``; returns how many examples
    went in."""
    from lmforge.data.evalsets import EvalSets

    sets = EvalSets()
    texts = [text for t in task.tasks for text in sets.examples(t).values()]
    build_filter(texts, task.out, mode=task.mode, ngram=task.ngram)
    return len(texts)
