"""lmforge: a truly open language-model framework (data, tokenizer, OLMo models, training, eval, release)."""

__version__ = "0.1.0"
