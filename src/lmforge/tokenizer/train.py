"""Train a byte-level BPE tokenizer in OLMo's style with HF ``tokenizers``.

Layout of every tokenizer made here (stable, so configs and checkpoints can rely on it):

====  =========================  =======================================================
id    token                      role
====  =========================  =======================================================
0     ``<|endoftext|>``          EOS (also the document separator)
1     ``<|pad|>``                PAD
2     ``|||EMAIL_ADDRESS|||``    Dolma PII placeholder (a normal, non-special token)
3     ``|||PHONE_NUMBER|||``     Dolma PII placeholder
4     ``|||IP_ADDRESS|||``       Dolma PII placeholder
5+    the 256 byte symbols, then the learned merges
====  =========================  =======================================================

The special tokens sit at the *start* so their ids do not depend on ``vocab_size`` or on how many
merges a small corpus allows. The PII placeholders are atomic but not "special", as in OLMo's own
files: they stand for text that was in the document, so ``skip_special_tokens`` keeps them.

All 256 bytes are in the vocabulary whatever the corpus, so any text encodes, and
``decode(encode(x)) == x`` holds for every string (unless the optional NFC normaliser is on, which
by design maps canonically-equivalent strings to one form). Training is deterministic: the same
input gives the same file, byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.tokenizer.core import EOS_TOKEN, PII_TOKENS, Tokenizer, TokenizerError

__all__ = ["PAD_TOKEN", "SPECIAL_TOKENS", "train_bpe"]

PAD_TOKEN = "<|pad|>"
#: In id order, starting at 0.
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *PII_TOKENS)
_MIN_VOCAB = len(SPECIAL_TOKENS) + 256


def _input_files(inputs: str | os.PathLike | Iterable) -> list[str] | None:
    """A list of paths when the input names files; ``None`` when it is an iterator of texts."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        return None
    files = [os.fspath(p) for p in inputs]
    if not files:
        raise TokenizerError("train_bpe got no input files; pass file paths or an iterator of texts")
    for f in files:
        if not os.path.isfile(f):
            raise TokenizerError(
                f"training file {f[:80]!r} does not exist; train_bpe reads a list as file paths, "
                "pass texts as an iterator (e.g. iter(texts))"
            )
    return files


def _mark_pii_not_special(backend: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """The trainer adds every reserved token as special; OLMo's PII placeholders are not."""
    doc = json.loads(backend.to_str())
    for token in doc["added_tokens"]:
        if token["content"] in PII_TOKENS:
            token["special"] = False
    return tokenizers.Tokenizer.from_str(json.dumps(doc))


def train_bpe(
    files_or_iterator: str | os.PathLike | Iterable,
    vocab_size: int,
    out_path: str | os.PathLike | None = None,
    *,
    min_frequency: int = 2,
    show_progress: bool = True,
    normalize_nfc: bool = False,
) -> Tokenizer:
    """Train byte-level BPE on files (a path or list of paths) or on an iterator of texts.

    ``vocab_size`` is an upper bound including the 5 special tokens and 256 bytes; a small corpus
    may give fewer ids (check ``.vocab_size``). ``out_path`` ending in ``.json`` gets the tokenizers
    file; any other ``out_path`` is a directory that gets the HF files (:meth:`Tokenizer.to_hf_files`).
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < _MIN_VOCAB:
        raise TokenizerError(
            f"vocab_size must be an integer >= {_MIN_VOCAB} (5 special tokens + 256 bytes), got {vocab_size!r}"
        )
    files = _input_files(files_or_iterator)

    backend = tokenizers.Tokenizer(models.BPE())
    if normalize_nfc:
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=[tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    if files is not None:
        backend.train(files, trainer)
    else:
        backend.train_from_iterator(files_or_iterator, trainer)
    backend = _mark_pii_not_special(backend)

    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if backend.token_to_id(token) != expected_id:  # guards the documented layout against library changes
            got = backend.token_to_id(token)
            raise TokenizerError(f"trained tokenizer put {token!r} at id {got}, not {expected_id}; report this")

    source = "<trained in memory>"
    if out_path is not None:
        out_path = Path(out_path)
        source = str(out_path if out_path.suffix == ".json" else out_path / "tokenizer.json")
    tok = Tokenizer(backend, eos_token_id=0, pad_token_id=1, source=source)
    if out_path is not None:
        if out_path.suffix == ".json":
            tok.save(out_path)
        else:
            tok.to_hf_files(out_path)
    return tok
