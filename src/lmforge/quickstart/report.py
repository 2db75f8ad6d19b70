"""The end of the quickstart: ``OUT/summary.json`` from the stages' summaries, and the report printed."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.quickstart.common import STAGES, Context, count, fmt_s
from lmforge.quickstart.dedup import DedupSummary
from lmforge.quickstart.eval import EvalSummary
from lmforge.quickstart.fetch import FetchSummary
from lmforge.quickstart.generate import GenerateSummary
from lmforge.quickstart.mix import MixSummary
from lmforge.quickstart.release import ReleaseSummary
from lmforge.quickstart.tag import TagSummary
from lmforge.quickstart.tokenize import TokenizeSummary
from lmforge.quickstart.tokenizer import TokenizerSummary
from lmforge.quickstart.train import TrainSummary

__all__ = ["Results", "format_report", "run_summary"]


@dataclasses.dataclass
class Results:
    """Every stage's summary, in stage order."""

    fetch: FetchSummary
    tag: TagSummary
    dedup: DedupSummary
    mix: MixSummary
    tokenizer: TokenizerSummary
    tokenize: TokenizeSummary
    train: TrainSummary
    eval: EvalSummary
    release: ReleaseSummary
    generate: GenerateSummary


def run_summary(ctx: Context, r: Results, wall_seconds: float) -> dict[str, Any]:
    """What ``OUT/summary.json`` holds: time per stage, corpus, tokens, model, bits per byte, samples, paths."""
    st, p = ctx.runner, ctx.paths
    ev, tr = r.eval, r.train
    rev_of = r.release.revision_of_step()
    return {
        "out": str(ctx.out),
        "command": " ".join(ctx.command),
        "tiny": ctx.tiny,
        "wall_seconds_this_run": round(wall_seconds, 1),
        "stages": {n: {"seconds": st.seconds(n), "skipped_this_run": not st.ran.get(n, False)} for n in STAGES},
        "total_seconds": round(st.total_seconds(STAGES), 1),
        "corpus": r.fetch.totals,
        "mix": {"accounting": r.mix.accounting, "pii_masked": r.mix.pii_masked},
        "tokens_in_corpus": r.tokenize.tokens,
        "model": {**ctx.cfg.model.to_dict(), "vocab_size": r.tokenizer.vocab_size, "parameters": tr.parameters},
        "tokens_trained": tr.tokens_seen,
        "steps": tr.steps,
        "plan": tr.plan.to_json(),
        "loss": {"first": tr.first_loss, "final": tr.final_loss},
        "bpb": {
            "first": {"revision": rev_of.get(ev.first["step"], ev.first["checkpoint"]), **ev.first},
            "final": {"revision": rev_of.get(ev.last["step"], ev.last["checkpoint"]), **ev.last},
            "falls_on_every_domain": all(ev.last["bpb"][d] < ev.first["bpb"][d] for d in ev.last["bpb"] if d in ev.first["bpb"]),
            "per_checkpoint": ev.checkpoints,
        },
        "downstream": ev.downstream,
        "gold_bpb": ev.gold_bpb,
        "revisions": r.release.revisions,
        "samples": r.generate.samples,
        "paths": {
            "manifest": str(p.corpus / "manifest.json"), "mixed": str(p.mixed), "tokenizer": str(p.tokenizer),
            "tokens": str(p.tokens), "run": str(p.run), "curves": str(p.run / "curves.png"),
            "eval": str(p.eval), "bpb_plot": str(p.eval / "bpb_vs_tokens.png"), "release": str(p.release),
            "model_card": str(p.release / "README.md"), "samples": str(p.samples),
        },
    }


def format_report(ctx: Context, s: dict[str, Any]) -> str:
    """The lines printed at the end: stage times, model, bits per byte, downstream scores, where everything is."""
    rerun = "" if all(not v["skipped_this_run"] for v in s["stages"].values()) else \
        f" (this run: {fmt_s(s['wall_seconds_this_run'])}; finished stages were skipped)"
    lines = [f"\nquickstart finished: {fmt_s(s['total_seconds'])} of stage time in all" + rerun]
    lines.append("  " + "  ".join(f"{n} {fmt_s(v['seconds'])}" for n, v in s["stages"].items()))
    m = s["model"]
    lines.append(f"  model: olmo2, {count(m['parameters'] or 0)} parameters (d_model {m['d_model']}, {m['n_layers']} layers, vocab {m['vocab_size']:,}); "
                 f"trained on {s['tokens_trained']:,} tokens in {s['steps']} steps (loss {s['loss']['first']:.2f} -> {s['loss']['final']:.2f})")
    for rp in s["plan"].get("replans", []):
        lines.append(f"  training slowed down (at step {rp['at_step']}: {rp['seconds_per_step']:.2f} s/step): end moved from step "
                     f"{rp['steps_before']} to {rp['steps_after']} to fit the time budget")
    f, l = s["bpb"]["first"], s["bpb"]["final"]
    lines.append(f"  held-out bits per byte       {f['revision']:>22} {l['revision']:>22}")
    for d in l["bpb"]:
        lines.append(f"    {d:<26} {f['bpb'].get(d, float('nan')):>22.3f} {l['bpb'][d]:>22.3f}")
    lines.append(f"    {'macro average':<26} {f['macro_bpb']:>22.3f} {l['macro_bpb']:>22.3f}")
    ds = s.get("downstream") or {}
    if "tasks" in ds:
        lines.append(f"  downstream ({ds['formulation']}, {ds['limit']} examples each, final checkpoint): "
                     + ", ".join(f"{t} {v['metric']} {v['score']:.3f} (chance {v['chance']:.3f})" for t, v in ds["tasks"].items() if v["score"] is not None))
    elif ds:
        lines.append(f"  downstream tasks skipped: {ds.get('skipped')}")
    gold = s.get("gold_bpb") or {}
    for t, pts in (gold.get("tasks") or {}).items():
        lines.append(f"  {t} (gold bits per byte, {gold['limit']} examples): "
                     + " -> ".join(f"{p['bpb']:.3f}" for p in pts) + f" over steps {', '.join(str(p['step']) for p in pts)}")
    if "skipped" in gold:
        lines.append(f"  gold bits per byte skipped: {gold['skipped']}")
    p = s["paths"]
    lines.append("\nWhere everything is:")
    for label, key in [("corpus manifest", "manifest"), ("mixed documents", "mixed"), ("tokenizer", "tokenizer"), ("token files", "tokens"),
                       ("training run", "run"), ("training curves", "curves"), ("evaluation", "eval"), ("bpb vs tokens", "bpb_plot"),
                       ("model repository", "release"), ("model card", "model_card"), ("samples", "samples")]:
        lines.append(f"  {label:<18} {p[key]}")
    lines.append(f"  {'summary':<18} {ctx.out / 'summary.json'}")
    repo = ctx.paths.release
    lines.append(
        f"\nTry:  lmforge generate --model {repo} --prompt 'def main():'"
        f"\n      git -C {repo} branch   # one revision per checkpoint; `git checkout {s['revisions'][0]}` loads with transformers"
    )
    return "\n".join(lines)
