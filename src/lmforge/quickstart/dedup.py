"""Stage 3, dedup: exact duplicate documents and paragraphs with a Bloom filter (``lmforge.corpus.dedup``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lmforge.quickstart.common import DUP_DOCS, DUP_PARAS, Context, mb, summary_fields

__all__ = ["DedupSummary", "run"]

MODES = (("documents", DUP_DOCS), ("paragraphs", DUP_PARAS))  # mode -> attribute name (Dolma's)
_KEYS = ("documents", "duplicate_documents", "duplicate_spans", "duplicate_chars", "accounting", "seconds")


@dataclasses.dataclass
class DedupSummary:
    documents: dict[str, Any]  # the whole-document pass: documents, duplicate_documents, ...
    paragraphs: dict[str, Any]  # the paragraph pass: duplicate_spans, duplicate_chars, ...

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DedupSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        d, p = self.documents, self.paragraphs
        return (f"{d['duplicate_documents']:,} of {d['documents']:,} documents are exact duplicates; {p['duplicate_spans']:,} repeated "
                f"paragraphs ({mb(p['duplicate_chars'])}) in {p['duplicate_documents']:,} documents")


def run(ctx: Context) -> DedupSummary:
    attrs = ctx.paths.corpus / "attributes"

    def fn() -> DedupSummary:
        from lmforge.corpus.dedup import DedupConfig, dedup

        res = {}
        for mode, name in MODES:
            dedup(DedupConfig(documents=[str(ctx.paths.corpus / "documents")], mode=mode, name=name, workers=ctx.workers), progress=ctx.progress)
            s = json.loads((attrs / name / "_summary.json").read_text(encoding="utf-8"))
            res[mode] = {k: s.get(k) for k in _KEYS}
        return DedupSummary(**res)

    return ctx.runner.run("dedup", "exact duplicate documents and paragraphs (Bloom filter)", fn, settings={"modes": [m for m, _ in MODES]},
                          deps=("fetch",), outputs=[attrs / name for _, name in MODES], describe=DedupSummary.describe, summary_type=DedupSummary)
