"""Callbacks: everything around the step that is not the step itself.

The Trainer calls, in order: ``on_start`` once (after any resume), then after every step
``on_step_end``, and ``on_end`` once. Metrics reach loggers through ``log(trainer, record)``, where a
record is ``{"step": N, ...}`` (training metrics every ``logging.every`` steps, evaluation metrics
when evaluators run). Only rank 0 writes files; checkpointing runs on every rank.

    ConsoleProgress   one line per logged step: step, loss, LR, grad norm, tokens/s, MFU, ETA
    MetricsJSONL      RUN/metrics.jsonl (truncated back to the resumed step on resume)
    WandbLogger       W&B (online or offline), run id kept in RUN/wandb_id so resumes continue it
    CheckpointSaver   every N steps and at the end; keep the last K plus every M-th
    SaveAtSteps       at given steps (OLMo-style revisions at fractions of a run), besides the cadence
    AverageCheckpoints  at the end: RUN/average, the mean of the last K checkpoints of the LR decay
    Evaluation        runs evaluators every N steps and at the end, logs their metrics
    CurvesPlot        RUN/curves.png: loss (and eval loss) and LR against steps, at the end
"""

from __future__ import annotations

import json
import math
import secrets
import string
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lmforge.checkpoint.listing import METRICS, read_metrics  # noqa: F401 - read_metrics re-exported
from lmforge.config import atomic_write_bytes, atomic_write_text
from lmforge.formatting import format_count, format_seconds

if TYPE_CHECKING:  # pragma: no cover
    from lmforge.train.trainer import Trainer

__all__ = ["Callback", "ConsoleProgress", "MetricsJSONL", "WandbLogger", "CheckpointSaver", "SaveAtSteps", "AverageCheckpoints", "Evaluation", "CurvesPlot", "read_metrics"]

CURVES = "curves.png"


class Callback:
    main_only = False  # True: only rank 0 runs it

    def on_start(self, trainer: Trainer) -> None: ...

    def on_train_begin(self, trainer: Trainer) -> None:
        """After every callback's ``on_start`` (loggers are open), before the first step."""

    def on_step_end(self, trainer: Trainer) -> None: ...

    def log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_end(self, trainer: Trainer) -> None: ...

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        """The run failed: release resources (files, W&B); do not save anything."""


class ConsoleProgress(Callback):
    main_only = True

    def __init__(self, stream=None):
        self.stream = stream

    def log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        out = self.stream or sys.stdout
        step, total = record["step"], trainer.max_steps
        width = len(str(total))
        if "loss" not in record:  # evaluation record
            parts = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k != "step")
            print(f"[step {step:>{width}}/{total}] eval  {parts}", file=out, flush=True)
            return
        parts = [f"[step {step:>{width}}/{total}]", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}", f"gnorm {record['grad_norm']:.3f}"]
        if "rewards_margin" in record:  # DPO
            parts.append(f"margin {record['rewards_margin']:.3f}  acc {record['rewards_accuracy']:.2f}")
        if "tokens_per_s" in record:
            parts.append(f"{format_count(record['tokens_per_s'], spec='.2f', units='kMG')} tok/s")
        if record.get("mfu") is not None:
            parts.append(f"MFU {100 * record['mfu']:.1f}%")
        parts.append(f"ETA {format_seconds(trainer.eta_seconds(), style='clock')}")
        if record.get("skipped"):
            parts.append(f"SKIPPED: {record['skipped']}")
        print("  ".join(parts), file=out, flush=True)


class MetricsJSONL(Callback):
    main_only = True

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS
        self._f = None

    def on_start(self, trainer: Trainer) -> None:
        # Keep only what happened up to the step we (re)start from: a killed run may have logged
        # steps after its last checkpoint, and the resumed run logs them again.
        records = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= trainer.step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(record, allow_nan=True) + "\n")
        self._f.flush()

    def on_end(self, trainer: Trainer) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    on_error = lambda self, trainer, error: self.on_end(trainer)  # noqa: E731


class WandbLogger(Callback):
    """Weights & Biases. ``mode="offline"`` writes RUN/wandb/offline-run-* and needs no network."""

    main_only = True

    def __init__(self, run_dir: str | Path, *, project: str, name: str, mode: str, entity: str | None, tags: list[str], config: dict):
        self.run_dir = Path(run_dir)
        self.kwargs = dict(project=project, name=name, mode=mode, entity=entity, tags=tags or None, config=config)
        self.run = None

    def on_start(self, trainer: Trainer) -> None:
        try:
            import wandb
        except ImportError:
            from lmforge.config import ConfigError

            raise ConfigError("logging.wandb.enabled is true but wandb is not installed: pip install wandb (or set it false)") from None
        id_file = self.run_dir / "wandb_id"
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            # W&B's own id format (8 of [a-z0-9]); wandb.util.generate_id is gone in newer wandb
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            atomic_write_text(id_file, run_id + "\n")
        self.run = wandb.init(dir=str(self.run_dir), id=run_id, resume="allow", **self.kwargs)

    def log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.run is not None:
            data = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            self.run.log(data, step=record["step"])

    def on_end(self, trainer: Trainer) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
            import wandb

            wandb.teardown()  # finish() returns before the offline run file is fully written

    def on_error(self, trainer: Trainer, error: BaseException) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


class CheckpointSaver(Callback):
    """Saves every ``every`` steps and at the end, then prunes. ``background``: the save only stops
    training to copy the state to host memory; it completes while the next steps run, and is
    waited for at the next save and at the end (pruning happens once a save is complete)."""

    def __init__(self, every: int | None, keep_last: int, keep_every: int | None, at_end: bool = True, background: bool = False):
        self.every, self.keep_last, self.keep_every, self.at_end = every, keep_last, keep_every, at_end
        self.background = background
        self.last_saved: int | None = None

    def _prune(self, trainer: Trainer) -> None:
        from lmforge.checkpoint.sharded import prune_checkpoints

        prune_checkpoints(trainer.run_dir, self.keep_last, self.keep_every)

    def _save(self, trainer: Trainer) -> None:
        if trainer.finish_checkpoint() is not None:
            self._prune(trainer)
        trainer.save_checkpoint(background=self.background)
        self.last_saved = trainer.step
        if not self.background:
            self._prune(trainer)

    def on_step_end(self, trainer: Trainer) -> None:
        if self.every and trainer.step % self.every == 0:
            self._save(trainer)

    def on_end(self, trainer: Trainer) -> None:
        if self.at_end and self.last_saved != trainer.step and not trainer.has_checkpoint(trainer.step):
            self._save(trainer)
        trainer.finish_checkpoint()
        self._prune(trainer)  # also what a run killed between its last save and that save's pruning left


class SaveAtSteps(Callback):
    """Saves a checkpoint after each of ``steps`` (e.g. revisions at 1/8, 1/4, 1/2 ... of a run),
    besides any ``checkpoint.every`` cadence; a step that already has a complete checkpoint (a
    resumed run) is not saved again. Nothing is pruned here: keep ``checkpoint.keep_last`` high
    enough. ``steps`` may be replaced during the run (a callback that moves the end of training)."""

    def __init__(self, steps):
        self.steps = sorted({int(s) for s in steps})

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step in self.steps and not trainer.has_checkpoint(trainer.step):
            trainer.save_checkpoint()


class AverageCheckpoints(Callback):
    """At the end (after the last save), ``RUN/average``: the uniform average of the last ``k``
    complete checkpoints whose step is at or after ``decay_start`` (the LR decay's first step),
    replacing an earlier one; fewer than two such checkpoints: nothing, said on the console."""

    main_only = True
    DIR = "average"

    def __init__(self, k: int, decay_start: int):
        self.k, self.decay_start = k, decay_start

    def on_end(self, trainer: Trainer) -> None:
        from lmforge.checkpoint.average import average_checkpoints
        from lmforge.checkpoint.listing import list_checkpoints

        picked = [p for s, p in list_checkpoints(trainer.run_dir) if s >= self.decay_start][-self.k:]
        if len(picked) < 2:
            print(f"checkpoint.average_last: {len(picked)} checkpoint(s) saved in the LR decay (from step {self.decay_start}); "
                  "nothing averaged (save more often: checkpoint.every)", flush=True)
            return
        out = average_checkpoints(picked, trainer.run_dir / self.DIR, replace=True)
        print(f"averaged {', '.join(p.name for p in picked)} -> {out}", flush=True)


class Evaluation(Callback):
    """Runs ``evaluators`` (callables ``(model) -> {metric: value}``, with a ``name``) every
    ``every`` steps and at the end; logs ``{"eval/NAME/METRIC": value}``. Every rank runs them
    (evaluators shard their work and reduce over ranks)."""

    def __init__(self, evaluators: list[Callable[..., dict[str, float]]], every: int | None, at_start: bool = False):
        self.evaluators, self.every, self.at_start = evaluators, every, at_start
        self.last: int | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.at_start and trainer.step == 0:  # the starting point (fine-tuning: the base model's scores)
            self.run(trainer)

    def run(self, trainer: Trainer) -> dict[str, float]:
        record: dict[str, Any] = {"step": trainer.step, "tokens_seen": trainer.tokens_seen}
        t0 = time.perf_counter()
        for ev in self.evaluators:
            for k, v in ev(trainer.module.model).items():
                record[f"eval/{ev.name}/{k}"] = v
        record["eval_seconds"] = time.perf_counter() - t0
        trainer.log(record)
        self.last = trainer.step
        return record

    def on_step_end(self, trainer: Trainer) -> None:
        if self.every and trainer.step % self.every == 0:
            self.run(trainer)

    def on_end(self, trainer: Trainer) -> None:
        if self.evaluators and self.last != trainer.step:
            self.run(trainer)


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Loss (train, and eval losses if any) and LR against steps from RUN/metrics.jsonl, as a PNG."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    if not train:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss"] for r in train], lw=1, label="train loss")
    skipped = [r for r in train if r.get("skipped")]
    if skipped:
        ax_loss.scatter([r["step"] for r in skipped], [r["loss"] if math.isfinite(r["loss"]) else float("nan") for r in skipped], c="red", s=12, label="skipped update", zorder=3)
    eval_keys = sorted({k for r in records for k in r if k.startswith("eval/") and k.endswith("/loss")})
    for k in eval_keys:
        pts = [(r["step"], r[k]) for r in records if k in r]
        ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1, label=k[len("eval/") :])
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_loss.set_title(f"{run_dir.name}: training curves")
    ax_lr.plot(steps, [r["lr"] for r in train], lw=1, color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out) if out is not None else run_dir / CURVES
    atomic_write_bytes(out, buf.getvalue())
    return out


class CurvesPlot(Callback):
    main_only = True

    def on_end(self, trainer: Trainer) -> None:
        path = plot_curves(trainer.run_dir)
        if path is not None:
            trainer.print(f"curves: {path}")
