"""lmforge's dedup against dolma 1.2.1's Rust deduper on the same Dolma-format corpus.

    python bench/data_dedup_vs_dolma.py [--mb 50] [--workers 2] [--root /tmp/lmforge-dedup-bench]
        [--dolma /tmp/dolma-venv/bin/dolma] [--modes documents paragraphs ngrams minhash]

The corpus: this machine's Python standard library ``.py`` files as documents (sorted, then those of
its site-packages, up to ``--mb`` MB of text), 10% of them repeated in a later shard, written as 8 ``.jsonl.gz`` shards under
``ROOT/documents/``. Each mode runs dolma (``--processes W``, ``HF_HUB_OFFLINE=1``; see
shared/bench/README.md) and then lmforge (``workers=W``) on the same files, each with a fresh Bloom
filter of the same size (EXPECTED items, 1e-6 target false-positive rate), and prints MB/s of document text (UTF-8, uncompressed),
the ratio to dolma and how many documents / spans each marked. MinHash has no dolma counterpart
(shown alone). Both run as commands (`dolma dedupe`, `lmforge data dedup`): times are wall clock,
interpreter start-up and imports included for both; ``--reps N`` alternates N runs of each and
shows the median.

Agreement: where dolma ran, exact document and paragraph dedup must mark as many documents and
spans as dolma (which copy counts as "first" may differ, the counts do not), within 0.05%: dolma's
own counts vary that much from run to run (its threads update the Bloom filter in no fixed order;
lmforge's are the same every run); otherwise the script exits 1. 13-gram counts differ by design (word splitting) and are only shown.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python_source_docs  # noqa: E402

from lmforge.data.documents import read_attributes

SHARDS = 8
EXPECTED = {"documents": 2_000_000, "paragraphs": 2_000_000, "ngrams": 10_000_000}  # Bloom sizing, same for both


def build_corpus(root: Path, mb: float, seed: int = 0) -> tuple[int, int]:
    docs_dir = root / "documents"
    marker = root / f".corpus-{mb}"
    if marker.exists():
        return tuple(json.loads(marker.read_text()))  # type: ignore[return-value]
    shutil.rmtree(root, ignore_errors=True)
    docs_dir.mkdir(parents=True)
    docs = python_source_docs(int(mb * 0.9e6))
    rng = random.Random(seed)
    dups = [dict(d, id=d["id"] + "#dup") for d in rng.sample(docs, len(docs) // 10)]
    everything = docs + dups
    shards = [everything[i::SHARDS] for i in range(SHARDS)]
    total = 0
    for i, shard in enumerate(shards):
        with gzip.open(docs_dir / f"part-{i:02d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=6) as fh:
            for d in shard:
                fh.write(json.dumps(d) + "\n")
                total += len(d["text"].encode("utf-8"))
    marker.write_text(json.dumps([len(everything), total]))
    return len(everything), total


def count_marks(root: Path, name: str, key: str) -> tuple[int, int]:
    docs = spans = 0
    for f in sorted((root / "attributes" / name).glob("*.jsonl.gz")):
        for row in read_attributes(f):
            s = row["attributes"].get(key) or []
            docs += bool(s)
            spans += len(s)
    return docs, spans


def run_dolma(dolma: str, root: Path, mode: str, workers: int, name: str) -> float:
    bf = root / f"{name}.bloom"
    bf.unlink(missing_ok=True)
    cmd = [dolma, "dedupe", "--documents", str(root / "documents" / "*.jsonl.gz"), "--dedupe.name", name]
    if mode == "documents":
        cmd += ["--dedupe.documents.attribute_name", name, "--dedupe.documents.key", "$.text"]
    else:
        cmd += ["--dedupe.paragraphs.attribute_name", name]
    if mode == "ngrams":
        cmd += ["--dedupe.paragraphs.by_ngram.ngram_length", "13", "--dedupe.paragraphs.by_ngram.stride", "1",
                "--dedupe.paragraphs.by_ngram.overlap_threshold", "0.5"]  # fmt: skip
    cmd += ["--dedupe.skip_empty", "--bloom_filter.file", str(bf), "--no-bloom_filter.read_only",
            "--bloom_filter.estimated_doc_count", str(EXPECTED[mode]),
            "--bloom_filter.desired_false_positive_rate", "1e-6", "--processes", str(workers)]  # fmt: skip
    shutil.rmtree(root / "attributes" / name, ignore_errors=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"dolma failed ({r.returncode}): {r.stderr[-2000:]}")
    return dt


def run_lmforge(root: Path, mode: str, workers: int, name: str) -> float:
    """``lmforge data dedup`` as a command, like dolma's: interpreter start-up and imports included."""
    bf = root / f"{name}.bloom"
    bf.unlink(missing_ok=True)
    shutil.rmtree(root / "attributes" / name, ignore_errors=True)
    cmd = [sys.executable, "-c", "import sys; from lmforge.cli import main; sys.exit(main())", "data", "dedup", "--documents", str(root / "documents"), "--mode", mode, "--name", name,
           "--workers", str(workers), "--no-progress"]
    if mode != "minhash":
        cmd += ["--bloom-path", str(bf), "--fp-rate", "1e-6", "--expected-items", str(EXPECTED[mode])]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"lmforge failed ({r.returncode}): {r.stderr[-2000:]}")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", default="/tmp/lmforge-dedup-bench")
    ap.add_argument("--dolma", default="/tmp/dolma-venv/bin/dolma")
    ap.add_argument("--modes", nargs="+", default=["documents", "paragraphs", "ngrams", "minhash"])
    ap.add_argument("--no-dolma", action="store_true")
    ap.add_argument("--reps", type=int, default=1, help="runs of each tool per mode, alternating; the median time of each is shown")
    a = ap.parse_args(argv)
    root = Path(a.root)
    n_docs, n_bytes = build_corpus(root, a.mb)
    gz = sum(f.stat().st_size for f in (root / "documents").glob("*.jsonl.gz"))
    mb = n_bytes / 1e6
    print(f"corpus: {n_docs:,} documents, {mb:.1f} MB of text ({gz / 1e6:.1f} MB gzipped) in {SHARDS} shards; workers/processes {a.workers}")
    have_dolma = not a.no_dolma and Path(a.dolma).exists()
    print(f"{'mode':<11} {'dolma MB/s':>10} {'lmforge MB/s':>12} {'ratio':>6}   marked docs/spans dolma | lmforge")
    disagree = []
    for mode in a.modes:
        d_rate = d_docs = d_spans = None
        d_times, l_times = [], []
        for _ in range(a.reps):
            if have_dolma and mode != "minhash":
                d_times.append(run_dolma(a.dolma, root, mode, a.workers, f"dolma_{mode}"))
            l_times.append(run_lmforge(root, mode, a.workers, f"lmf_{mode}"))
        if d_times:
            d_rate = mb / statistics.median(d_times)
            d_docs, d_spans = count_marks(root, f"dolma_{mode}", f"dolma_{mode}")
        l_rate = mb / statistics.median(l_times)
        if a.reps > 1:
            show = lambda ts: " ".join(f"{mb / t:.1f}" for t in ts)  # noqa: E731
            print(f"  {mode} runs, MB/s: dolma {show(d_times) or '-'} | lmforge {show(l_times)}", flush=True)
        key = f"lmf_{mode}_is_duplicate" if mode == "minhash" else f"lmf_{mode}"
        l_docs, l_spans = count_marks(root, f"lmf_{mode}", key)
        ratio = f"{l_rate / d_rate:6.2f}" if d_rate else "     -"
        dcol = f"{d_docs:,}/{d_spans:,}" if d_rate else "-"
        # dolma's threaded dedup marks a few more or fewer from run to run (its Bloom filter is updated
        # by threads in no fixed order): counts must agree within 0.05% (a handful per million)
        differs = d_rate is not None and mode in ("documents", "paragraphs") and any(
            abs(x - y) > max(2, 5e-4 * max(x, y)) for x, y in ((d_docs, l_docs), (d_spans, l_spans)))
        if differs:
            disagree.append(mode)
        print(f"{mode:<11} {d_rate or 0:>10.1f} {l_rate:>12.1f} {ratio}   {dcol} | {l_docs:,}/{l_spans:,}" + ("  << DIFFERENT" if differs else ""), flush=True)
    if disagree:
        print(f"lmforge and dolma marked different numbers of duplicates: {', '.join(disagree)}", flush=True)
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
