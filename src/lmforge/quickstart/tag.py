"""Stage 2, tag: Gopher quality and repetition, PII and code taggers (``lmforge.corpus.taggers``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.quickstart.common import EXPERIMENT, TAGGERS, Context, QuickstartError, summary_fields

__all__ = ["TagSummary", "run"]


@dataclasses.dataclass
class TagSummary:
    taggers: list[str]
    experiment: str
    accounting: dict[str, Any]
    attributes: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TagSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        return f"{self.accounting['kept']:,} documents tagged ({self.accounting['read']:,} read)"


def run(ctx: Context) -> TagSummary:
    out = ctx.paths.corpus / "attributes" / EXPERIMENT

    def fn() -> TagSummary:
        from lmforge.corpus.taggers import tag

        acct = tag(ctx.paths.corpus / "documents", TAGGERS, EXPERIMENT, workers=ctx.workers, overwrite=True, progress=ctx.progress)
        if acct.errors:
            raise QuickstartError(f"tagging: {acct.errors[0]}")
        return TagSummary(taggers=list(TAGGERS), experiment=EXPERIMENT, accounting=acct.to_json(), attributes=str(out))

    return ctx.runner.run("tag", f"{', '.join(TAGGERS)} -> {ctx.paths.rel(out)}/", fn, settings={"taggers": TAGGERS}, deps=("fetch",),
                          outputs=[out], describe=TagSummary.describe, summary_type=TagSummary)
