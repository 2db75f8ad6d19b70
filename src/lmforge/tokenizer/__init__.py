"""lmforge.tokenizer: byte-level BPE tokenizers with explicit, checked special-token ids.

* :class:`Tokenizer` wraps a HF ``tokenizers`` tokenizer; load with ``Tokenizer.from_file`` /
  ``Tokenizer.from_dir``, export for ``transformers`` with ``Tokenizer.to_hf_files``.
* :func:`load_olmo_tokenizer` / :func:`fetch_olmo_tokenizers`: the official OLMo files, by name.
* :func:`train_bpe`: train a new tokenizer in OLMo's style.
* :class:`TokenizerConfig`: the config dataclass; :func:`check_fits` guards the embedding size.
"""

from lmforge.tokenizer.config import TokenizerConfig
from lmforge.tokenizer.core import (
    EOS_TOKEN,
    PAD_TOKENS,
    PII_TOKENS,
    Tokenizer,
    TokenizerError,
    check_fits,
)
from lmforge.tokenizer.olmo import (
    OLMO_TOKENIZERS,
    OlmoTokenizerSpec,
    default_cache_dir,
    fetch_olmo_tokenizers,
    load_olmo_tokenizer,
    load_tokenizer,
)
from lmforge.tokenizer.train import SPECIAL_TOKENS, train_bpe

__all__ = [
    "EOS_TOKEN",
    "OLMO_TOKENIZERS",
    "PAD_TOKENS",
    "PII_TOKENS",
    "SPECIAL_TOKENS",
    "OlmoTokenizerSpec",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerError",
    "check_fits",
    "default_cache_dir",
    "fetch_olmo_tokenizers",
    "load_olmo_tokenizer",
    "load_tokenizer",
    "train_bpe",
]
