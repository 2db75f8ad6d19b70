"""Text generation with lmforge models: batched KV-cache decoding, sampling, streaming, stop strings.

    from lmforge.generate import GenerationConfig, generate, stream

    text = generate(model, tokenizer, "Once upon a time", GenerationConfig(max_new_tokens=50))
    for piece in stream(model, tokenizer, "Once upon a time", GenerationConfig(do_sample=True, seed=0)):
        print(piece, end="", flush=True)

Layers, bottom up: ``sampling`` (logits -> next token), ``decode`` (token ids in, token ids out,
one left-padded batch with a KV cache), ``text`` (tokenizer, incremental detokenisation, stop
strings, streaming); the ``lmforge generate`` command is :mod:`lmforge.cli.generate`.
"""

from importlib import import_module
from typing import Any

from lmforge.generate.config import GenerationConfig

# imported on first use: the command line (which imports GenerationConfig for its flags) must not
# pay for torch in commands that never generate
_LAZY = {"generate_ids": "decode", "BatchDecoder": "decode", "IncrementalDetokenizer": "text", "StopStringMatcher": "text",
         "generate": "text", "stream": "text", "RowText": "text"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"lmforge.generate.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lmforge.generate' has no attribute {name!r}")


__all__ = [
    "GenerationConfig",
    "generate",
    "stream",
    "generate_ids",
    "BatchDecoder",
    "IncrementalDetokenizer",
    "StopStringMatcher",
    "RowText",
]
