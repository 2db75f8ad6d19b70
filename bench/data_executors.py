"""The Ray executor against the local process pool, same stage, same number of workers, same files.

    python bench/data_executors.py [--mb 30] [--shards 16] [--workers 2] [--reps 2] [--cluster]
        [--root /tmp/lmforge-exec-bench] [--json FILE]

The corpus: this machine's Python sources as Dolma documents (``bench/_common.python_source_docs``),
``--shards`` ``.jsonl.gz`` files under ``ROOT/documents/``. Stages: ``tag`` (gopher_quality, pii) and
``tokenize`` (the GPT-NeoX PII tokenizer, as in data_tokenize_vs_dolma.py). Each runs on the local
pool (``--workers`` processes) and on Ray (a Ray of ``--workers`` CPUs on 127.0.0.1, started once
before the timed runs, as a cluster is: ``ray start`` then ``--ray-address auto``; its start-up time
is printed apart), alternating, ``--reps`` times; the best time of each is kept. Prints MB/s of document text and the ratio local time / Ray time (1: no overhead;
the target is >= 0.8). ``--cluster`` also runs both stages once on a simulated two-node Ray cluster
(``ray.cluster_utils.Cluster`` on 127.0.0.1) and checks its outputs.

Agreement: the outputs of every run (attribute files; token and metadata files) must be
byte-identical across executors, or the script exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Contention, python_source_docs, report  # noqa: E402


def build_corpus(root: Path, mb: float, shards: int) -> int:
    from lmforge.data.documents import write_documents

    marker = root / f".corpus-{mb}-{shards}"
    if marker.exists():
        return int(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    docs = python_source_docs(int(mb * 1e6), cycle=True)
    for k in range(shards):
        write_documents(root / "documents" / f"part-{k:03d}.jsonl.gz", docs[k::shards])
    nbytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    marker.write_text(str(nbytes))
    return nbytes


def digest(d: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for f in sorted(d.glob(pattern)):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def run_tag(root: Path, workers: int, executor) -> tuple[float, str]:
    from lmforge.corpus.taggers import tag

    shutil.rmtree(root / "attributes", ignore_errors=True)
    t0 = time.perf_counter()
    tag(str(root / "documents"), ["gopher_quality", "pii"], "bench", workers=workers, progress=False, executor=executor)
    return time.perf_counter() - t0, digest(root / "attributes" / "bench", "*.jsonl.gz")


def run_tokenize(root: Path, tokenizer: str, workers: int, executor) -> tuple[float, str]:
    from lmforge.corpus.tokenize import TokenizeConfig, tokenize

    out = root.parent / (root.name + "-tokens")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    tokenize(TokenizeConfig(documents=[str(root / "documents")], tokenizer=tokenizer, eos_id=0, pad_id=1, workers=workers, out=str(out)),
             progress=False, executor=executor)
    return time.perf_counter() - t0, digest(out, "part-*")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=30)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--cluster", action="store_true", help="also run on a simulated two-node Ray cluster and compare its outputs")
    p.add_argument("--root", default="/tmp/lmforge-exec-bench")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import ray

    from lmforge.corpus.executors import ExecutorConfig
    from lmforge.tokenizer.olmo import fetch_olmo_tokenizers

    root = Path(args.root)
    nbytes = build_corpus(root, args.mb, args.shards)
    tokenizer = fetch_olmo_tokenizers()["gpt-neox-pii"]
    mb = nbytes / 1e6
    print(f"corpus: {mb:.1f} MB of text in {args.shards} shards; {args.workers} workers; Ray {ray.__version__}")
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    print(f"Ray started in {time.perf_counter() - t0:.1f}s (not in the times below)")
    busy = Contention()
    stages = {"tag (gopher_quality + pii)": lambda ex: run_tag(root, args.workers, ex),
              "tokenize (gpt-neox-pii)": lambda ex: run_tokenize(root, tokenizer, args.workers, ex)}
    results, ok = {}, True
    for name, fn in stages.items():
        best = {"local": float("inf"), "ray": float("inf")}
        digests = set()
        for _ in range(args.reps):
            for kind, ex in (("local", None), ("ray", ExecutorConfig(executor="ray"))):
                seconds, d = fn(ex)
                best[kind] = min(best[kind], seconds)
                digests.add(d)
        if args.cluster:
            from ray.cluster_utils import Cluster

            ray.shutdown()
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            try:
                digests.add(fn(ExecutorConfig(executor="ray", ray_address=c.address))[1])
            finally:
                c.shutdown()
                ray.init(address="local", num_cpus=args.workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                         configure_logging=True, logging_level="WARNING")
        same = len(digests) == 1
        ok &= same
        ratio = best["local"] / best["ray"]
        results[name] = {"local_s": round(best["local"], 2), "ray_s": round(best["ray"], 2), "ratio": round(ratio, 3), "identical": same}
        print(f"{name:30s} local {best['local']:6.2f}s ({mb / best['local']:5.2f} MB/s)   ray {best['ray']:6.2f}s ({mb / best['ray']:5.2f} MB/s)"
              f"   local/ray {ratio:.2f}x {'(>= 0.8: ok)' if ratio >= 0.8 else '(< 0.8: MISSED)'}   outputs "
              f"{'identical' if same else 'DIFFER'}{' (incl. 2-node cluster)' if args.cluster else ''}")
    ray.shutdown()
    report(args, busy.report(), corpus_mb=round(mb, 2), shards=args.shards, workers=args.workers, results=results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
