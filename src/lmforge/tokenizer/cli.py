"""Plain functions behind ``lmforge tokenizer fetch|train|info``; argparse wiring lives in lmforge.cli.

Each returns an exit code (0 ok, 1 on a :class:`TokenizerError`, whose one line goes to stderr).
"""

from __future__ import annotations

import sys

from lmforge.tokenizer.core import Tokenizer, TokenizerError, load_tokenizer
from lmforge.tokenizer.olmo import OLMO_TOKENIZERS, fetch_olmo_tokenizers
from lmforge.tokenizer.train import TrainingTexts, train_bpe

__all__ = ["cmd_fetch", "cmd_info", "cmd_train"]


def _fail(e: TokenizerError) -> int:
    print(f"lmforge tokenizer: error: {e}", file=sys.stderr)
    return 1


def _describe(tok: Tokenizer) -> str:
    lines = [f"source      {tok.source}", f"vocab_size  {tok.vocab_size}"]
    lines.append(f"eos         {tok.eos_token_id} {tok.eos_token!r}")
    lines.append(f"pad         {tok.pad_token_id} {tok.pad_token!r}")
    if tok.bos_token_id is not None:
        lines.append(f"bos         {tok.bos_token_id} {tok.bos_token!r}")
    for token, token_id in tok.pii_token_ids.items():
        lines.append(f"pii         {token_id} {token!r}")
    return "\n".join(lines)


def cmd_fetch(name: str = "olmo", cache_dir: str | None = None) -> int:
    """Fetch the OLMo tokenizer files (all come from one wheel, so any OLMo name fetches all)."""
    if name != "olmo" and name not in OLMO_TOKENIZERS:
        return _fail(TokenizerError(f"unknown tokenizer {name!r}; use 'olmo' or one of {', '.join(OLMO_TOKENIZERS)}"))
    try:
        paths = fetch_olmo_tokenizers(cache_dir)
    except TokenizerError as e:
        return _fail(e)
    for key, path in paths.items():
        print(f"{key:<13} {path}")
    return 0


def cmd_train(inputs: list[str], vocab_size: int, out: str, min_frequency: int = 2) -> int:
    """Train byte-level BPE on text files, Dolma JSONL document files (``.jsonl``, ``.jsonl.gz``,
    ``.jsonl.zst``: the ``text`` field of each line) and directories of them (recursively); ``out``
    is a ``.json`` file or an HF-style directory. Malformed document lines are skipped, counted and
    reported (on stderr) with where the first of each kind is."""
    try:
        texts = TrainingTexts(list(inputs))
        tok = train_bpe(texts, vocab_size, out, min_frequency=min_frequency)
    except TokenizerError as e:
        return _fail(e)
    skipped = bool(texts.malformed or texts.errors)
    print(f"training data: {texts.summary()}", file=sys.stderr if skipped else sys.stdout)
    print(_describe(tok))
    return 0


def cmd_info(path_or_name: str, cache_dir: str | None = None) -> int:
    """Print vocabulary size and special ids of a known name, a tokenizer directory or a JSON file."""
    try:
        tok = load_tokenizer(path_or_name, cache_dir=cache_dir)
    except TokenizerError as e:
        return _fail(e)
    print(_describe(tok))
    return 0
