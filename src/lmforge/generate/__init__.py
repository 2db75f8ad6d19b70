"""Text generation with lmforge models: batched KV-cache decoding, sampling, streaming, stop strings.

    from lmforge.generate import GenerationConfig, generate, stream

    text = generate(model, tokenizer, "Once upon a time", GenerationConfig(max_new_tokens=50))
    for piece in stream(model, tokenizer, "Once upon a time", GenerationConfig(do_sample=True, seed=0)):
        print(piece, end="", flush=True)

Layers, bottom up: ``sampling`` (logits -> next token), ``decode`` (token ids in, token ids out,
one left-padded batch with a KV cache), ``text`` (tokenizer, incremental detokenisation, stop
strings, streaming); the ``lmforge generate`` command is :mod:`lmforge.cli.generate`.
"""

from lmforge.generate.config import GenerationConfig
from lmforge.generate.decode import BatchDecoder, generate_ids
from lmforge.generate.text import IncrementalDetokenizer, StopStringMatcher, generate, stream

__all__ = [
    "GenerationConfig",
    "generate",
    "stream",
    "generate_ids",
    "BatchDecoder",
    "IncrementalDetokenizer",
    "StopStringMatcher",
]
