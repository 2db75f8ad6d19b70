#!/usr/bin/env python
"""Side-by-side CPU benchmark: ``lmforge.corpus.tokenize`` vs ``dolma tokens`` (dolma 1.2.1).

Corpus: this machine's Python standard library ``.py`` files as Dolma documents (one file = one
document, id = its relative path), about ``--mb`` MB of text, in ``--shards`` ``.jsonl.gz`` shards
under ``ROOT/documents/``. Tokenizer: GPT-NeoX PII (``load_olmo_tokenizer('gpt-neox-pii')``: EOS 0,
PAD 1), uint16. Both sides use ``--processes`` worker processes on the same files:

    HF_HUB_OFFLINE=1 DOLMA --documents "ROOT/documents/*.jsonl.gz" --destination OUT \
        --tokenizer.name_or_path TOK.json --tokenizer.eos_token_id 0 --tokenizer.pad_token_id 1 \
        --processes 2 --dtype uint16
    lmforge.corpus.tokenize.tokenize(ROOT/documents, TOK.json, OUT, workers=2, strip_whitespace=True)

``strip_whitespace=True`` because dolma strips each text before tokenizing; with it both sides
must give the same token count and, document by document (matched by id through the metadata
files; dolma shuffles document order), the same ids. The script checks that, then prints input
MB/s, tokens/s and ``ratio = lmforge tokens/s / dolma tokens/s`` (above 1: lmforge faster). Each
side runs ``--reps`` times alternately into a fresh directory; the figure is the best run. On a
shared machine wall times swing with other users' load, so the script also reports CPU seconds
(both sides' processes, children included) and their ratio, which is what the wall ratio would be
on otherwise idle cores, plus the CPU time other processes used meanwhile.

    python bench/data_tokenize_vs_dolma.py                 # ~40 MB, 2 processes
    python bench/data_tokenize_vs_dolma.py --mb 10 --reps 1   # quick
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python_source_docs  # noqa: E402

import numpy as np

DOLMA = "/tmp/dolma-venv/bin/dolma"


def build_corpus(root: Path, mb: float, shards: int) -> tuple[int, int]:
    """Write the stdlib corpus (once; reused when the same size exists). Returns (docs, text bytes)."""
    docs_dir = root / "documents"
    stamp = root / "corpus.json"
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        if info.get("mb") == mb and info.get("shards") == shards:
            return info["docs"], info["bytes"]
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.mkdir(parents=True)
    docs = python_source_docs(int(mb * 1e6))
    total = sum(len(d["text"].encode("utf-8")) for d in docs)
    per = -(-len(docs) // shards)
    for i in range(shards):
        with gzip.open(docs_dir / f"stdlib-{i:03d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as f:
            for d in docs[i * per : (i + 1) * per]:
                f.write(json.dumps(d) + "\n")
    stamp.write_text(json.dumps({"mb": mb, "shards": shards, "docs": len(docs), "bytes": total}))
    return len(docs), total


def _child_cpu() -> float:
    """User + system CPU seconds of finished child processes (their own children included)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_dolma(root: Path, out: Path, tok: Path, processes: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        DOLMA, "tokens",
        "--documents", str(root / "documents" / "*.jsonl.gz"),
        "--destination", str(out),
        "--tokenizer.name_or_path", str(tok),
        "--tokenizer.eos_token_id", "0",
        "--tokenizer.pad_token_id", "1",
        "--processes", str(processes),
        "--dtype", "uint16",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0, c0 = time.perf_counter(), _child_cpu()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if r.returncode:
        sys.exit(f"dolma tokens failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    return dt, cpu


def run_lmforge(root: Path, out: Path, tok: Path, processes: int, engine: str = "auto") -> float:
    # a fresh interpreter, like the dolma CLI, so start-up costs are counted the same way
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "from lmforge.corpus.tokenize import TokenizeConfig, tokenize;"
        f"tokenize(TokenizeConfig(documents=[{str(root / 'documents')!r}], tokenizer={str(tok)!r}, out={str(out)!r}, workers={processes}, "
        f"strip_whitespace=True, engine={engine!r}), progress=False)"
    )
    t0, c0 = time.perf_counter(), _child_cpu()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if r.returncode:
        sys.exit(f"lmforge tokenize failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    return dt, cpu


def docs_by_id(out: Path, dtype) -> dict[str, np.ndarray]:
    from lmforge.data.token_files import read_metadata

    found = {}
    for npy in sorted(out.rglob("*.npy")):
        toks = np.memmap(npy, dtype=dtype, mode="r")
        for r in read_metadata(npy):
            found[r.id] = np.array(toks[r.start : r.end])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/tmp/lmforge-bench-tokenize", help="corpus and outputs go here")
    ap.add_argument("--mb", type=float, default=40.0, help="MB of text in the corpus")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--engine", default="auto", help="lmforge's BPE engine: auto | hf | tiktoken")
    args = ap.parse_args()

    from lmforge.tokenizer import default_cache_dir, load_olmo_tokenizer

    load_olmo_tokenizer("gpt-neox-pii")  # makes sure the file is cached
    tok = default_cache_dir() / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    if not Path(DOLMA).is_file():
        sys.exit(f"{DOLMA} not found: install dolma==1.2.1 into /tmp/dolma-venv")
    root = Path(args.root)
    ndocs, nbytes = build_corpus(root, args.mb, args.shards)
    print(f"corpus: {ndocs:,} documents, {nbytes / 1e6:.1f} MB of text in {args.shards} shards; {args.processes} processes; cpus {os.cpu_count()}")

    from _common import Contention, machine_line

    print(machine_line())
    contention = Contention()
    times: dict[str, list[float]] = {"dolma": [], "lmforge": []}
    cpus: dict[str, list[float]] = {"dolma": [], "lmforge": []}
    for rep in range(args.reps):
        order = ("dolma", "lmforge") if rep % 2 == 0 else ("lmforge", "dolma")
        for side in order:
            if side == "dolma":
                wall, cpu = run_dolma(root, root / f"out-{side}", tok, args.processes)
            else:
                wall, cpu = run_lmforge(root, root / f"out-{side}", tok, args.processes, args.engine)
            times[side].append(wall)
            cpus[side].append(cpu)
            print(f"  rep {rep}: {side:8s} {wall:6.2f} s wall, {cpu:6.2f} CPU-s", flush=True)
    print(contention.report())
    summary = json.loads((root / "out-lmforge" / "tokenize_summary.json").read_text())
    print(f"lmforge engine: {summary['shards_by_engine']}" + (f" (tiktoken refused: {summary['engine_refused']})" if summary["engine_refused"] else ""))

    ours = docs_by_id(root / "out-lmforge", np.uint16)
    theirs = docs_by_id(root / "out-dolma", np.uint16)
    n_ours = sum(len(v) for v in ours.values())
    n_theirs = sum(len(v) for v in theirs.values())
    same_ids = ours.keys() == theirs.keys()
    differ = [k for k in ours if k in theirs and not np.array_equal(ours[k], theirs[k])]
    print(f"documents: lmforge {len(ours):,}, dolma {len(theirs):,}; tokens: lmforge {n_ours:,}, dolma {n_theirs:,}")
    print(f"same document set: {same_ids}; documents with different ids: {len(differ)}" + (f" (e.g. {differ[:3]})" if differ else ""))

    res = {}
    for side in ("dolma", "lmforge"):
        best = min(times[side])
        ntok = n_ours if side == "lmforge" else n_theirs
        res[side] = ntok / best
        cpu = min(cpus[side])
        res[side + "_cpu"] = cpu
        print(
            f"{side:8s} best {best:6.2f} s  {nbytes / 1e6 / best:6.2f} MB/s  {ntok / best:12,.0f} tokens/s | "
            f"{cpu:6.2f} CPU-s = {ntok / cpu:10,.0f} tokens per CPU-s"
        )
    print(f"ratio (lmforge tokens/s / dolma tokens/s, wall): {res['lmforge'] / res['dolma']:.2f}")
    print(f"ratio (dolma CPU-s / lmforge CPU-s; the wall ratio on {args.processes} otherwise idle cores): {res['dolma_cpu'] / res['lmforge_cpu']:.2f}")
    if n_ours != n_theirs or differ or not same_ids:
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
