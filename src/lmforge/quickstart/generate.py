"""Stage 10, generate: a sample per training domain from the released model (``lmforge.generate``)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lmforge.config import atomic_write_text
from lmforge.quickstart.common import Context, summary_fields
from lmforge.quickstart.fetch import training_domains

__all__ = ["GenerateSummary", "PROMPTS", "prompts", "run"]

# A prompt per training domain of the default recipe; other domains start from their first document.
PROMPTS = {
    "encyclopedic": "river, stream (noun):",
    "books": "HAMLET. My lord,",
    "speeches": "Fellow-Citizens of the Senate and House of Representatives:",
    "tech": "The json module",
    "code": "def read_config(path):\n",
}
GENERATION = {"do_sample": True, "temperature": 0.8, "top_k": 40, "repetition_penalty": 1.1, "seed": 0}


@dataclasses.dataclass
class GenerateSummary:
    path: str
    samples: list[dict[str, str]]  # {"domain", "prompt", "completion"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerateSummary:
        return cls(**summary_fields(cls, data))

    def describe(self) -> str:
        return f"{len(self.samples)} samples"


def prompts(ctx: Context) -> dict[str, str]:
    """domain -> prompt: :data:`PROMPTS`, or the first line (up to 40 characters, cut at a space) of
    the domain's first document."""
    from lmforge.data.documents import list_shards, read_documents

    out = {}
    text, code = training_domains(ctx.paths.corpus)
    for d in sorted(text + code):
        if d in PROMPTS:
            out[d] = PROMPTS[d]
            continue
        for shard in list_shards(ctx.paths.corpus / "documents" / d):
            doc = next(iter(read_documents(shard)), None)
            if doc is not None:
                line = doc.text.strip().split("\n", 1)[0]
                out[d] = line[:40].rsplit(" ", 1)[0] if len(line) > 40 and " " in line[:40] else line[:40]
                break
    return out


def run(ctx: Context) -> GenerateSummary:
    settings = {"max_new_tokens": ctx.cfg.max_new_tokens, **GENERATION}
    path, repo = ctx.paths.samples, ctx.paths.release

    def fn() -> GenerateSummary:
        from lmforge.generate import GenerationConfig, generate
        from lmforge.release import load_pretrained

        ps = prompts(ctx)
        model, tok = load_pretrained(repo)  # main checked out: the released final model, HF format
        model.eval()
        texts = generate(model, tok, list(ps.values()), GenerationConfig(**settings))
        samples = [{"domain": d, "prompt": p, "completion": t} for (d, p), t in zip(ps.items(), texts)]
        atomic_write_text(path, json.dumps({"model": str(repo), "generation": settings, "samples": samples}, indent=1, ensure_ascii=False) + "\n")
        return GenerateSummary(path=str(path), samples=samples)

    summary = ctx.runner.run("generate", f"a sample per training domain from the released model ({ctx.paths.rel(repo)}/, main)", fn,
                             settings=settings, deps=("release", "fetch"), outputs=[path],
                             describe=lambda r: f"{r.describe()} -> {ctx.paths.rel(path)}", summary_type=GenerateSummary)
    for smp in summary.samples:
        ctx.say(f"      [{smp['domain']}] {smp['prompt']!r} -> {smp['completion']!r}")
    return summary
