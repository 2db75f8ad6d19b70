"""MinHash signatures (multiply-shift hashing, vectorised) and LSH-bucket clustering with
verification and union-find, for near-duplicate detection."""

from __future__ import annotations

import numpy as np

from lmforge.corpus.hashing import U64

__all__ = ["cluster_minhash", "find_root", "minhash_params", "minhash_signatures"]


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


# --- the stage -----------------------------------------------------------------------------------------
