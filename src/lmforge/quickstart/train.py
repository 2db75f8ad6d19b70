"""Stage 7, train: a small OLMo-2-style model on the token files, checkpoints at the plan's steps.

A fixed config (``--tiny``) trains its ``steps``; otherwise the first ``calibration_steps`` are timed
to plan the steps that fill the time budget, and :class:`~lmforge.quickstart.timing.TimeBudget`
re-plans as training goes (see :mod:`lmforge.quickstart.timing`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from lmforge.quickstart.common import STAGES, Context, count, fmt_s, summary_fields
from lmforge.quickstart.fetch import FetchSummary
from lmforge.quickstart.mix import MixSummary
from lmforge.quickstart.timing import (
    CALIBRATION_SCHEDULE_FACTOR,
    MIN_STEPS_FACTOR,
    AfterTraining,
    TimeBudget,
    TrainingPlan,
    calibrated_step_seconds,
    plan_steps,
)
from lmforge.quickstart.tokenize import TokenizeSummary
from lmforge.quickstart.tokenizer import TokenizerSummary

__all__ = ["TrainSummary", "run", "train_config"]


@dataclasses.dataclass
class TrainSummary:
    run_dir: str
    plan: TrainingPlan
    steps: int
    tokens_seen: int | None
    parameters: int
    first_loss: float | None
    final_loss: float | None
    checkpoints: list[dict[str, Any]]  # {"step", "tokens_seen", "path"} by step
    seconds_this_run: float
    curves: str
    metrics: str
    replans: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the plan's, when the end moved

    def to_json(self) -> dict[str, Any]:
        out = {**dataclasses.asdict(self), "plan": self.plan.to_json()}
        if not self.replans:  # the usual case: the marker reads as it did before re-planning existed
            del out["replans"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainSummary:
        fields = summary_fields(cls, data)
        return cls(**{**fields, "plan": TrainingPlan.from_json(fields["plan"])})

    def describe(self) -> str:
        moved = f"; end moved {len(self.replans)}x to fit the time budget" if self.replans else ""
        return (f"{self.steps} steps, {count(self.tokens_seen or 0)} tokens, {count(self.parameters or 0)} parameters; "
                f"loss {self.first_loss:.2f} -> {self.final_loss:.2f}; {len(self.checkpoints)} checkpoints{moved}")


def train_config(ctx: Context, vocab_size: int, total_steps: int, max_steps: int, log_every: int):
    """The run config of the training (and the calibration) run."""
    from lmforge.train.config import TrainConfig

    s = ctx.cfg
    return TrainConfig.from_dict({
        "run": {"name": ctx.name, "dir": str(ctx.paths.run), "seed": 0, "device": "cpu"},
        "model": {**s.model.to_dict(), "vocab_size": vocab_size},
        "data": {"sources": [{"name": "mixed", "paths": [str(ctx.paths.tokens)]}], "seed": 0},
        "optim": {"lr": s.lr, "betas": [0.9, 0.95], "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": s.warmup_steps, "total_steps": total_steps, "final_lr_ratio": 0.1},
        "trainer": {"global_batch": s.global_batch, "max_steps": max_steps, "grad_clip": 1.0, "z_loss": 1e-5},
        "checkpoint": {"every": None, "keep_last": 1000, "at_end": True},  # the plan's checkpoints are saved by SaveAtSteps
        "logging": {"every": log_every, "progress": ctx.progress, "plot": True},
    })


def after_training(ctx: Context, fetch: FetchSummary, mix: MixSummary, tokens: TokenizeSummary) -> AfterTraining:
    """The timing model of the stages after training, for this corpus: scoring ``eval_bytes`` of
    every held-out domain, in tokens at the mixed corpus' bytes per token, and the gold bits-per-byte
    requests (one context window each)."""
    bytes_per_token = mix.bytes_out / max(tokens.tokens, 1)
    domains = len(fetch.heldout_domains) or 1
    s = ctx.cfg
    gold = len(s.gold_bpb_tasks) * s.gold_bpb_limit * s.model.max_seq_len
    return AfterTraining(eval_tokens=domains * s.eval_bytes / bytes_per_token + gold, tokens_per_step=s.tokens_per_step)


def calibrate(ctx: Context, vocab_size: int, after: AfterTraining) -> TrainingPlan:
    """Train and time the first ``calibration_steps`` (training steps, within warmup), then plan."""
    from lmforge.checkpoint.listing import read_metrics
    from lmforge.train.run import train

    s = ctx.cfg
    k = s.calibration_steps
    ctx.say(f"      timing the first {k} steps to fit the run into {s.minutes:g} minutes")
    t0 = time.perf_counter()
    train(train_config(ctx, vocab_size, total_steps=max(k, CALIBRATION_SCHEDULE_FACTOR * k), max_steps=k, log_every=1),
          resume=True, quiet=not ctx.progress)
    wall = time.perf_counter() - t0
    times = {r["step"]: r["step_time"] for r in read_metrics(ctx.paths.run) if "step_time" in r and "step" in r}
    step_s = calibrated_step_seconds(times, wall, k)
    spent = ctx.runner.total_seconds(STAGES[: STAGES.index("train")]) + wall
    plan = plan_steps(seconds_per_step=step_s, spent_seconds=spent, minutes=s.minutes, calibration_steps=k,
                      fractions=s.checkpoint_fractions, tokens_per_step=s.tokens_per_step, after=after)
    ctx.say(f"      {step_s:.2f} s/step ({s.tokens_per_step / step_s:,.0f} tokens/s): {plan.steps} steps in {fmt_s(plan.budget_seconds)} "
            f"({fmt_s(spent)} spent so far, ~{fmt_s(plan.reserved_after_seconds)} kept for evaluation and release; the end moves "
            f"earlier if training slows down); checkpoints at {', '.join(map(str, plan.checkpoints))}")
    return plan


def training_plan(ctx: Context, vocab_size: int, after: AfterTraining) -> TrainingPlan:
    """The plan of this run: the one written earlier (a resumed stage), or a new one."""
    plan = TrainingPlan.read(ctx.paths.plan)
    if plan is None:
        s = ctx.cfg
        if s.fixed_steps:
            plan = TrainingPlan(steps=s.steps, checkpoints=list(s.checkpoints), tokens_per_step=s.tokens_per_step, calibrated=False)
        else:
            plan = calibrate(ctx, vocab_size, after)
        plan.write(ctx.paths.plan)
    return plan


def run(ctx: Context, tokenizer: TokenizerSummary, tokens: TokenizeSummary, mix: MixSummary, fetch: FetchSummary) -> TrainSummary:
    s, vocab = ctx.cfg, tokenizer.vocab_size
    m = s.model
    desc = f"olmo2, d_model {m.d_model} x {m.n_layers} layers, vocab {vocab:,}; batch {s.global_batch} x {m.max_seq_len} tokens"

    def fn() -> TrainSummary:
        from lmforge.checkpoint import list_checkpoints, read_metrics
        from lmforge.train.callbacks import SaveAtSteps
        from lmforge.train.run import train

        after = after_training(ctx, fetch, mix, tokens)
        plan = training_plan(ctx, vocab, after)
        saver = SaveAtSteps(plan.checkpoints)
        callbacks: list = [saver]
        if plan.calibrated:  # after the saver: a re-plan at a checkpoint step comes after its save
            callbacks.append(TimeBudget(plan, ctx.paths.plan, after, fractions=s.checkpoint_fractions,
                                        min_steps=MIN_STEPS_FACTOR * s.calibration_steps, saver=saver, say=ctx.say))
        t0 = time.perf_counter()
        cfg = train_config(ctx, vocab, total_steps=plan.steps, max_steps=plan.steps, log_every=1 if ctx.tiny else 10)
        last = train(cfg, resume=True, quiet=not ctx.progress, callbacks=callbacks)
        records = [r for r in read_metrics(ctx.paths.run) if "loss" in r]
        ckpts = []
        for step, path in list_checkpoints(ctx.paths.run):
            extra = json.loads((path / "extra.json").read_text()) if (path / "extra.json").is_file() else {}
            ckpts.append({"step": step, "tokens_seen": extra.get("tokens_seen"), "path": str(path)})
        return TrainSummary(
            run_dir=str(ctx.paths.run), plan=plan, steps=records[-1]["step"] if records else plan.steps,
            tokens_seen=ckpts[-1]["tokens_seen"] if ckpts else None, parameters=cfg.model.build("meta").num_params(),
            first_loss=records[0]["loss"] if records else None,
            final_loss=(last or {}).get("loss", records[-1]["loss"] if records else None),
            checkpoints=ckpts, seconds_this_run=round(time.perf_counter() - t0, 1),
            curves=str(ctx.paths.run / "curves.png"), metrics=str(ctx.paths.run / "metrics.jsonl"), replans=list(plan.replans),
        )

    return ctx.runner.run("train", f"{desc} -> {ctx.paths.rel(ctx.paths.run)}/", fn, settings=s.train_settings(), deps=("tokenize", "tokenizer"),
                          outputs=[ctx.paths.run], describe=TrainSummary.describe, summary_type=TrainSummary,
                          intact=lambda: (ctx.paths.run / "checkpoints").is_dir())
