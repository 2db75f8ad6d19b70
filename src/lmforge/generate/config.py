"""How to decode: the knobs of :func:`lmforge.generate.generate` and friends, as one typed config."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lmforge.config import Config, ConfigError, option


@dataclasses.dataclass
class GenerationConfig(Config):
    """Decoding settings. The defaults give greedy decoding of up to 64 new tokens.

    Sampling knobs (``temperature``, ``top_k``, ``top_p``, ``seed``) only matter with
    ``do_sample=True``; ``repetition_penalty`` applies to greedy decoding too, as in HF transformers.
    """

    max_new_tokens: int = option(64, help="new tokens per prompt at most")
    do_sample: bool = option(False, flag="--sample", help="sample instead of greedy decoding")
    temperature: float = option(1.0, help="logits are divided by this before sampling")
    top_k: int = option(0, help="keep only the k most likely tokens; 0 = off")
    top_p: float = option(1.0, help="keep the smallest set of tokens whose probability reaches top_p; 1 = off")
    # HF semantics: the logit of every token already in the prompt or the output is divided by the
    # penalty when positive and multiplied by it when negative; 1 = off.
    repetition_penalty: float = option(1.0, help="divide (multiply when negative) the logits of tokens already seen; 1 = off")
    stop_strings: list[str] = option(default_factory=list, flag="--stop", append=True, metavar="STOP", help="stop string (repeatable); text APIs cut the output here")
    stop_at_eos: bool = option(True, cli=False)  # a row finishes when it emits the tokenizer's EOS id
    seed: int | None = option(None, help="seeds sampling (reproducible); default: torch's global generator")
    # Static KV cache + one compiled single-token step (CUDA graphs on a GPU): the fast path for
    # batch 1 and small batches. Same tokens as the plain path under greedy decoding; the first
    # call compiles (seconds), later calls with the same batch size and length reuse it.
    compile: bool = option(False, help="static KV cache + compiled decode step (CUDA graphs on a GPU); same greedy tokens, faster after a one-off compile")
    # CPU, float32: the matrix products through oneDNN with weights packed once per call
    # (lmforge.generate.cpu_kernels); "aten" = PyTorch's default kernels; "auto" packs models up to 2 GB.
    cpu_kernels: Literal["auto", "onednn", "aten"] = option("auto", help="CPU float32 decoding: oneDNN prepacked products (auto: models up to 2 GB) or aten")

    def __post_init__(self) -> None:
        # Validate on construction too, so GenerationConfig(temperature=0) fails where it is written.
        self.validate()

    def validate(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError(f"generate.max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ConfigError(f"generate.temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"generate.top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"generate.repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if any(not s for s in self.stop_strings):
            raise ConfigError("generate.stop_strings must not contain an empty string")
