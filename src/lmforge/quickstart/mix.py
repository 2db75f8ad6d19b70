"""Stage 4, mix: rules over the tag and dedup attributes, PII masked with OLMo's placeholders (``lmforge.corpus.mixer``).

Prose and code go through separate rule groups (the packaged ``recipes/mix_quickstart.yaml``), as
Dolma filters web text and code apart.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from lmforge.config import ConfigError
from lmforge.quickstart.common import EXPERIMENT, RECIPES, Context, QuickstartError, mb, summary_fields
from lmforge.quickstart.fetch import training_domains

__all__ = ["MIX_RULES", "MixSummary", "load_mix_groups", "marker_settings", "mix_configs", "run"]

MIX_RULES = RECIPES / "mix_quickstart.yaml"  # the rule groups: text, code
GROUPS = ("text", "code")


@dataclasses.dataclass
class MixSummary:
    groups: dict[str, Any]  # group -> domains, accounting, rules, warnings, bytes in/out, documents written
    accounting: dict[str, Any]  # all groups together
    pii_masked: dict[str, int]  # kind (email, phone, ip) -> spans masked
    bytes_out: int
    bytes_in: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MixSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        a = self.accounting
        pii = ", ".join(f"{v:,} {k}" for k, v in self.pii_masked.items() if v) or "none found"
        return f"kept {a['kept']:,} of {a['read']:,} documents, {mb(self.bytes_out)} of {mb(self.bytes_in)}; PII masked: {pii}"


def load_mix_groups(path: str | os.PathLike = MIX_RULES):
    """The rule groups of ``path`` (group -> partial :class:`~lmforge.corpus.mixer.MixerConfig`),
    checked by the mixer's config classes; the groups are ``text`` and ``code``."""
    from lmforge.corpus.mixer import MixerConfig

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the mix rules ({e})") from None
    if not isinstance(data, dict) or set(data) != set(GROUPS):
        raise ConfigError(f"{path}: must map the groups {', '.join(GROUPS)} to mixer configs")
    return {g: MixerConfig.from_dict(data[g], _prefix=f"{g}.") for g in GROUPS}


def mix_configs(corpus: Path, mixed: Path, text: list[str], code: list[str], workers: int, rules: str | os.PathLike = MIX_RULES):
    """The mixer config of each group that has domains: its rules (``rules``), the group's documents
    under ``corpus``, output ``mixed/<group>``, PII masked."""
    from lmforge.corpus.mixer import pii_span_edits

    groups = load_mix_groups(rules)
    cfgs = {}
    for group, doms in (("text", text), ("code", code)):
        if doms:
            cfgs[group] = groups[group].merged({
                "documents": [str(corpus / "documents" / d) for d in doms],
                "output": str(mixed / group),
                "span_edits": [e.to_dict() for e in pii_span_edits(EXPERIMENT)],
                "workers": workers,
            })
    return cfgs


def marker_settings(cfg) -> dict[str, Any]:
    """A group's config as the mix marker records (and hashes) it: documents, attributes, output,
    rules, span edits, and any other field set away from its default (workers aside). Rule values
    are written as in the rules' own JSON (``0``, not ``0.0``), as before the rules moved to YAML,
    so that run directories made then still resume here."""
    from lmforge.corpus.mixer import MixerConfig

    d, default = cfg.to_dict(), MixerConfig().to_dict()
    main = ("documents", "attributes", "output", "rules", "span_edits")
    out = {k: d[k] for k in main} | {k: v for k, v in d.items() if k not in main and k != "workers" and v != default[k]}
    out["rules"] = [{**r, "value": int(r["value"]) if float(r["value"]).is_integer() else r["value"]} for r in out["rules"]]
    return out


def _mix_group(ctx: Context, group: str, cfg, domains: list[str], total, masked: dict[str, int]) -> dict[str, Any]:
    """Mix one group; adds its accounting to ``total`` and its masked spans to ``masked``."""
    from lmforge.data.documents import Accounting
    from lmforge.corpus.mixer import mix

    s = mix(cfg, progress=ctx.progress)
    acct = Accounting.from_json(s["accounting"])
    if acct.errors:
        raise QuickstartError(f"mix ({group}): {acct.errors[0]}")
    total.merge(acct)
    for k, v in s["span_edits"].items():
        kind = k.rsplit("__", 1)[-1]
        masked[kind] = masked.get(kind, 0) + v
    a = s["accounting"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(a["dropped"].items(), key=lambda kv: -kv[1])) or "none"
    ctx.say(f"      {group} ({', '.join(domains)}): read {a['read']:,} = kept {a['kept']:,} + dropped "
            f"{sum(a['dropped'].values()):,} ({dropped}) + malformed {sum(a['malformed'].values()):,}")
    return {
        "domains": domains, "accounting": s["accounting"], "rules": s["rules"], "warnings": s["warnings"],
        "bytes_in": sum(s["bytes_in_by_source"].values()), "bytes_out": sum(s["bytes_out_by_source"].values()),
        "documents_written": s["written_documents"], "summary": str(Path(cfg.output) / "mix_summary.json"),
    }


def run(ctx: Context) -> MixSummary:
    text, code = training_domains(ctx.paths.corpus)
    cfgs = mix_configs(ctx.paths.corpus, ctx.paths.mixed, text, code, ctx.workers)
    groups = {g: [Path(p).name for p in c.documents] for g, c in cfgs.items()}

    def fn() -> MixSummary:
        from lmforge.data.documents import Accounting

        total = Accounting()
        masked: dict[str, int] = {}
        res = {group: _mix_group(ctx, group, c, groups[group], total, masked) for group, c in cfgs.items()}
        total.check()
        if not total.kept:
            raise QuickstartError("the mixer kept no documents; see the mix summaries under " + str(ctx.paths.mixed))
        return MixSummary(groups=res, accounting=total.to_json(), pii_masked=masked,
                          bytes_out=sum(g["bytes_out"] for g in res.values()), bytes_in=sum(g["bytes_in"] for g in res.values()))

    title = "quality and repetition rules, duplicates dropped, PII masked -> " + ", ".join(f"{ctx.paths.rel(ctx.paths.mixed / g)}/" for g in cfgs)
    settings = {"configs": {g: marker_settings(c) for g, c in cfgs.items()}}
    return ctx.runner.run("mix", title, fn, settings=settings, deps=("fetch", "tag", "dedup"), outputs=[ctx.paths.mixed],
                          describe=MixSummary.describe, summary_type=MixSummary)
