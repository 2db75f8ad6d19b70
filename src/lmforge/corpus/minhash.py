"""MinHash signatures (multiply-shift hashing, vectorised) and LSH-bucket clustering with
verification and union-find, for near-duplicate detection.

At scale the clustering is partitioned (:func:`split_bands`, :func:`bucket_pairs`,
:func:`union_clusters`): every shard writes its (band, band key, document, signature) entries into
P buckets by band key; each bucket's task finds and verifies the candidate pairs among its entries
(all entries of one band key land in one bucket, so it sees every pair of that key); one step then
joins the verified pairs by union-find over the documents that have near-duplicates only. Memory per
bucket task grows with the bucket, and the union's with the near-duplicates, neither with the
corpus; the clusters equal those of :func:`cluster_minhash` for any P."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lmforge.corpus.hashing import U64

__all__ = ["bucket_pairs", "candidate_pairs", "cluster_minhash", "find_root", "minhash_params", "minhash_signatures", "split_bands", "union_clusters"]


def minhash_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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




def find_root(parent: np.ndarray, x: int) -> int:
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
            rx, ry = find_root(parent, x), find_root(parent, y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)  # the root is always the smallest index
    roots = np.array([find_root(parent, i) for i in range(n)], dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    size = np.bincount(roots, minlength=n)
    cluster = np.where(size[roots] > 1, roots, -1)
    stats["clusters"] = int((size > 1).sum())
    return cluster, stats


# --- partitioned: band buckets, then a union-find over the verified pairs ----------------------------------
def split_bands(band_keys: np.ndarray, sigs: np.ndarray, buckets: int) -> list[dict[str, np.ndarray]]:
    """A shard's LSH entries in ``buckets`` parts by band key: per part, ``band``, ``key`` and ``doc``
    (the document's index in the shard) of each entry, and ``docs``/``sig``: the signatures of the
    documents it mentions (once each)."""
    n, bands = band_keys.shape
    band = np.tile(np.arange(bands, dtype=np.int16), n)
    doc = np.repeat(np.arange(n, dtype=np.int64), bands)
    key = band_keys.reshape(-1)
    which = (key % U64(buckets)).astype(np.int64)
    parts = []
    for p in range(buckets):
        m = which == p
        docs = np.unique(doc[m])
        parts.append({"band": band[m], "key": key[m], "doc": doc[m], "docs": docs, "sig": sigs[docs]})
    return parts


def candidate_pairs(band: np.ndarray, key: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """Unique ``(lo, hi)`` document pairs of the LSH buckets among these entries: in each (band, key)
    group, in document order, every member with the group's first and with its predecessor (what
    :func:`cluster_minhash` pairs)."""
    if not len(doc):
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((doc, key, band))
    b, k, d = band[order], key[order], doc[order]
    new = np.r_[True, (b[1:] != b[:-1]) | (k[1:] != k[:-1])]
    start_of = np.maximum.accumulate(np.where(new, np.arange(len(d)), 0))
    idx = np.flatnonzero(~new)
    pa = np.concatenate([d[start_of[idx]], d[idx - 1]])
    pb = np.concatenate([d[idx], d[idx]])
    lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
    keep = lo != hi
    if not keep.any():
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0)


def bucket_pairs(parts: list[dict[str, np.ndarray]], offsets: Sequence[int], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One bucket: every shard's part of it (``parts[i]`` of shard ``i``, whose documents start at
    global index ``offsets[i]``) -> (candidate pairs, the verified ones), in global indices."""
    empty = np.zeros((0, 2), dtype=np.int64)
    if not parts:
        return empty, empty
    band = np.concatenate([p["band"] for p in parts])
    key = np.concatenate([p["key"] for p in parts])
    doc = np.concatenate([p["doc"] + off for p, off in zip(parts, offsets)])
    pairs = candidate_pairs(band, key, doc)
    if not len(pairs):
        return empty, empty
    docs = np.concatenate([p["docs"] + off for p, off in zip(parts, offsets)])  # increasing: shards in order
    sig = np.concatenate([p["sig"] for p in parts])
    ok = np.zeros(len(pairs), dtype=bool)
    for i in range(0, len(pairs), 1 << 14):
        q = pairs[i : i + (1 << 14)]
        a, b = sig[np.searchsorted(docs, q[:, 0])], sig[np.searchsorted(docs, q[:, 1])]
        ok[i : i + len(q)] = (a == b).mean(axis=1) >= threshold
    return pairs, pairs[ok]


def union_clusters(verified: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clusters of verified pairs (global indices): (the documents in clusters, sorted; each one's
    cluster id, the smallest index in its cluster). Memory: the near-duplicates, not the corpus.

    Vectorised min-label propagation with pointer jumping (rounds ~ log of the cluster diameter;
    2M pairs/s on one core): a label only ever decreases to the index of a document in the same
    cluster, so when no edge joins two labels any more, every cluster carries the index of its
    smallest document, as a sequential union-find by smallest root gives."""
    if not len(verified):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # the documents and each pair's positions among them, by one sort (np.unique and searchsorted with
    # unsorted queries are ~10x slower on large arrays)
    flat = verified.astype(np.int64).reshape(-1)
    order = np.argsort(flat)
    ordered = flat[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    nodes = ordered[new]
    position = np.empty(len(flat), dtype=np.int64)
    position[order] = np.cumsum(new) - 1
    a, b = position[0::2], position[1::2]
    label = np.arange(len(nodes))
    while True:
        lower = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, lower)
        np.minimum.at(new, b, lower)
        while True:  # pointer jumping: a label's label, until each points at a root
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return nodes, nodes[label]
        label = new
