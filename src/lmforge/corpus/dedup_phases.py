"""The per-shard work of :func:`lmforge.corpus.dedup.dedup`, run in worker processes: phase 1 computes
a shard's keys and its local duplicates; the MinHash clustering runs between the phases in the
driver; phase 3 writes a shard's attribute file. Each function takes one task, a frozen dataclass
defined here (picklable: it crosses to worker processes); scratch files go to the run's work
directory (``work``)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.documents import Accounting, Document, TruncatedFileError, gzip_fast, read_documents, write_attributes
from lmforge.corpus.hashing import U64, chunks_of, hash_strings, mix64, paragraph_keys, text_chunk, word_ngram_keys
from lmforge.corpus.minhash import bucket_pairs, minhash_params, minhash_signatures, split_bands, union_clusters
from lmforge.corpus.scratch import load_array, load_bytes, save_array, save_arrays, save_bytes
from lmforge.objectstore import as_path
from lmforge.storage import commit_file, temp_path_beside

__all__ = [
    "AttributesTask",
    "BandBucketTask",
    "BucketTask",
    "FilterTask",
    "KeysTask",
    "UnionTask",
    "band_bucket_phase",
    "bucket_of",
    "filter_phase",
    "phase1",
    "phase3",
    "resolve_bucket",
    "union_phase",
    "write_attribute_rows",
]

_MASK64 = (1 << 64) - 1


# --- tasks (picklable: they cross to worker processes) -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class KeysTask:
    """Phase 1 (:func:`phase1`) of one shard: its keys (and MinHash band entries) into ``work``."""

    work: str
    shard: str
    index: int
    mode: str
    key: str | None  # documents mode: None/"text", "id" or a dotted path
    ngram: int
    bands: int
    rows: int
    seed: int
    buckets: int | None  # exact modes and MinHash: key buckets; None: through a Bloom filter


@dataclasses.dataclass(frozen=True)
class BucketTask:
    """Exact phase 2 (:func:`resolve_bucket`) of one key bucket across all ``shards``."""

    work: str
    bucket: int
    shards: int


@dataclasses.dataclass(frozen=True)
class FilterTask:
    """Phase 2 through a Bloom filter (:func:`filter_phase`), all ``shards`` in order."""

    work: str
    shards: int
    bloom_path: str | None
    read_only: bool
    expected_items: int | None
    bloom_size_bytes: int | None
    fp_rate: float
    save_to: str | None  # where the updated filter goes (None: read-only)
    part: int = 0  # this task's range of the filter's blocks (BloomFilter.part_of), of
    parts: int = 1  # parts tasks; with several, save_to receives this part's bytes, joined by filter_join


@dataclasses.dataclass(frozen=True)
class FilterJoinTask:
    """The filter's parts (:func:`filter_phase` with ``parts`` > 1) into one file (:func:`filter_join`)."""

    work: str
    parts: int
    save_to: str
    size_bytes: int
    k: int
    items: int  # the filter's items after every part's additions


@dataclasses.dataclass(frozen=True)
class BandBucketTask:
    """MinHash (:func:`band_bucket_phase`): one bucket of band keys; ``offsets``: each shard's first
    document's global index."""

    work: str
    bucket: int
    offsets: tuple[int, ...]
    threshold: float


@dataclasses.dataclass(frozen=True)
class UnionTask:
    """MinHash (:func:`union_phase`): the union-find over every bucket's verified pairs; ``sizes``:
    each shard's number of documents."""

    work: str
    buckets: int
    sizes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class AttributesTask:
    """Phase 3 (:func:`phase3`) of one shard: its attribute file ``out``."""

    work: str
    index: int
    out: str
    mode: str
    attribute: str
    buckets: int | None
    overlap_threshold: float
    read_only: bool
    filter_parts: int = 1


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
    order = np.argsort(keys)  # unstable (5x faster than stable for uint64): the first group is a minimum below
    sk = keys[order]
    new = np.empty(len(sk), dtype=bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    uid = np.cumsum(new) - 1
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = uid
    first_group = np.minimum.reduceat(groups[order], np.flatnonzero(new))  # groups are nondecreasing: the earliest
    return sk[new], inverse, groups > first_group[inverse]


def _narrow(a: np.ndarray) -> np.ndarray:
    """int32 when the values fit (half the scratch bytes written here and read back in phase 3)."""
    if len(a) and (int(a.max()) >= 2**31 or int(a.min()) < -(2**31)):
        return a
    return a.astype(np.int32)


def phase1(task: KeysTask) -> dict[str, Any]:
    shard, work, mode = as_path(task.shard), as_path(task.work), task.mode
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
        keys_s = [_doc_key(d, task.key) for d in docs]
        has = np.fromiter((k is not None for k in keys_s), dtype=bool, count=len(docs))
        keys = hash_strings(k for k in keys_s if k is not None)
        groups = np.flatnonzero(has).astype(np.int64)
        info["missing_key"] = int((~has).sum())
    else:
        key_parts, grp_parts, par = [], [], {"pdoc": [], "pstart": [], "pend": []}
        d0 = g0 = 0
        texts = [d.text for d in docs]
        for chunk in chunks_of(texts):
            ch = text_chunk(chunk)
            if mode == "paragraphs":
                k, gi = paragraph_keys(ch)
                ng = len(ch.pstart)
            elif mode == "ngrams":
                k, gi = word_ngram_keys(ch, ch.pstart, len(ch.pstart), task.ngram)
                ng = len(ch.pstart)
            else:  # minhash: shingles per document
                k, gi = word_ngram_keys(ch, ch.dstart[:-1], len(chunk), task.ngram)
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
                out[kname] = _narrow(cat(v, np.int64))
    if mode == "minhash":
        a, b = minhash_params(task.bands * task.rows, task.seed)
        sig = minhash_signatures(keys, groups, len(docs), a, b)
        # band keys: hash of each band's rows (one column per band)
        R = task.rows
        bk = np.empty((len(docs), task.bands), dtype=U64)
        for j in range(task.bands):
            acc = np.full(len(docs), ((j + 1) * 0x9E3779B97F4A7C15) & _MASK64, dtype=U64)
            for r in range(R):
                acc = mix64(acc ^ sig[:, j * R + r].astype(U64))
            bk[:, j] = acc
        for j, part in enumerate(split_bands(bk, sig, task.buckets)):  # LSH entries by band-key bucket
            save_arrays(work / f"{task.index}.m{j}.npz", part)
    else:
        ukeys, inverse, local = _local_duplicates(keys, groups)
        out.update(ukeys=ukeys, inverse=_narrow(inverse), local=local, groups=_narrow(groups))
        info["keys"] = int(len(keys))
        info["distinct_keys"] = int(len(ukeys))
        buckets = task.buckets
        if buckets:  # exact dedup by hash partitioning: this shard's distinct keys, bucket by bucket
            b = bucket_of(ukeys, buckets)
            for j in range(buckets):
                save_array(work / f"{task.index}.b{j}.npy", ukeys[b == j])
    save_arrays(work / f"{task.index}.npz", out)
    save_bytes(work / f"{task.index}.ids.json", json.dumps(ids).encode("utf-8"))
    return {"acct": acct, "docs": len(docs), **info}


def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """The bucket of each key (keys are mixed 64-bit hashes: their remainder spreads evenly)."""
    return (keys % U64(buckets)).astype(np.int64)


# --- phase 2: which keys occurred in an earlier shard -----------------------------------------------------
def resolve_bucket(task: BucketTask) -> dict[str, int]:
    """Exact phase 2 for one bucket: a shard's key that some earlier shard also has is a duplicate
    there (the first occurrence in (shard, position) order wins; within a shard, phase 1 already
    marked the later ones). Reads every shard's keys of this bucket, writes one mask per shard.
    Memory: the bucket's keys, not the corpus's."""
    work, j, n = as_path(task.work), task.bucket, task.shards
    parts = [load_array(work / f"{i}.b{j}.npy") for i in range(n)]
    keys = np.concatenate(parts) if parts else np.zeros(0, dtype=U64)
    shard = np.repeat(np.arange(n, dtype=np.int64), [len(p) for p in parts])
    order = np.lexsort((shard, keys))  # by key, then shard
    first = np.empty(len(keys), dtype=bool)
    if len(keys):
        first[0] = True
        np.not_equal(keys[order][1:], keys[order][:-1], out=first[1:])
    earlier = np.empty(len(keys), dtype=bool)
    earlier[order] = ~first  # the same key in an earlier shard (each shard's keys are distinct)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    for i in range(n):
        save_array(work / f"{i}.b{j}.present.npy", earlier[offsets[i] : offsets[i + 1]])
    return {"keys": int(len(keys)), "found_earlier": int(earlier.sum())}


def filter_phase(task: FilterTask) -> dict[str, Any]:
    """Phase 2 through a Bloom filter (incremental runs and decontamination): shards in order, each
    shard's distinct keys tested against the filter, then added unless read-only. With ``parts`` > 1
    this task handles only the keys whose bits lie in its range of blocks (the tasks run in parallel
    and give the same answers as one); the updated filter (or this part's bytes of it) is written to
    ``task.save_to``, published by the driver last, after the summary."""
    from lmforge.corpus.bloom import BloomFilter

    work, n = as_path(task.work), task.shards
    created = False
    if task.bloom_path is not None and Path(task.bloom_path).exists():
        bf = BloomFilter.load(task.bloom_path, read_only=task.read_only)
    elif task.expected_items or task.bloom_size_bytes:
        bf, created = BloomFilter(task.expected_items, task.fp_rate, size_bytes=task.bloom_size_bytes), True
    else:
        total = sum(len(load_array(work / f"{i}.npz")["ukeys"]) for i in range(n))
        bf, created = BloomFilter(max(total, 1000), task.fp_rate), True
    items_before, hits = bf.items, 0
    suffix = f".p{task.part}" if task.parts > 1 else ""
    for i in range(n):
        u = load_array(work / f"{i}.npz")["ukeys"]
        mine = np.flatnonzero(bf.part_of(u, task.parts) == task.part) if task.parts > 1 else slice(None)
        present = np.zeros(len(u), dtype=bool)
        present[mine] = bf.contains_many(u[mine]) if task.read_only else bf.add_many(u[mine], distinct=True)
        hits += int(present.sum())
        save_array(work / f"{i}.present{suffix}.npy", present)
    stats = {"keys_found_in_filter": hits, "created": created, "bytes": bf.bits // 8, "k": bf.k, "items_before": items_before,
             "items_added": bf.items - items_before}
    if task.save_to and not task.read_only:
        if task.parts > 1:
            lo, hi = bf.part_bytes(task.part, task.parts)
            save_bytes(as_path(f"{task.save_to}.p{task.part}"), bf.bitmap[lo:hi].tobytes())
        else:
            bf.save(task.save_to)
    if task.parts == 1 or task.read_only:
        stats["estimated_fp_rate"] = bf.estimated_fp_rate
    return stats


def filter_join(task: FilterJoinTask) -> dict[str, Any]:
    """The parts' bytes, in block order, as the updated filter file ``task.save_to``."""
    from lmforge.corpus.bloom import BloomFilter

    bf = BloomFilter(size_bytes=task.size_bytes, num_hashes=task.k)
    data = b"".join(load_bytes(as_path(f"{task.save_to}.p{p}")) for p in range(task.parts))
    if len(data) != task.size_bytes:
        raise DataError(f"{task.save_to}: the filter's parts hold {len(data):,} bytes, not {task.size_bytes:,}")
    bf.bitmap = np.frombuffer(data, dtype=np.uint8).copy()
    bf.items = task.items
    bf.save(task.save_to)
    return {"estimated_fp_rate": bf.estimated_fp_rate}


def _present(work: Path, i: int, buckets: int | None, ukeys: np.ndarray, filter_parts: int = 1) -> np.ndarray:
    """Which of shard ``i``'s distinct keys an earlier shard (or the filter) has."""
    if not buckets:
        if filter_parts > 1:  # each part answered for its own keys (the others are False there)
            return np.logical_or.reduce([load_array(work / f"{i}.present.p{p}.npy") for p in range(filter_parts)])
        return load_array(work / f"{i}.present.npy")
    present = np.zeros(len(ukeys), dtype=bool)
    b = bucket_of(ukeys, buckets)
    for j in range(buckets):
        present[b == j] = load_array(work / f"{i}.b{j}.present.npy")
    return present


# --- phase 3: attribute files ---------------------------------------------------------------------------
def phase3(task: AttributesTask) -> dict[str, int]:
    work, i, mode, attr = as_path(task.work), task.index, task.mode, task.attribute
    z = load_array(work / f"{i}.npz")
    ids = json.loads(load_bytes(work / f"{i}.ids.json"))
    lengths = z["lengths"]
    n = len(ids)
    counts = {"duplicate_documents": 0, "duplicate_spans": 0, "duplicate_chars": 0}
    rows: list[tuple[str, dict[str, list]]] = []
    if mode == "minhash":
        cl = load_array(work / f"{i}.clusters.npy")  # cluster id (global index of the first doc) or -1
        isdup = load_array(work / f"{i}.isdup.npy")
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
        present = _present(work, i, task.buckets, z["ukeys"], task.filter_parts)
        dup = present[z["inverse"]] if len(z["inverse"]) else np.zeros(0, dtype=bool)
        if not task.read_only:  # read-only: only hits of the (unchanged) filter count
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
                marked = (tot > 0) & (score >= task.overlap_threshold)
                # float32 like dolma, stored as a JSON float; 1 stays 1.0
                score = score.astype(np.float32).astype(float)
            m = np.flatnonzero(marked)
            pdoc, ps, pe = z["pdoc"][m], z["pstart"][m], z["pend"][m]
            # JSON text built directly (3x faster than json.dumps of nested lists for many spans)
            cut = np.searchsorted(pdoc, np.arange(n + 1)).tolist()
            mid = ', "attributes": {' + json.dumps(attr, ensure_ascii=False) + ": ["
            enc = json.JSONEncoder(ensure_ascii=False).encode
            if mode == "paragraphs":
                spans = _span_list_texts(ps, pe, cut)
            else:
                trip = [f"[{s},{e},{c!r}]" for s, e, c in zip(ps.tolist(), pe.tolist(), score[m].tolist())]
                spans = [",".join(trip[cut[j] : cut[j + 1]]) for j in range(n)]
            lines = ['{"id": ' + enc(ids[j]) + mid + spans[j] + "]}}\n" for j in range(n)]
            counts["duplicate_chars"] = int((pe - ps).sum())
            counts["duplicate_spans"] = int(marked.sum())
            counts["duplicate_documents"] = int(np.count_nonzero(np.diff(cut)))
            write_attribute_rows(as_path(task.out), lines=lines)
            return counts
    write_attribute_rows(as_path(task.out), rows)
    return counts


_POW10 = 10 ** np.arange(1, 19, dtype=np.uint64)


def _span_list_texts(start: np.ndarray, end: np.ndarray, cut: list[int]) -> list[str]:
    """For each document j, ``"[s,e,1],[s,e,1],..."`` of its spans ``cut[j]:cut[j+1]``: every span
    formatted by one ``%`` over all of them, then cut where each document's spans end (the length
    of each span's text is known from its numbers' digit counts)."""
    if len(start) == 0:
        return [""] * (len(cut) - 1)
    both = np.empty(2 * len(start), dtype=np.int64)
    both[0::2], both[1::2] = start, end
    text = ("[%d,%d,1]," * len(start)) % tuple(both.tolist())
    digits = 1 + np.searchsorted(_POW10, both.astype(np.uint64), side="right")
    width = 6 + digits[0::2] + digits[1::2]  # "[" s "," e ",1]" ","
    ends = np.concatenate([[0], np.cumsum(width)]).tolist()
    return [text[ends[a] : ends[b] - 1] if b > a else "" for a, b in zip(cut[:-1], cut[1:])]


def write_attribute_rows(path: Path, rows: list[tuple[str, dict[str, list]]] | None = None, *, lines: list[str] | None = None) -> None:
    """``documents.write_attributes`` (same lines), faster for ``.gz``: one buffer, ISA-L level 1
    (attribute files are small and rewritten often; zlib level 6 took a third of the paragraph mode)."""
    if lines is None:
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        lines = [dumps({"id": i, "attributes": a}) + "\n" for i, a in rows or ()]
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if not str(path).endswith(".gz"):  # plain or .zst: the project's writer
        write_attributes(path, ((r["id"], r["attributes"]) for r in map(json.loads, lines)))
        return
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "wb") as raw:  # gzip_fast: mtime 0, no file name in the header: same bytes every run
            raw.write(gzip_fast(data))
        commit_file(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def band_bucket_phase(task: BandBucketTask) -> dict[str, int]:
    """MinHash, one bucket of band keys: its candidate pairs across every shard, verified by the
    signatures' estimated Jaccard (memory: this bucket's entries)."""
    work, j = as_path(task.work), task.bucket
    parts = [load_array(work / f"{i}.m{j}.npz") for i in range(len(task.offsets))]
    pairs, verified = bucket_pairs([{k: z[k] for k in ("band", "key", "doc", "docs", "sig")} for z in parts], task.offsets, task.threshold)
    save_array(work / f"band{j}.candidates.npy", pairs)
    save_array(work / f"band{j}.verified.npy", verified)
    return {"candidate_pairs": int(len(pairs)), "verified_pairs": int(len(verified))}


def union_phase(task: UnionTask) -> dict[str, int]:
    """MinHash, after the buckets: union-find over the verified pairs, then each shard's cluster ids
    (-1 outside clusters) and is-duplicate marks (memory: the near-duplicates and one shard)."""
    work, sizes = as_path(task.work), task.sizes
    cand = [load_array(work / f"band{j}.candidates.npy") for j in range(task.buckets)]
    ver = [load_array(work / f"band{j}.verified.npy") for j in range(task.buckets)]
    unique = lambda xs: np.unique(np.concatenate(xs), axis=0) if sum(map(len, xs)) else np.zeros((0, 2), dtype=np.int64)  # noqa: E731
    candidates, verified = unique(cand), unique(ver)
    nodes, cluster = union_clusters(verified)
    off = 0
    for i, n in enumerate(sizes):
        lo, hi = np.searchsorted(nodes, [off, off + n])
        cl = np.full(n, -1, dtype=np.int64)
        cl[nodes[lo:hi] - off] = cluster[lo:hi]
        save_array(work / f"{i}.clusters.npy", cl)
        save_array(work / f"{i}.isdup.npy", (cl >= 0) & (cl != np.arange(off, off + n)))
        off += n
    return {"candidate_pairs": int(len(candidates)), "verified_pairs": int(len(verified)), "clusters": int(len(np.unique(cluster)))}
