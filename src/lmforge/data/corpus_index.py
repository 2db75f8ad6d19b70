"""A suffix-array index over token files: count any token sequence in the training data, find where it
occurs (document id, source, file), and the maximal spans of a text that occur verbatim (OLMoTrace's
rule), on a user's own corpus.

    build_index(["runs/quickstart/tokens/train"], "runs/quickstart/index")   # lmforge data index
    idx = CorpusIndex.load("runs/quickstart/index")
    idx.count(idx.tokenizer.encode(" the model"))      # occurrences
    idx.spans(ids, min_len=6)                          # maximal verbatim spans of ids, with counts

The index directory holds ``tokens.npy`` (every token file concatenated, in order), ``sa.npy`` (the
suffix array: start positions sorted by the suffix they begin), ``doc_starts.npy`` / ``docs.jsonl``
(each document's first position, id, source and token file, from the token files' metadata),
``tokenizer.json`` (the one the token files were made with, when their ``tokenize_summary.json``
names it) and ``index.json`` (the files with size and sha256). Arrays are saved and loaded with
numpy and ``allow_pickle=False``. The suffix array is built by prefix doubling (numpy sorts:
O(n log n) per round, one round per doubling of the longest repeat), which suits corpora of up to
a few hundred million tokens on one machine; the ``infini-gram`` package builds the same kind of
index for trillions.

The span rule (OLMoTrace): for every position of the text, the longest run of tokens from there
that occurs in the corpus; keep those of at least ``min_len`` tokens that no other such span
contains, and drop spans whose text is only whitespace, punctuation or stop words.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmforge.config import atomic_write_text, sha256_file
from lmforge.data.documents import DataError
from lmforge.data.token_files import SUMMARY_NAME, read_metadata, read_summary, read_token_file
from lmforge.storage import atomic_directory

__all__ = ["CorpusIndex", "Span", "build_index", "contamination", "informative", "suffix_array"]

INDEX_JSON = "index.json"
FORMAT = "lmforge.corpus_index/1"
STOP_WORDS = frozenset("""a an and are as at be but by for from has have he her his i if in into is it its of on or our she so
that the their them then there these they this to was we were what when which who will with you your""".split())


def _token_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.npy"))
            if not found:
                raise DataError(f"{p}: no token files (*.npy); run `lmforge data tokenize` into it first")
            files += found
        elif p.is_file() and p.suffix == ".npy":
            files.append(p)
        else:
            raise DataError(f"{p}: not a token file (.npy) or a directory of them")
    return files


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Start positions of ``tokens``' suffixes in sorted order (a shorter suffix that is a prefix of
    a longer one sorts first), by prefix doubling."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(tokens, kind="stable")
    sorted_tokens = tokens[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.concatenate(([0], np.cumsum(sorted_tokens[1:] != sorted_tokens[:-1])))
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)  # rank of the suffix k further on, + 1; 0 past the end
        if k < n:
            second[: n - k] = rank[k:] + 1
        key = rank * (n + 1) + second
        order = np.argsort(key, kind="stable")
        sk = key[order]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.concatenate(([0], np.cumsum(sk[1:] != sk[:-1])))
        if rank[order[-1]] == n - 1 or k >= n:
            return order
        k *= 2


def build_index(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, dtype: str | None = None) -> dict[str, Any]:
    """Index the token files of ``paths`` (files or directories) into the new directory ``out``;
    returns the ``index.json`` record."""
    files = _token_files(paths)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not empty; choose a new --out")
    arrays, starts, docs, offset = [], [], [], 0
    tokenizer = None
    for f in files:
        toks = np.asarray(read_token_file(f, dtype))
        arrays.append(toks)
        for row in read_metadata(f) if (f.with_name(f.name[:-4] + ".csv.gz")).is_file() else []:
            starts.append(offset + row.start)
            docs.append({"id": row.id, "src": row.src, "file": str(f)})
        if tokenizer is None and (f.parent / SUMMARY_NAME).is_file():
            tokenizer = (read_summary(f.parent).get("tokenizer") or {}).get("path")
        offset += len(toks)
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
    sa = suffix_array(tokens)
    sa = sa.astype(np.uint32 if len(tokens) < 2**32 else np.uint64)
    record = {"format": FORMAT, "tokens": int(len(tokens)), "documents": len(docs), "dtype": str(tokens.dtype),
              "files": [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files],
              "tokenizer": "tokenizer.json" if tokenizer and Path(tokenizer).is_file() else None}
    with atomic_directory(out) as tmp:
        np.save(tmp / "tokens.npy", tokens, allow_pickle=False)
        np.save(tmp / "sa.npy", sa, allow_pickle=False)
        np.save(tmp / "doc_starts.npy", np.asarray(starts, dtype=np.int64), allow_pickle=False)
        atomic_write_text(tmp / "docs.jsonl", "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        if record["tokenizer"]:
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")
        atomic_write_text(tmp / INDEX_JSON, json.dumps(record, indent=1) + "\n")
    return record


@dataclasses.dataclass
class Span:
    start: int  # token offsets in the traced text
    end: int
    text: str
    count: int  # occurrences in the corpus
    documents: list[dict[str, Any]]  # a few of them: id, src, file, position, snippet

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CorpusIndex:
    """A loaded index (memory-mapped arrays)."""

    def __init__(self, root: Path):
        self.root = root
        meta = root / INDEX_JSON
        if not meta.is_file():
            raise DataError(f"{root}: not a corpus index (no {INDEX_JSON}); build one with `lmforge data index TOKENS --out DIR`")
        self.record = json.loads(meta.read_text(encoding="utf-8"))
        if self.record.get("format") != FORMAT:
            raise DataError(f"{meta}: format {self.record.get('format')!r}, this lmforge reads {FORMAT}; rebuild the index")
        load = lambda name: np.load(root / name, mmap_mode="r", allow_pickle=False)  # noqa: E731
        self.tokens, self.sa, self.doc_starts = load("tokens.npy"), load("sa.npy"), load("doc_starts.npy")
        self.docs = [json.loads(line) for line in (root / "docs.jsonl").read_text(encoding="utf-8").splitlines()]
        self.tokenizer = None
        if self.record.get("tokenizer"):
            from lmforge.tokenizer.core import Tokenizer

            self.tokenizer = Tokenizer.from_file(root / "tokenizer.json")

    @classmethod
    def load(cls, root: str | os.PathLike) -> "CorpusIndex":
        return cls(Path(root))

    # --- exact search ----------------------------------------------------------------------------
    def _compare(self, pos: int, q: np.ndarray) -> int:
        """-1 / 0 / 1: the suffix at ``pos`` against ``q`` on ``len(q)`` tokens (shorter and equal: -1)."""
        seg = self.tokens[pos : pos + len(q)]
        m = min(len(seg), len(q))
        diff = np.flatnonzero(seg[:m] != q[:m])
        if len(diff):
            return -1 if seg[diff[0]] < q[diff[0]] else 1
        return 0 if len(seg) == len(q) else -1

    def _bound(self, q: np.ndarray, lo: int, hi: int, upper: bool) -> int:
        while lo < hi:
            mid = (lo + hi) // 2
            c = self._compare(int(self.sa[mid]), q)
            if c < 0 or (upper and c == 0):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, ids: Sequence[int], lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        """The suffix-array range ``[lo, hi)`` of the occurrences of ``ids`` (within ``[lo, hi)``)."""
        q = np.asarray(ids, dtype=np.int64)
        hi = len(self.sa) if hi is None else hi
        if len(q) == 0:
            return lo, hi
        first = self._bound(q, lo, hi, upper=False)
        return first, self._bound(q, first, hi, upper=True)

    def count(self, ids: Sequence[int]) -> int:
        lo, hi = self.find(ids)
        return hi - lo

    def document_at(self, pos: int) -> dict[str, Any] | None:
        if not len(self.doc_starts):
            return None
        i = int(np.searchsorted(self.doc_starts, pos, side="right")) - 1
        return {**self.docs[i], "doc_start": int(self.doc_starts[i])} if i >= 0 else None

    def occurrences(self, ids: Sequence[int], limit: int = 3, context: int = 24) -> list[dict[str, Any]]:
        """Up to ``limit`` occurrences: position, document and a snippet (decoded when possible)."""
        lo, hi = self.find(ids)
        out = []
        for pos in sorted(int(p) for p in self.sa[lo : min(hi, lo + limit)]):
            doc = self.document_at(pos) or {}
            a, b = max(doc.get("doc_start", 0), pos - context), pos + len(ids) + context
            piece = self.tokens[a:b]
            snippet = self.tokenizer.decode(piece) if self.tokenizer is not None else " ".join(map(str, piece))
            out.append({**doc, "position": pos, "snippet": snippet})
        return out

    # --- tracing ---------------------------------------------------------------------------------
    def longest_matches(self, ids: Sequence[int]) -> list[int]:
        """For each position i, the length of the longest ``ids[i:i+L]`` that occurs in the corpus."""
        q = np.asarray(ids, dtype=np.int64)
        out, prev = [], 0
        for i in range(len(q)):
            length = max(0, prev - 1)  # ids[i:i+prev-1] occurs (a suffix of the last match)
            lo, hi = self.find(q[i : i + length])
            while i + length < len(q):
                nlo, nhi = self.find(q[i : i + length + 1], lo, hi)
                if nlo >= nhi:
                    break
                lo, hi, length = nlo, nhi, length + 1
            out.append(length)
            prev = length
        return out

    def spans(self, ids: Sequence[int], *, min_len: int = 6, docs: int = 3) -> list[Span]:
        """The maximal spans of ``ids`` that occur verbatim (module doc), in order, with counts and
        up to ``docs`` source documents each."""
        ids = [int(i) for i in ids]
        lengths = self.longest_matches(ids)
        found, reach = [], 0
        for i, length in enumerate(lengths):
            end = i + length
            if length < min_len or end <= reach:  # too short, or inside an earlier span
                continue
            reach = end
            piece = ids[i:end]
            text = self.tokenizer.decode(piece) if self.tokenizer is not None else " ".join(map(str, piece))
            if not informative(text):
                continue
            found.append(Span(i, end, text, self.count(piece), self.occurrences(piece, docs)))
        return found


def informative(text: str) -> bool:
    """Not only whitespace, punctuation or stop words (OLMoTrace's filter)."""
    words = re.findall(r"[^\W_]+", text.lower())
    return bool(words) and not all(w in STOP_WORDS for w in words)


def contamination(index: CorpusIndex, examples: dict[str, str], n: int = 13, max_windows: int = 64) -> dict[str, Any]:
    """Exact token n-gram overlap of evaluation examples (id -> text) with the indexed corpus. Each
    example is cut into ``n``-token windows at a stride of ``n`` (its last window ending at its end;
    at most ``max_windows``): any overlap of ``2n - 1`` tokens or more with the corpus contains
    one, a verbatim copy contains all. An example is contaminated when one of its windows occurs;
    ``occurrences`` sums the exact counts of those windows over all examples."""
    if index.tokenizer is None:
        raise DataError(f"{index.root}: the index has no tokenizer.json; exact contamination counts need the corpus tokenizer")
    checked = contaminated = occurrences = too_short = 0
    hits: list[str] = []
    for doc_id, text in examples.items():
        ids = index.tokenizer.encode(text)
        if len(ids) < n:
            too_short += 1
            continue
        checked += 1
        found = 0
        starts = sorted(set(list(range(0, len(ids) - n + 1, n))[:max_windows] + [len(ids) - n]))
        for w in {tuple(ids[i : i + n]) for i in starts}:
            found += index.count(w)
        if found:
            contaminated += 1
            occurrences += found
            hits.append(doc_id)
    return {"examples": len(examples), "checked": checked, "too_short": too_short, "contaminated": contaminated,
            "share": contaminated / checked if checked else 0.0, "occurrences": occurrences, "contaminated_ids": hits[:20]}
