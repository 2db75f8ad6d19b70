"""Exact dedup by hash partitioning against the Bloom-filter path, and the memory of the largest task
as the corpus grows.

    python bench/data_dedup_scaling.py [--sizes 50 100 200] [--shard-mb 12.5] [--bucket-mb 25]
        [--mode paragraphs] [--workers 2] [--root /tmp/lmforge-dedup-scaling] [--json FILE]

For each corpus size (this machine's Python sources as documents, cycled with new ids when the
size asks for more, so later copies are duplicates; ``--shard-mb`` MB of text per ``.jsonl.gz``
shard), the same dedup runs two ways on ``--workers`` processes:

* **partitioned** (``lmforge data dedup``, no ``--bloom-path``): keys bucketed by hash, one task
  per bucket (``--bucket-mb`` MB of input per bucket, so buckets grow with the corpus), exact;
* **Bloom** (``--bloom-path``): one task tests and fills a Bloom filter sized for the keys found
  (1e-6), the path of the previous release and of incremental runs.

Speed: MB/s of text, ratio partitioned / Bloom (target >= 1). Memory: the same stage again as a plan
(``lmforge data plan / run-shard / reduce``), every task in its own process, one at a time; each
task's peak RSS (``wait4``) minus an idle ``python -c "import lmforge.corpus.dedup"``'s is its
memory. Printed: the largest task of each step. The target: the largest task's memory on the
partitioned path stays flat as the corpus grows (largest / smallest size <= 1.5), while the Bloom
step's grows with it. Agreement: both paths mark the same documents and spans (at 1e-6 a Bloom
false positive is unlikely at these sizes; any difference is printed), or the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Contention, python_source_docs, report  # noqa: E402

PY = sys.executable


def build_corpus(root: Path, mb: float, shard_mb: float) -> tuple[int, int]:
    from lmforge.data.documents import write_documents

    marker = root / f".corpus-{mb}-{shard_mb}"
    if marker.exists():
        return tuple(json.loads(marker.read_text()))  # type: ignore[return-value]
    shutil.rmtree(root, ignore_errors=True)
    docs = python_source_docs(int(mb * 1e6), cycle=True)
    shards = max(1, round(mb / shard_mb))
    per = math.ceil(len(docs) / shards)
    for k in range(shards):
        write_documents(root / "documents" / f"part-{k:03d}.jsonl.gz", docs[k * per : (k + 1) * per])
    nbytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    marker.write_text(json.dumps([nbytes, shards]))
    return nbytes, shards


def timed_dedup(root: Path, mode: str, workers: int, buckets: int | None, bloom: Path | None) -> tuple[float, dict]:
    from lmforge.corpus.dedup import DedupConfig, dedup

    name = "bench_bloom" if bloom else "bench_part"
    shutil.rmtree(root / "attributes" / name, ignore_errors=True)
    if bloom:
        bloom.unlink(missing_ok=True)
    cfg = DedupConfig(documents=[str(root / "documents")], mode=mode, name=name, workers=workers, buckets=buckets,
                      bloom_path=str(bloom) if bloom else None, fp_rate=1e-6)
    t0 = time.perf_counter()
    dedup(cfg, progress=False)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((root / "attributes" / name / "_summary.json").read_text())


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MB) of one child process, from wait4."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def task_memory(root: Path, plans: Path, mode: str, buckets: int | None, bloom: Path | None, baseline: float) -> dict[str, float]:
    """The stage as a plan, each task alone in its process: the largest task's memory per step (MB above baseline)."""
    from lmforge.cli.data_plan import status
    from lmforge.corpus.plan import PlanStore

    name = "bench_mem_bloom" if bloom else "bench_mem_part"
    shutil.rmtree(root / "attributes" / name, ignore_errors=True)
    shutil.rmtree(plans, ignore_errors=True)
    if bloom:
        bloom.unlink(missing_ok=True)
    plan = plans / "plan.json"
    argv = ["dedup", "--documents", str(root / "documents"), "--mode", mode, "--name", name]
    argv += ["--bloom-path", str(bloom)] if bloom else ["--buckets", str(buckets)]
    subprocess.run([PY, "-m", "lmforge", "data", "plan", "--out", str(plan), *argv], check=True, stdout=subprocess.DEVNULL)
    per_step: dict[str, float] = {}
    while True:
        s = status(PlanStore.open(plan))
        if s["current_step"] is None:
            break
        desc = s["steps"][s["current_step"]]["desc"].split(": ", 1)[-1]
        for i in range(s["current_tasks"]):
            mb = peak_rss_mb([PY, "-m", "lmforge", "data", "run-shard", str(plan), "--index", str(i)]) - baseline
            per_step[desc] = max(per_step.get(desc, 0.0), mb)
    subprocess.run([PY, "-m", "lmforge", "data", "reduce", str(plan)], check=True, stdout=subprocess.DEVNULL)
    return per_step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[50, 100, 200], help="corpus sizes, MB of text")
    p.add_argument("--shard-mb", type=float, default=12.5)
    p.add_argument("--bucket-mb", type=float, default=25, help="input MB per bucket (of the partitioned path)")
    p.add_argument("--mode", default="paragraphs", choices=["documents", "paragraphs", "ngrams"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--root", default="/tmp/lmforge-dedup-scaling")
    p.add_argument("--no-memory", action="store_true", help="speed only")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    baseline = peak_rss_mb([PY, "-c", "import lmforge.corpus.dedup, lmforge.cli.data"])
    print(f"mode {args.mode}; {args.workers} workers; a process that only imports lmforge peaks at {baseline:.0f} MB (subtracted)")
    busy = Contention()
    rows, ok = [], True
    for size in args.sizes:
        root = Path(args.root) / f"{size:g}mb"
        nbytes, shards = build_corpus(root, size, args.shard_mb)
        mb = nbytes / 1e6
        in_mb = sum(f.stat().st_size for f in (root / "documents").glob("*.gz")) / 1e6
        buckets = max(1, math.ceil(in_mb / args.bucket_mb))
        bloom = root / "filter.bin"
        t_part, s_part = timed_dedup(root, args.mode, args.workers, buckets, None)
        t_bloom, s_bloom = timed_dedup(root, args.mode, args.workers, None, bloom)
        same = (s_part.get("duplicate_documents"), s_part.get("duplicate_spans")) == (s_bloom.get("duplicate_documents"), s_bloom.get("duplicate_spans"))
        ok &= same
        row = {"text_mb": round(mb, 1), "input_mb": round(in_mb, 1), "shards": shards, "buckets": buckets, "partitioned_s": round(t_part, 2),
               "bloom_s": round(t_bloom, 2), "speed_ratio": round(t_bloom / t_part, 3), "same_marks": same,
               "duplicate_documents": s_part.get("duplicate_documents"), "duplicate_spans": s_part.get("duplicate_spans")}
        print(f"{mb:6.1f} MB text ({in_mb:5.1f} MB gz, {shards} shards, {buckets} buckets): partitioned {t_part:6.2f}s ({mb / t_part:5.1f} MB/s)"
              f"  Bloom {t_bloom:6.2f}s ({mb / t_bloom:5.1f} MB/s)  ratio {t_bloom / t_part:.2f}x  marks "
              f"{'equal' if same else 'DIFFER'} ({s_part.get('duplicate_documents')} docs, {s_part.get('duplicate_spans')} spans)")
        if not args.no_memory:
            row["memory_partitioned_mb"] = task_memory(root, Path(args.root) / "plans", args.mode, buckets, None, baseline)
            row["memory_bloom_mb"] = task_memory(root, Path(args.root) / "plans", args.mode, None, bloom, baseline)
            fmt = lambda d: ", ".join(f"{k} {v:.0f}" for k, v in d.items())  # noqa: E731
            print(f"        largest task per step, MB above baseline: partitioned [{fmt(row['memory_partitioned_mb'])}]   "
                  f"Bloom [{fmt(row['memory_bloom_mb'])}]")
        rows.append(row)
    if not args.no_memory and len(rows) > 1:
        peak = lambda r, k: max(r[k].values())  # noqa: E731
        growth_p = peak(rows[-1], "memory_partitioned_mb") / max(peak(rows[0], "memory_partitioned_mb"), 1.0)
        growth_b = peak(rows[-1], "memory_bloom_mb") / max(peak(rows[0], "memory_bloom_mb"), 1.0)
        print(f"largest task, {rows[-1]['text_mb']:.0f} MB vs {rows[0]['text_mb']:.0f} MB corpus: partitioned x{growth_p:.2f} "
              f"({'flat: ok' if growth_p <= 1.5 else 'GROWS'}), Bloom x{growth_b:.2f}")
    report(args, busy.report(), mode=args.mode, workers=args.workers, rows=rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
