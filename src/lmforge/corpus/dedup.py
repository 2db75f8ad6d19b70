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
2. shards in sorted order: test the shard's distinct keys against the filter and then add them
   (vectorised); a key already in the filter marks all its occurrences. All bits of a key lie in
   one block of the filter, so this runs as ``filter_parts`` parallel tasks, each over its own range
   of blocks (disjoint bits: the same answers as one task), whose slices are then joined;
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

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal


import numpy as np

from lmforge.config import Config, ConfigError, atomic_write_text, option
from lmforge.corpus.dedup_phases import (
    AttributesTask,
    BandBucketTask,
    BucketTask,
    FilterJoinTask,
    FilterTask,
    KeysTask,
    UnionTask,
    band_bucket_phase,
    filter_join,
    filter_phase,
    phase1,
    phase3,
    resolve_bucket,
    union_phase,
)
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.corpus.parallel import shared_pool
from lmforge.corpus.plan import replaying, scratch_directory
from lmforge.objectstore import RemotePath
from lmforge.data.documents import Accounting, DataError, attribute_dir, attributes_path, list_shards
from lmforge.storage import commit_file, lock_output, remove_stale_temporaries, temp_path_beside

__all__ = ["DEFAULT_NAMES", "MODES", "SUMMARY_NAME", "DedupConfig", "attribute_root", "dedup"]

Mode = Literal["documents", "paragraphs", "ngrams", "minhash"]
MODES = ("documents", "paragraphs", "ngrams", "minhash")
SUMMARY_NAME = "_summary.json"
MIN_BYTES_PER_WORKER = 4 << 20  # input file bytes (compressed as stored) that justify one more process
MIN_KEY_BYTES_PER_WORKER = 64 << 20  # key bytes of the bucket step that justify one more process
BUCKET_INPUT_BYTES = 256 << 20  # input bytes per bucket of exact dedup, unless buckets is given
DEFAULT_NAMES = {
    "documents": "bff_duplicate_document",
    "paragraphs": "bff_duplicate_paragraph_spans",
    "ngrams": "bff_duplicate_paragraph_spans_ngram",
    "minhash": "minhash_cluster",
}


@dataclasses.dataclass
class DedupConfig(Config):
    """What ``lmforge data dedup`` does (each field is also its command-line flag)."""

    documents: list[str] = option(help="document files, directories or globs (under a documents/ directory)")
    mode: Mode = option(help="documents, paragraphs or 13-gram overlap (Bloom filter), or minhash near-duplicates")
    name: str | None = option(None, help="attribute directory (default: Dolma's attribute name for the mode)")
    attribute_name: str | None = option(None, help="attribute key in the files (default: the name)")
    bloom_path: str | None = option(None, help="Bloom filter file shared across shards and runs")
    expected_items: int | None = option(None, help="size a new Bloom filter for this many keys (default: the keys found)")
    fp_rate: float = option(1e-6, help="false-positive rate a new Bloom filter is sized for")
    bloom_size_bytes: int | None = option(None, cli=False)  # an exact size for a new filter (tests, benchmarks)
    read_only: bool = option(False, help="mark hits only, never add (decontamination)")
    key: str | None = option(None, help="documents mode: text (default), id, or a dotted path such as metadata.url")
    ngram: int | None = option(None, help="n-gram size (13 for ngrams, 5-word shingles for minhash)")
    overlap_threshold: float = option(0.5, help="ngrams mode: the share of a paragraph's n-grams seen before that marks it")
    bands: int = option(16, help="minhash: LSH bands")
    rows: int = option(8, help="minhash: rows per band (bands x rows permutations)")
    threshold: float = option(0.8, help="minhash: Jaccard threshold")
    seed: int = option(1, help="minhash: permutation seed")
    buckets: int | None = option(None, help="exact modes and minhash: key buckets, each resolved by its own task (default: one per 256 MB of input, 64 MB for minhash; the result is the same for any number)")
    filter_parts: int | None = option(None, help="Bloom filter modes: tasks the filter step is split into, by ranges of its blocks (default: one per worker; the result is the same for any number)")
    workers: int = option(1, help="processes (results do not depend on it)")

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"dedup mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.ngram is not None and self.ngram < 1:
            raise ConfigError(f"ngram must be >= 1, not {self.ngram}")
        if self.mode == "ngrams" and not 0 < self.overlap_threshold <= 1:
            raise ConfigError(f"overlap_threshold must be in (0, 1], not {self.overlap_threshold}")
        if self.buckets is not None and self.buckets < 1:
            raise ConfigError(f"buckets must be >= 1, not {self.buckets}")
        if self.filter_parts is not None and self.filter_parts < 1:
            raise ConfigError(f"filter_parts must be >= 1, not {self.filter_parts}")
        if self.read_only and self.mode == "minhash":
            raise ConfigError("read_only applies to the Bloom filter modes (documents, paragraphs, ngrams), not minhash")

    @property
    def resolved_name(self) -> str:
        return self.name or DEFAULT_NAMES[self.mode]

    @property
    def resolved_ngram(self) -> int:
        return self.ngram or (5 if self.mode == "minhash" else 13)


def attribute_root(shard: Path, name: str) -> Path:
    """``ROOT/attributes/NAME`` for a shard under ``ROOT/documents/``."""
    return attribute_dir(shard, name)


def dedup(cfg: DedupConfig, *, progress: bool = True, executor: ExecutorConfig | None = None) -> Accounting:
    """Mark duplicates in the document shards of ``cfg.documents``, writing ``attributes/NAME/...``
    next to ``documents/...`` and ``attributes/NAME/_summary.json``. Returns the Accounting (every
    valid document is kept: attributes mark, a later mix drops).

    mode "documents": by ``key`` (None/"text", "id", or a dotted path like "metadata.url"); the first
    occurrence is unmarked. "paragraphs": exact "\\n"-separated paragraphs. "ngrams": a paragraph whose
    word ``ngram``-grams (default 13) were seen before in at least ``overlap_threshold`` of cases.
    Exactly, by hash partitioning (no false positives), unless ``bloom_path`` is given: then through
    that Bloom filter (loaded when it exists, saved after the run unless ``read_only``; sized from
    ``expected_items``/``fp_rate``, by default from the number of keys found), for incremental runs
    and decontamination. "minhash": near-duplicates, ``ngram``-word shingles (default 5),
    ``bands * rows`` permutations, LSH banding, pairs verified at estimated Jaccard >= ``threshold``,
    clusters by union-find. Results do not depend on ``workers``, ``buckets`` or the executor."""
    t0 = time.time()
    cfg.validate()
    if cfg.read_only and (cfg.bloom_path is None or not Path(cfg.bloom_path).exists()):
        raise DataError(f"read_only needs an existing Bloom filter file (bloom_path={cfg.bloom_path})")
    shards = list_shards(cfg.documents)
    if not shards:
        raise DataError(f"no document files found in {', '.join(map(str, cfg.documents))}")
    name = cfg.resolved_name
    outs = [attributes_path(s, name) for s in shards]  # checks the Dolma layout up front
    attr_dirs = sorted({attribute_root(s, name) for s in shards})
    with contextlib.ExitStack() as locks:
        for d in attr_dirs:  # one dedup at a time writes an attribute set
            locks.enter_context(lock_output(d, f"lmforge data dedup --mode {cfg.mode} --name {name}"))
        for d in attr_dirs:
            for stale in d.glob(".dedup-work-*"):  # scratch of a killed run (we hold the lock: nobody else's)
                stale.remove_tree() if isinstance(stale, RemotePath) else shutil.rmtree(stale, ignore_errors=True)
            remove_stale_temporaries(d, recursive=True)
        with scratch_directory(attr_dirs[0], ".dedup-work-") as work:
            local = (executor is None or executor.executor == "local") and not replaying()
            with shared_pool(_workers(cfg, shards) if local else 1):  # one set of processes for all phases
                summary, acct, new_filter = _run(cfg, shards, outs, work, progress, executor)
            summary["accounting"] = acct.to_json()
            summary["seconds"] = round(time.time() - t0, 3)
            for d in attr_dirs:
                atomic_write_text(d / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
            if new_filter is not None:
                # last: a run killed before this point left the filter as it was, so its rerun gives the same marks
                tmp = temp_path_beside(Path(cfg.bloom_path))
                try:
                    shutil.copyfile(new_filter, tmp)
                    commit_file(tmp, cfg.bloom_path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
    return acct


def _buckets(cfg: DedupConfig, shards: list[Path]) -> int:
    """Buckets of the exact modes and MinHash: ``cfg.buckets``, or one per BUCKET_INPUT_BYTES of
    input (MinHash: a quarter of that, its entries carry signatures). The result does not depend on
    it; memory per bucket task does."""
    if cfg.buckets:
        return cfg.buckets
    per = BUCKET_INPUT_BYTES // 4 if cfg.mode == "minhash" else BUCKET_INPUT_BYTES
    return max(1, -(-sum(s.stat().st_size for s in shards) // per))


def _workers(cfg: DedupConfig, shards: list[Path]) -> int:
    """Spawning a worker costs ~0.3 s (numpy import): small inputs run in fewer processes (the output
    never depends on the number of workers)."""
    in_bytes = sum(s.stat().st_size for s in shards)
    return max(1, min(cfg.workers, len(shards), in_bytes // MIN_BYTES_PER_WORKER if MIN_BYTES_PER_WORKER else cfg.workers))


def _run(cfg: DedupConfig, shards: list[Path], outs: list[Path], work: Path, progress: bool, executor: ExecutorConfig | None):
    """The phases over the scratch directory ``work``, each a step on the executor; (summary,
    accounting, the updated Bloom filter's file in ``work`` or None)."""
    workers = _workers(cfg, shards)
    # The Bloom filter step in parts of its blocks, one per worker (the same bits and answers for any
    # number): serial, it was a quarter of paragraph dedup's time on 2 workers, and all of it at scale.
    filter_parts = cfg.filter_parts or workers
    name, attr, ngram = cfg.resolved_name, cfg.attribute_name or cfg.resolved_name, cfg.resolved_ngram
    exact = cfg.mode != "minhash" and cfg.bloom_path is None
    buckets = _buckets(cfg, shards) if exact or cfg.mode == "minhash" else None
    w = str(work)
    run = dict(workers=workers, executor=executor, progress=progress)
    summary: dict[str, Any] = {"mode": cfg.mode, "name": name, "attribute": attr, "shards": len(shards), "workers": workers}
    new_filter = None
    run["more_steps"] = True
    t1 = [KeysTask(work=w, shard=str(s), index=i, mode=cfg.mode, key=cfg.key, ngram=ngram, bands=cfg.bands, rows=cfg.rows, seed=cfg.seed,
                   buckets=buckets) for i, s in enumerate(shards)]
    res1 = run_tasks(phase1, t1, desc=f"dedup {cfg.mode}: keys", describe=lambda t: t.shard, **run)
    tt = time.time()
    if cfg.mode == "minhash":  # LSH entries bucketed by band key, each bucket's pairs found and verified, then one union-find
        offsets = (0, *np.cumsum([r["docs"] for r in res1]).tolist()[:-1])  # each shard's first document
        found = run_tasks(band_bucket_phase, [BandBucketTask(work=w, bucket=j, offsets=offsets, threshold=cfg.threshold) for j in range(buckets)],
                          desc="dedup minhash: band buckets", unit="bucket", describe=lambda t: f"bucket {t.bucket}", **run)
        (stats,) = run_tasks(union_phase, [UnionTask(work=w, buckets=buckets, sizes=tuple(r["docs"] for r in res1))],
                             desc="dedup minhash: clusters", unit="step", describe=lambda t: "union-find", **run)
        summary.update(stats, buckets=buckets, candidate_pairs_per_bucket=sum(r["candidate_pairs"] for r in found))
        summary.update(ngram=ngram, bands=cfg.bands, rows=cfg.rows, num_perm=cfg.bands * cfg.rows, threshold=cfg.threshold, seed=cfg.seed)
    elif exact:
        # a bucket is a sort of its keys: small buckets are quicker here than in newly spawned processes
        key_bytes = 8 * sum(r["distinct_keys"] for r in res1)
        local = dict(run, workers=max(1, min(workers, buckets, key_bytes // MIN_KEY_BYTES_PER_WORKER)))
        found = run_tasks(resolve_bucket, [BucketTask(work=w, bucket=j, shards=len(shards)) for j in range(buckets)],
                          desc=f"dedup {cfg.mode}: buckets", unit="bucket", describe=lambda t: f"bucket {t.bucket}", **local)
        summary.update(keys=sum(r["keys"] for r in res1), distinct_keys_per_shard=sum(r["distinct_keys"] for r in res1),
                       keys_found_earlier=sum(r["found_earlier"] for r in found), buckets=buckets, exact=True)
    else:
        new_filter = str(work / "filter.bin") if not cfg.read_only else None
        parts = filter_parts
        tasks = [FilterTask(work=w, shards=len(shards), bloom_path=cfg.bloom_path, read_only=cfg.read_only, expected_items=cfg.expected_items,
                            bloom_size_bytes=cfg.bloom_size_bytes, fp_rate=cfg.fp_rate, save_to=new_filter, part=p, parts=parts)
                 for p in range(parts)]
        found = run_tasks(filter_phase, tasks, desc=f"dedup {cfg.mode}: Bloom filter", unit="part", describe=lambda t: f"{t.bloom_path} part {t.part}",
                          **dict(run, workers=min(workers, parts)))
        stats = {k: found[0][k] for k in ("created", "bytes", "k")}
        stats["items"] = found[0]["items_before"] + sum(r["items_added"] for r in found)
        if parts > 1 and new_filter is not None:
            (joined,) = run_tasks(filter_join, [FilterJoinTask(work=w, parts=parts, save_to=new_filter, size_bytes=stats["bytes"], k=stats["k"],
                                                              items=stats["items"])], desc=f"dedup {cfg.mode}: Bloom filter file", unit="step", **run)
            stats["estimated_fp_rate"] = joined["estimated_fp_rate"]
        else:
            stats["estimated_fp_rate"] = found[0]["estimated_fp_rate"]
        summary.update(keys=sum(r["keys"] for r in res1), distinct_keys_per_shard=sum(r["distinct_keys"] for r in res1),
                       keys_found_in_filter=sum(r["keys_found_in_filter"] for r in found),
                       bloom_filter={"path": str(cfg.bloom_path), **stats, "parts": parts}, read_only=cfg.read_only)
    if cfg.mode != "minhash":
        summary["key"] = cfg.key if cfg.mode == "documents" else None
        if cfg.mode == "ngrams":
            summary.update(ngram=ngram, overlap_threshold=cfg.overlap_threshold)
        if cfg.mode == "documents":
            summary["documents_without_key"] = sum(r.get("missing_key", 0) for r in res1)
    serial = time.time() - tt
    run["more_steps"] = False
    t3 = [AttributesTask(work=w, index=i, out=str(o), mode=cfg.mode, attribute=attr, buckets=buckets, overlap_threshold=cfg.overlap_threshold,
                         read_only=cfg.read_only, filter_parts=filter_parts if not exact and cfg.mode != "minhash" else 1) for i, o in enumerate(outs)]
    res3 = run_tasks(phase3, t3, desc=f"dedup {cfg.mode}: attributes", describe=lambda t: str(shards[t.index]), **run)
    acct = Accounting()
    for r in res1:
        acct.merge(r["acct"])
    acct.check()
    summary["documents"] = acct.kept
    summary["seconds_serial"] = round(serial, 3)
    for k in ("duplicate_documents", "duplicate_spans", "duplicate_chars", "clustered_documents"):
        if k in res3[0]:
            summary[k] = sum(r[k] for r in res3)
    return summary, acct, new_filter
