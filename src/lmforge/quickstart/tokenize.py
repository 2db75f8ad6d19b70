"""Stage 6, tokenize: the mixed corpus -> OLMo token files (``lmforge.corpus.tokenize``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.quickstart.common import Context, summary_fields

__all__ = ["TokenizeSummary", "run"]


@dataclasses.dataclass
class TokenizeSummary:
    dir: str
    tokens: int
    documents: int
    dtype: str
    files: int
    accounting: dict[str, Any]
    engine: str = "hf"  # the BPE engine that ran (tiktoken where shown to give tokenizers' ids)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenizeSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        return f"{self.tokens:,} tokens in {self.documents:,} documents, {self.files} {self.dtype} files ({self.engine} BPE engine)"


def run(ctx: Context) -> TokenizeSummary:
    out = ctx.paths.tokens

    def fn() -> TokenizeSummary:
        from lmforge.corpus.tokenize import TokenizeConfig, tokenize

        cfg = TokenizeConfig(documents=[str(p) for p in ctx.paths.mixed_shards()], tokenizer=str(ctx.paths.tokenizer), out=str(out),
                             workers=ctx.workers)
        s = tokenize(cfg, progress=ctx.progress)
        return TokenizeSummary(dir=str(out), tokens=s["tokens"], documents=s["documents"], dtype=s["dtype"], files=len(s["files"]),
                               accounting=s["accounting"], engine="+".join(sorted(s["shards_by_engine"])) or s["engine"])

    return ctx.runner.run("tokenize", f"mixed corpus -> OLMo token files in {ctx.paths.rel(out)}/", fn, settings={}, deps=("mix", "tokenizer"),
                          outputs=[out.parent], describe=TokenizeSummary.describe, summary_type=TokenizeSummary)
