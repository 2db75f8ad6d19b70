"""Stage 5, tokenizer: a byte-level BPE with OLMo's special tokens, trained on the mixed corpus (``lmforge.tokenizer``)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from lmforge.quickstart.common import Context, mb, summary_fields

__all__ = ["TokenizerSummary", "run"]


@dataclasses.dataclass
class TokenizerSummary:
    path: str
    vocab_size: int
    eos_token_id: int | None
    pad_token_id: int | None
    trained_on_bytes: int
    trained_on_documents: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenizerSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        return f"{self.vocab_size:,} ids (EOS {self.eos_token_id}, PAD {self.pad_token_id}), trained on {mb(self.trained_on_bytes)}"


def run(ctx: Context) -> TokenizerSummary:
    vocab = ctx.cfg.vocab_size
    path = ctx.paths.tokenizer

    def fn() -> TokenizerSummary:
        from lmforge.data.documents import list_shards, read_documents
        from lmforge.tokenizer import train_bpe

        n = {"bytes": 0, "documents": 0}

        def texts():
            for shard in list_shards(ctx.paths.mixed_shards()):
                for doc in read_documents(shard):
                    n["bytes"] += len(doc.text.encode("utf-8"))
                    n["documents"] += 1
                    yield doc.text

        tok = train_bpe(texts(), vocab, path, show_progress=ctx.progress and sys.stdout.isatty())
        return TokenizerSummary(path=str(path), vocab_size=tok.vocab_size, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                trained_on_bytes=n["bytes"], trained_on_documents=n["documents"])

    return ctx.runner.run("tokenizer", f"byte-level BPE, {vocab:,} ids, OLMo's special tokens, on the mixed corpus -> {ctx.paths.rel(path)}", fn,
                          settings={"vocab_size": vocab}, deps=("mix",), outputs=[path.parent], describe=TokenizerSummary.describe,
                          summary_type=TokenizerSummary)
