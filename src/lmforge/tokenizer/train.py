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
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.tokenizer.core import EOS_TOKEN, PII_TOKENS, Tokenizer, TokenizerError

__all__ = ["PAD_TOKEN", "SPECIAL_TOKENS", "TrainingTexts", "train_bpe"]

PAD_TOKEN = "<|pad|>"
#: In id order, starting at 0.
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *PII_TOKENS)
_MIN_VOCAB = len(SPECIAL_TOKENS) + 256


#: Files read as Dolma documents (one JSON object a line; the ``text`` field is trained on), as in
#: ``lmforge.data.documents``; every other file is read as UTF-8 text, line by line.
DOCUMENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".json")
#: What a directory contributes (searched recursively): text files and document files (not bare
#: ``.json``, which in a directory is more often a config or manifest than documents).
TEXT_SUFFIXES = (".txt",)
_DIRECTORY_SUFFIXES = TEXT_SUFFIXES + tuple(x for x in DOCUMENT_SUFFIXES if x != ".json")
_EXAMPLES = 5  # malformed lines quoted per reason (the counts are always complete)


class TrainingTexts:
    """The texts of training inputs, read lazily (an iterable that ``train_from_iterator`` consumes):
    text files line by line (line endings kept, which is exactly what tokenizers reads from a file),
    Dolma JSONL document files (plain, ``.gz``, ``.zst``) one ``text`` field per line, and
    directories (recursively: ``*.txt`` and document files other than bare ``.json``).

    A malformed line (bad JSON, not an object, no string ``text``, not UTF-8) is skipped and counted
    in ``malformed`` with its first places in ``examples``; a damaged compressed file stops that file
    and is listed in ``errors``. :meth:`summary` says it all in one line.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike]):
        self.files = _expand(inputs)
        self.texts = 0  # lines of text files + documents
        self.malformed: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.errors: list[str] = []

    def _bad(self, reason: str, where: str) -> None:
        self.malformed[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _EXAMPLES:
            ex.append(where)

    def __iter__(self) -> Iterator[str]:
        from lmforge.data.documents import DataError, iter_lines

        for path in self.files:
            doc_file = str(path).endswith(DOCUMENT_SUFFIXES)
            try:
                for n, raw in iter_lines(path):
                    where = f"{path}:{n}"
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        self._bad("invalid UTF-8", where)
                        continue
                    if not doc_file:
                        self.texts += 1
                        yield line
                        continue
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        self._bad("bad JSON", where)
                        continue
                    if not isinstance(obj, dict):
                        self._bad("not a JSON object", where)
                        continue
                    text = obj.get("text")
                    if not isinstance(text, str):
                        self._bad("no string 'text'", where)
                        continue
                    self.texts += 1
                    yield text
            except DataError as e:  # truncated or corrupt compressed file: what came before was read
                self.errors.append(str(e))

    def summary(self) -> str:
        """One line: files, texts read, malformed lines by reason with where, damaged files."""
        parts = [f"read {self.texts:,} texts from {len(self.files):,} file(s)"]
        if self.malformed:
            total = sum(self.malformed.values())
            reasons = ", ".join(f"{r} {c:,} (first at {self.examples[r][0]})" for r, c in sorted(self.malformed.items()))
            parts.append(f"skipped {total:,} malformed line(s): {reasons}")
        if self.errors:
            parts.append(f"{len(self.errors)} damaged file(s): {self.errors[0]}")
        return "; ".join(parts)


def _expand(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files, and directories searched recursively for text and document files, in a stable order."""
    files: list[Path] = []
    for p in inputs:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                f for f in path.rglob("*")
                if f.is_file() and f.name.endswith(_DIRECTORY_SUFFIXES) and not f.name.startswith(".")
            )
            if not found:
                raise TokenizerError(
                    f"training directory {path} holds no {', '.join(_DIRECTORY_SUFFIXES)} files; "
                    "pass text files, Dolma JSONL document files or directories of them"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            name = str(p)
            shown = name if len(name) <= 400 and "\n" not in name else name[:80] + "..."  # text passed as a path
            raise TokenizerError(
                f"training file {shown!r} does not exist; train_bpe reads a list as file paths, "
                "pass texts as an iterator (e.g. iter(texts))"
            )
    return files


def _input_files(inputs: str | os.PathLike | Iterable) -> TrainingTexts | None:
    """The texts of the files a path or list of paths names; ``None`` when ``inputs`` is an iterator of texts."""
    if isinstance(inputs, TrainingTexts):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        return None
    if not inputs:
        raise TokenizerError("train_bpe got no input files; pass file paths or an iterator of texts")
    return TrainingTexts(inputs)


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
    """Train byte-level BPE on files (a path or list of paths: text files, Dolma JSONL document
    files, directories of them; see :class:`TrainingTexts`, which may also be passed itself to read
    its counts of malformed lines afterwards) or on an iterator of texts.

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
    backend.train_from_iterator(files if files is not None else files_or_iterator, trainer)
    if files is not None and not files.texts:
        raise TokenizerError(f"no training text in {', '.join(map(str, files.files[:3]))}: {files.summary()}")
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
