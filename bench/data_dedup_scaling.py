"""Exact dedup by hash partitioning against the Bloom-filter path, and the memory of the largest task
as the corpus grows.

    python bench/data_dedup_scaling.py [--sizes 50 100 200] [--shard-mb 12.5] [--bucket-mb 25]
        [--mode paragraphs] [--workers 2] [--root /tmp/lmforge-dedup-scaling] [--json FILE]

For each corpus size (the first ``--base-mb`` MB of this machine's Python sources as documents,
repeated with new ids up to the size, so later copies are duplicates and every size has the same
kind of documents; ``--shard-mb`` MB of text per ``.jsonl.gz`` shard), the same dedup runs two ways on ``--workers`` processes:

* **partitioned** (``lmforge data dedup``, no ``--bloom-path``): keys bucketed by hash, one task
  per bucket (``--bucket-mb`` MB of text per bucket, so buckets grow with the corpus), exact;
* **Bloom** (``--bloom-path``): one task tests and fills a Bloom filter sized for the keys found
  (1e-6), the path of the previous release and of incremental runs.

Speed: MB/s of text, ratio partitioned / Bloom (target >= 1). Memory: the same stage again as a plan
(``lmforge data plan / run-shard / reduce``), every task in its own process, one at a time; each
task's peak RSS (its own VmHWM) minus that of ``lmforge data taggers`` (the command line alone) is its
memory. Printed: the largest task of each step. The target: the largest task's memory on the
partitioned path stays flat as the corpus grows (largest / smallest size <= 1.5), while the Bloom
step's grows with it. Agreement: the Bloom path marks what the exact path marks, plus its false positives (the
filter adds about keys x 1e-6 false positives, which are printed), or the script exits 1.
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


def build_corpus(root: Path, mb: float, shard_mb: float, base_mb: float) -> tuple[int, int]:
    """``mb`` MB of text: the first ``base_mb`` MB of this Python's sources, repeated (new ids) as
    often as needed, so every size has the same kind of documents (the same longest one)."""
    from lmforge.data.documents import write_documents

    marker = root / f".corpus-v3-{mb}-{shard_mb}-{base_mb}"
    if marker.exists():
        return tuple(json.loads(marker.read_text()))  # type: ignore[return-value]
    shutil.rmtree(root, ignore_errors=True)
    base = python_source_docs(int(min(mb, base_mb) * 1e6))
    docs, total, r = [], 0, 0
    while total < mb * 1e6:
        for d in base:
            docs.append({**d, "id": f"{d['id']}#{r}"})
            total += len(d["text"].encode("utf-8"))
            if total >= mb * 1e6:
                break
        r += 1
    sizes = [len(d["text"].encode("utf-8")) for d in docs]
    nbytes = sum(sizes)
    shards = max(1, round(mb / shard_mb))
    # shards of equal text size (documents in order), so a task's input is the same at every corpus size
    cut, acc, bounds = nbytes / shards, 0, [0]
    for i, n in enumerate(sizes):
        acc += n
        if acc >= cut * len(bounds) and len(bounds) < shards:
            bounds.append(i + 1)
    bounds.append(len(docs))
    for k in range(shards):
        write_documents(root / "documents" / f"part-{k:03d}.jsonl.gz", docs[bounds[k] : bounds[k + 1]])
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


_MEASURED = """
import sys
from lmforge.cli import main
code = main(sys.argv[2:]) if len(sys.argv) > 2 else 0
with open("/proc/self/status") as f:
    hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
open(sys.argv[1], "w").write(hwm)
sys.exit(code)
"""


def peak_rss_mb(lmforge_args: list[str]) -> float:
    """Peak resident memory (MB) of ``lmforge ARGS...`` in its own process: its VmHWM, read by
    itself at the end (the high-water mark of its own address space: wait4's would include the
    pages of this big process that the child shared before its exec)."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as out:
        r = subprocess.run([PY, "-c", _MEASURED, out.name, *lmforge_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SystemExit(f"lmforge {' '.join(lmforge_args)} failed: {r.stderr[-2000:]}")
        return int(out.read()) / 1024


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
            mb = peak_rss_mb(["data", "run-shard", str(plan), "--index", str(i)]) - baseline
            per_step[desc] = max(per_step.get(desc, 0.0), mb)
    subprocess.run([PY, "-m", "lmforge", "data", "reduce", str(plan)], check=True, stdout=subprocess.DEVNULL)
    return per_step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[50, 100, 200], help="corpus sizes, MB of text")
    p.add_argument("--shard-mb", type=float, default=12.5)
    p.add_argument("--base-mb", type=float, default=50, help="distinct source text; larger corpora repeat it (more duplicates)")
    p.add_argument("--bucket-mb", type=float, default=25, help="MB of text per bucket of the partitioned path (buckets grow with the corpus)")
    p.add_argument("--mode", default="paragraphs", choices=["documents", "paragraphs", "ngrams"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=2, help="timed runs of each path (alternating; the best counts)")
    p.add_argument("--root", default="/tmp/lmforge-dedup-scaling")
    p.add_argument("--no-memory", action="store_true", help="speed only")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    baseline = peak_rss_mb(["data", "taggers"])  # the command line, and nothing else
    print(f"mode {args.mode}; {args.workers} workers; a process that only imports lmforge peaks at {baseline:.0f} MB (subtracted)")
    busy = Contention()
    rows, ok = [], True
    for size in args.sizes:
        root = Path(args.root) / f"{size:g}mb"
        nbytes, shards = build_corpus(root, size, args.shard_mb, args.base_mb)
        mb = nbytes / 1e6
        in_mb = sum(f.stat().st_size for f in (root / "documents").glob("*.gz")) / 1e6
        buckets = max(1, round(mb / args.bucket_mb))
        bloom = root / "filter.bin"
        t_part = t_bloom = float("inf")
        for _ in range(args.reps):  # alternating, best of each
            t, s_part = timed_dedup(root, args.mode, args.workers, buckets, None)
            t_part = min(t_part, t)
            t, s_bloom = timed_dedup(root, args.mode, args.workers, None, bloom)
            t_bloom = min(t_bloom, t)
        same = (s_part.get("duplicate_documents"), s_part.get("duplicate_spans")) == (s_bloom.get("duplicate_documents"), s_bloom.get("duplicate_spans"))
        extra = (s_bloom.get("duplicate_spans") or 0) - (s_part.get("duplicate_spans") or 0)
        # the Bloom path can only add marks (false positives), about keys x 1e-6 of them; fewer means a bug
        ok &= 0 <= extra <= 10 + 10 * 1e-6 * s_part.get("distinct_keys_per_shard", 0)
        row = {"text_mb": round(mb, 1), "input_mb": round(in_mb, 1), "shards": shards, "buckets": buckets, "partitioned_s": round(t_part, 2),
               "bloom_s": round(t_bloom, 2), "speed_ratio": round(t_bloom / t_part, 3), "same_marks": same, "bloom_extra_spans": extra,
               "middle_step_s": {"partitioned": s_part["seconds_serial"], "bloom": s_bloom["seconds_serial"]},
               "duplicate_documents": s_part.get("duplicate_documents"), "duplicate_spans": s_part.get("duplicate_spans")}
        print(f"{mb:6.1f} MB text ({in_mb:5.1f} MB gz, {shards} shards, {buckets} buckets): partitioned {t_part:6.2f}s ({mb / t_part:5.1f} MB/s)"
              f"  Bloom {t_bloom:6.2f}s ({mb / t_bloom:5.1f} MB/s)  ratio {t_bloom / t_part:.2f}x  marks "
              f"{'equal' if same else f'+{extra} span(s) by the Bloom filter (false positives)'} ({s_part.get('duplicate_documents')} docs, "
              f"{s_part.get('duplicate_spans')} spans; middle step {s_part['seconds_serial']:.2f}s vs {s_bloom['seconds_serial']:.2f}s)")
        if not args.no_memory:
            row["memory_partitioned_mb"] = task_memory(root, Path(args.root) / "plans", args.mode, buckets, None, baseline)
            row["memory_bloom_mb"] = task_memory(root, Path(args.root) / "plans", args.mode, None, bloom, baseline)
            fmt = lambda d: ", ".join(f"{k} {v:.0f}" for k, v in d.items())  # noqa: E731
            print(f"        largest task per step, MB above baseline: partitioned [{fmt(row['memory_partitioned_mb'])}]   "
                  f"Bloom [{fmt(row['memory_bloom_mb'])}]")
        rows.append(row)
    if not args.no_memory and len(rows) > 1:
        first, last = rows[0], rows[-1]
        peak = lambda r, k: max(r[k].values())  # noqa: E731
        growth_p = peak(last, "memory_partitioned_mb") / max(peak(first, "memory_partitioned_mb"), 1.0)
        bloom_step = lambda r: r["memory_bloom_mb"].get("Bloom filter", 0.0)  # noqa: E731
        growth_b = bloom_step(last) / max(bloom_step(first), 1.0)
        ok &= growth_p <= 1.5
        growth_m = last["memory_partitioned_mb"].get("buckets", 0.0) / max(first["memory_partitioned_mb"].get("buckets", 0.0), 1.0)
        print(f"{last['text_mb']:.0f} MB vs {first['text_mb']:.0f} MB corpus: the partitioned path's largest task x{growth_p:.2f}, its bucket step x{growth_m:.2f} "
              f"({'flat: ok' if growth_p <= 1.5 else 'GROWS: missed'}); the Bloom filter step x{growth_b:.2f} "
              f"({bloom_step(first):.0f} -> {bloom_step(last):.0f} MB)")
    report(args, busy.report(), mode=args.mode, workers=args.workers, rows=rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
