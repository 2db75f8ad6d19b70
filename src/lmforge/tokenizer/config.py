"""``TokenizerConfig``: the tokenizer part of a run's config (a known OLMo name or a path)."""

from __future__ import annotations

import dataclasses
import difflib

from lmforge.config import Config, ConfigError
from lmforge.tokenizer.core import Tokenizer, load_tokenizer_path
from lmforge.tokenizer.olmo import OLMO_TOKENIZERS, load_olmo_tokenizer

__all__ = ["TokenizerConfig"]


@dataclasses.dataclass
class TokenizerConfig(Config):
    """Exactly one of ``name`` (``olmo1``, ``olmo2``, ``gpt-neox-pii``) or ``path`` (a tokenizers
    JSON file or a directory with ``tokenizer.json``). Ids left ``None`` come from the registry
    (for names), ``tokenizer_config.json`` (for directories) or well-known token strings (files);
    whichever way, they are checked when the tokenizer is built."""

    name: str | None = None
    path: str | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    cache_dir: str | None = None  # where named tokenizers are cached; default $LMFORGE_CACHE/tokenizers

    def validate(self) -> None:
        if (self.name is None) == (self.path is None):
            both = "both" if self.name is not None else "neither"
            raise ConfigError(f"tokenizer config needs exactly one of 'name' or 'path', got {both}")
        if self.name is not None:
            spec = OLMO_TOKENIZERS.get(self.name)
            if spec is None:
                hint = difflib.get_close_matches(self.name, list(OLMO_TOKENIZERS), n=1, cutoff=0.5)
                extra = f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(OLMO_TOKENIZERS)}"
                raise ConfigError(f"config key 'name': unknown tokenizer {self.name!r}{extra}")
            for role, expected in (("eos", spec.eos_token_id), ("pad", spec.pad_token_id)):
                given = getattr(self, f"{role}_token_id")
                if given is not None and given != expected:
                    raise ConfigError(
                        f"config key '{role}_token_id' is {given}, but tokenizer {self.name!r} uses {expected}; "
                        "remove the key"
                    )
        for role in ("eos", "pad", "bos"):
            value = getattr(self, f"{role}_token_id")
            if value is not None and value < 0:
                raise ConfigError(f"config key '{role}_token_id' must be >= 0, got {value}")

    def build(self) -> Tokenizer:
        ids = {"eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id, "bos_token_id": self.bos_token_id}
        if self.name is not None:
            return load_olmo_tokenizer(self.name, cache_dir=self.cache_dir, **ids)
        return load_tokenizer_path(self.path, **ids)
