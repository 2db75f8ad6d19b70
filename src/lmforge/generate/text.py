"""Text in, text out: tokenising prompts, incremental detokenisation, stop strings, streaming.

:func:`generate` and :func:`stream` share one code path (:func:`_text_pieces`), so a streamed
completion, concatenated, is exactly the string ``generate`` returns.

The tokenizer is duck-typed: ``encode(text) -> list[int]``, ``decode(ids, skip_special_tokens=)``,
``eos_token_id``, ``pad_token_id`` and, optionally, ``vocab_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.decode import BatchDecoder

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turn a stream of token ids into a stream of text pieces.

    Decoding each token alone is wrong twice over: a byte-level token may hold only part of a
    multi-byte UTF-8 character (it decodes to U+FFFD until the rest arrives), and some decoders
    change a token's text depending on what precedes it (SentencePiece's leading space). Decoding
    the whole sequence at every step would be right but quadratic. So we decode a short window --
    the previously emitted piece plus the tokens not yet emitted -- and emit the part of it past the
    previous piece, once it no longer ends in U+FFFD.

    Every emission ends on a complete character, where a UTF-8 decoder is back in its initial state,
    so for byte-level tokenizers the pieces concatenate to exactly ``decode(all ids)``.
    """

    def __init__(self, tokenizer: Any, context: Sequence[int] = ()):
        self.tokenizer = tokenizer
        # A few prompt tokens give the first new token the context it is decoded in.
        self.ids: list[int] = list(context)
        self.prefix_start = 0  # ids[prefix_start:read_start] is the previously emitted window
        self.read_start = len(self.ids)  # ids[read_start:] are not emitted yet

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> str:
        """Take one token; return the new text it completes ('' while a character is still partial)."""
        self.ids.append(token)
        return self._emit(final=False)

    def flush(self) -> str:
        """Whatever text remains at the end, even an incomplete character (as U+FFFD)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self.read_start == len(self.ids):
            return ""
        prefix = self._decode(self.ids[self.prefix_start : self.read_start])
        text = self._decode(self.ids[self.prefix_start :])
        if not final and (text.endswith(REPLACEMENT_CHAR) or len(text) <= len(prefix)):
            return ""  # a character is still incomplete (or nothing visible yet): wait for more
        self.prefix_start, self.read_start = self.read_start, len(self.ids)
        return text[len(prefix) :]


class StopStringMatcher:
    """Cut a text stream at the first occurrence of any stop string, never releasing text past it.

    Text that could be the beginning of a stop string (``"\\n"`` when a stop string is
    ``"\\n\\n"``) is held back until the next piece shows whether it is.
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stops = list(stop_strings)
        self.pending = ""  # text received but not released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Take a piece of text; return the text now safe to release."""
        if self.stopped or not piece:
            return ""
        self.pending += piece
        # Held-back text is never the start of an occurrence already released, so searching the
        # pending text suffices.
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        hold = self._longest_stop_prefix_suffix()
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        """At the end of the stream, release the held-back text (it never became a stop string)."""
        out, self.pending = self.pending, ""
        return out

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest suffix of ``pending`` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(s[:n]):
                    best = n
                    break
        return best


class RowText:
    """One completion's text state: detokenizer, then stop-string matcher (feed it a row's tokens,
    read the text that is final; ``stopped`` once a stop string appeared)."""

    CONTEXT_TOKENS = 4  # prompt tokens decoded alongside the first new ones (see IncrementalDetokenizer)

    def __init__(self, tokenizer: Any, prompt_ids: list[int], stop_strings: Sequence[str]):
        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids[-self.CONTEXT_TOKENS :])
        self.stops = StopStringMatcher(stop_strings)
        self.closed = False

    @property
    def stopped(self) -> bool:
        return self.stops.stopped

    def add(self, token: int) -> str:
        return self.stops.feed(self.detok.add(token))

    def close(self) -> str:
        """End of this row's tokens: release everything left that comes before any stop string."""
        if self.closed:
            return ""
        self.closed = True
        out = self.stops.feed(self.detok.flush())
        return out if self.stops.stopped else out + self.stops.flush()


def _special_id(tokenizer: Any, name: str) -> int | None:
    value = getattr(tokenizer, name, None)
    return None if value is None else int(value)


def _text_pieces(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], gen: GenerationConfig) -> Iterator[tuple[int, str]]:
    """Decode all prompts in one batch; yield ``(prompt index, text piece)`` as text becomes final."""
    gen.validate()
    eos = _special_id(tokenizer, "eos_token_id")
    pad = _special_id(tokenizer, "pad_token_id")
    pad = pad if pad is not None else (eos if eos is not None else 0)  # padding is masked: any id works
    prompt_ids = []
    for text in prompts:
        ids = list(tokenizer.encode(text))
        if not ids:
            if eos is None:
                raise ValueError("an empty prompt needs a tokenizer with an eos_token_id to start from")
            ids = [eos]  # documents are separated by EOS in training, so EOS is "start of a document"
        prompt_ids.append(ids)
    vocab_size = model.config.vocab_size
    if getattr(tokenizer, "vocab_size", None):
        vocab_size = min(vocab_size, int(tokenizer.vocab_size))

    decoder = BatchDecoder(model, prompt_ids, gen, pad_token_id=pad, eos_token_id=eos, vocab_size=vocab_size)
    rows = [RowText(tokenizer, ids, gen.stop_strings) for ids in prompt_ids]
    for step in decoder.steps():
        for row, token in step:
            state = rows[row]
            if token in decoder.eos_ids:
                piece = state.close()  # the EOS ended this row; it is not part of the text
            else:
                piece = state.add(token)
                if state.stopped:
                    decoder.finish(row)
                    state.close()
            if piece:
                yield row, piece
    for row, state in enumerate(rows):  # rows that ran out of max_new_tokens
        piece = state.close()
        if piece:
            yield row, piece


def stream(model: torch.nn.Module, tokenizer: Any, prompt: str, gen: GenerationConfig | None = None) -> Iterator[str]:
    """Yield the completion of ``prompt`` piece by piece, as soon as each piece is final.

    Pieces are whole characters and never reach into a stop string; joined, they equal
    ``generate(model, tokenizer, prompt, gen)``.
    """
    for _, piece in _text_pieces(model, tokenizer, [prompt], gen or GenerationConfig()):
        yield piece


def generate(
    model: torch.nn.Module, tokenizer: Any, prompts: str | Sequence[str], gen: GenerationConfig | None = None
) -> str | list[str]:
    """Complete one prompt (returns a str) or a batch of prompts (returns a list, decoded together).

    The text excludes the prompt and the EOS token, and ends before the first stop string.
    """
    single = isinstance(prompts, str)
    batch = [prompts] if single else list(prompts)
    parts: list[list[str]] = [[] for _ in batch]
    for row, piece in _text_pieces(model, tokenizer, batch, gen or GenerationConfig()):
        parts[row].append(piece)
    texts = ["".join(p) for p in parts]
    return texts[0] if single else texts
