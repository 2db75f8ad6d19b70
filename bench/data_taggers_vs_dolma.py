"""Tagger throughput: lmforge.corpus.taggers against dolma 1.2.1's taggers, on the same files.

Builds a Dolma-format corpus (one document per file of this Python's standard library: ``.py``
sources and text/reST docs, ~30 MB of text) as gzipped JSONL shards under ``WORK/documents/``, then
times, one tagger set at a time, each as a fresh process (start-up included):

    dolma:   dolma tag --documents "WORK/documents/*.jsonl.gz" --taggers T --processes N
    lmforge: lmforge.corpus.taggers.tag(WORK/documents, [...], workers=N)

Pairs compared (dolma's ``gopher_v1`` computes both Gopher quality and repetition values, so it is
matched by lmforge's two Gopher taggers run together)::

    gopher_v1                      <-> gopher_quality + gopher_repetition
    c4_v2                          <-> c4
    pii_regex_with_counts_fast_v2  <-> pii

MB/s = UTF-8 megabytes (1e6) of document text / wall seconds (the fastest of ``--repeat`` runs,
dolma and lmforge alternating); "(in-proc)" is lmforge's own time inside ``tag()``. Usage::

    python bench/data_taggers_vs_dolma.py [--dolma /tmp/dolma-venv/bin/dolma] [--mb 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python_source_docs  # noqa: E402

PAIRS = [
    ("gopher_v1", ["gopher_quality", "gopher_repetition"]),
    ("c4_v2", ["c4"]),
    ("pii_regex_with_counts_fast_v2", ["pii"]),
]


def build_corpus(root: Path, target_mb: float, shards: int) -> tuple[int, int]:
    """Write ``root/documents/part-XX.jsonl.gz``; returns (documents, text bytes)."""
    docs_dir = root / "documents"
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    docs = python_source_docs(int(target_mb * 1e6), suffixes=(".py", ".txt", ".rst"), cycle=True)
    for d in docs:  # dolma's documents carry these fields; keep them for a like-for-like read
        d.update(added="2026-01-01T00:00:00Z", created="2026-01-01T00:00:00Z", metadata={})
    total = sum(len(d["text"].encode("utf-8")) for d in docs)
    outs = [gzip.open(docs_dir / f"part-{i:02d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) for i in range(shards)]
    for i, d in enumerate(docs):
        outs[i % shards].write(json.dumps(d) + "\n")
    for f in outs:
        f.close()
    return len(docs), total


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dolma", default="/tmp/dolma-venv/bin/dolma", help="dolma executable ('' to skip dolma)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "lmforge-bench-taggers"))
    ap.add_argument("--mb", type=float, default=30.0, help="megabytes of document text")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each command, alternating dolma and lmforge; the fastest counts")
    ap.add_argument("--only", choices=[d for d, _ in PAIRS], nargs="*", help="run only these pairs (dolma names)")
    args = ap.parse_args()

    root = Path(args.work)
    n_docs, n_bytes = build_corpus(root, args.mb, args.shards)
    mb = n_bytes / 1e6
    print(f"corpus: {n_docs:,} documents, {mb:.1f} MB of text, {args.shards} shards, {args.workers} processes, {os.cpu_count()} CPUs")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    have_dolma = bool(args.dolma) and Path(args.dolma).exists()
    rows = []
    for dolma_name, ours in PAIRS:
        if args.only and dolma_name not in args.only:
            continue
        d_times, l_times, inner_times = [], [], []
        exp_l = "bench_lmforge_" + "_".join(ours)
        code = (
            "from lmforge.corpus.taggers import tag; "
            f"tag({str(root / 'documents')!r}, {ours!r}, {exp_l!r}, workers={args.workers}, overwrite=True, progress=False)"
        )
        for _ in range(args.repeat):  # alternate, so a change in machine load hits both sides alike
            if have_dolma:
                exp_d = f"bench_dolma_{dolma_name}"
                shutil.rmtree(root / "attributes" / exp_d, ignore_errors=True)
                with tempfile.TemporaryDirectory() as wi, tempfile.TemporaryDirectory() as wo:
                    d_times.append(timed(
                        [args.dolma, "tag", "--documents", str(root / "documents" / "*.jsonl.gz"), "--taggers", dolma_name,
                         "--experiment", exp_d, "--processes", str(args.workers), "--work_dir.input", wi, "--work_dir.output", wo],
                        env,
                    ))
            shutil.rmtree(root / "attributes" / exp_l, ignore_errors=True)
            l_times.append(timed([sys.executable, "-c", code], env))
            inner_times.append(json.loads((root / "attributes" / exp_l / "_summary.json").read_text())["seconds"])
        d_s, l_s, inner = (min(d_times) if d_times else None), min(l_times), min(inner_times)
        rows.append((dolma_name, "+".join(ours), d_s, l_s, inner))

    print(f"\n{'dolma tagger':32s} {'dolma MB/s':>10s}   {'lmforge tagger(s)':36s} {'lmforge MB/s':>12s} {'(in-proc)':>9s} {'ratio':>6s}")
    for dolma_name, ours, d_s, l_s, inner in rows:
        d = f"{mb / d_s:10.2f}" if d_s else f"{'n/a':>10s}"
        ratio = f"{d_s / l_s:5.2f}x" if d_s else "   n/a"
        print(f"{dolma_name:32s} {d}   {ours:36s} {mb / l_s:12.2f} {mb / inner:9.2f} {ratio:>6s}")
    if not have_dolma:
        print(f"(dolma not found at {args.dolma!r}: only lmforge was timed)")


if __name__ == "__main__":
    main()
