"""The quickstart's timing model: how many training steps fit the time budget, and re-planning as training goes.

**Planning** (once, after calibration). The first ``calibration_steps`` are trained and timed; their
median step time times :data:`STEP_OVERHEAD` is the speed. The stages after training (eval,
release, generate) get :meth:`AfterTraining.seconds` at that speed; training gets what is left of
``minutes`` after the stages before it, the calibration and that reserve (at least
:data:`MIN_TRAINING_SECONDS`, and at least :data:`MIN_STEPS_FACTOR` x the calibration steps).

**Re-planning** (:class:`TimeBudget`, a training callback). One measurement early on does not hold
on a busy machine (a default run took 20m47s of its 15 minutes while other processes shared the two
cores). Every :data:`REPLAN_EVERY_STEPS` steps and at every checkpoint the callback measures the
recent speed (wall time over the last :data:`REPLAN_WINDOW_STEPS` steps, the first steps of the
process left out: contention, saves and logging included) and re-estimates the reserve at that
speed; when the planned steps would overrun what is left by more than the slack
(:data:`REPLAN_SLACK_FRACTION` of the budget) it moves the end earlier so that the run ends on time: the trainer's last step, the LR schedule's
``total_steps`` (the final decay comes earlier), the checkpoints still ahead (the same fractions of
the new end). The end only moves earlier, never later, so an idle machine (no overrun) trains
exactly the planned steps: the run stays deterministic. Each re-plan is recorded in
``train/quickstart_plan.json`` (``replans``) and the train stage's summary; the plan file also keeps
the training seconds at each checkpoint, so a resumed run goes on counting from there.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from lmforge.config import atomic_write_text
from lmforge.quickstart.common import fmt_s
from lmforge.train.callbacks import Callback, SaveAtSteps

__all__ = ["AfterTraining", "TimeBudget", "TrainingPlan", "calibrated_step_seconds", "checkpoint_steps", "plan_steps"]

# --- calibration -------------------------------------------------------------------------------------
# The median step of the calibration misses what happens between steps (metrics, logging, the
# progress line, checkpoint saves): about 4% on the 2-core VM, so the speed is the median x this.
STEP_OVERHEAD = 1.04
# The first steps of a process are slow (allocations, caches warming up; over a second each for the
# tiny model): not timed, by the calibration or by a re-plan's speed measurement.
UNTIMED_STEPS = 5
# The calibration run's schedule is this many x the calibration steps long; only its warmup (which
# covers the calibration steps) is used, so the real length chosen later does not change them.
CALIBRATION_SCHEDULE_FACTOR = 10
# Whatever the clock says, train at least this long and at least this many x the calibration steps.
MIN_TRAINING_SECONDS = 60.0
MIN_STEPS_FACTOR = 2

# --- the stages after training (eval, release, generate) ----------------------------------------------
# Scoring (forward only, no gradients) runs at about this many x the training tokens/s: measured
# 8 s per checkpoint for 6 held-out domains x 120 KB at 7.3k training tokens/s on the 2-core VM.
SCORING_SPEEDUP = 3.5
CHECKPOINT_LOAD_SECONDS = 1.0  # eval: loading a checkpoint
CHECKPOINT_EXPORT_SECONDS = 0.5  # release: exporting it to HF format and committing its branch
DOWNSTREAM_SECONDS = 10.0  # the downstream tasks on the final checkpoint
GENERATE_AND_STARTUP_SECONDS = 5.0  # generate, and the start-up of the three stages

# --- re-planning ---------------------------------------------------------------------------------------
REPLAN_EVERY_STEPS = 25  # how often the speed is checked (also at every checkpoint)
REPLAN_WINDOW_STEPS = 50  # the recent speed: wall seconds over at most this many steps ...
REPLAN_MIN_STEPS = 10  # ... and at least this many (fewer timed in this process: no check)
# A projected overrun up to this fraction of the budget (training + reserve) is tolerated, not a
# re-plan: an idle machine's speed varies by 1-2% and the timing model is no closer than a few
# percent, so an idle run keeps its planned steps; a busy one ends at most this late (~40 s in 15 min).
REPLAN_SLACK_FRACTION = 0.05


def calibrated_step_seconds(step_times: dict[int, float], calibration_wall: float, calibration_steps: int) -> float:
    """Seconds per training step from the calibration: the median of ``step_times`` (step -> seconds)
    after the untimed first steps, times :data:`STEP_OVERHEAD` (the wall time / steps without any)."""
    times = sorted(t for s, t in step_times.items() if UNTIMED_STEPS < s <= calibration_steps)
    return (times[len(times) // 2] if times else calibration_wall / calibration_steps) * STEP_OVERHEAD


def checkpoint_steps(steps: int, fractions: list[float], done: list[int], now: int | None = None) -> list[int]:
    """``done`` (checkpoints already saved), the ``fractions`` of ``steps`` after step ``now``
    (default: the last of ``done``) and ``steps`` itself."""
    now = max(done, default=0) if now is None else now
    return sorted(set(done) | {int(round(f * steps)) for f in fractions if round(f * steps) > now} | {steps})


@dataclasses.dataclass
class AfterTraining:
    """How long the stages after training take, from the training speed.

    ``eval_tokens``: tokens of the held-out sample every checkpoint is scored on;
    ``tokens_per_step``: training tokens per step."""

    eval_tokens: float
    tokens_per_step: int

    def seconds(self, step_seconds: float, checkpoints: int) -> float:
        """Seconds for eval (every checkpoint), release and generate at ``step_seconds`` per training step."""
        scoring_tokens_per_s = SCORING_SPEEDUP * self.tokens_per_step / step_seconds
        per_checkpoint = self.eval_tokens / scoring_tokens_per_s + CHECKPOINT_LOAD_SECONDS + CHECKPOINT_EXPORT_SECONDS
        return checkpoints * per_checkpoint + DOWNSTREAM_SECONDS + GENERATE_AND_STARTUP_SECONDS


@dataclasses.dataclass
class TrainingPlan:
    """``train/quickstart_plan.json``: the steps, the checkpoint steps and, for a timed plan, how
    they were chosen, each re-plan and the training seconds (after calibration) at each checkpoint."""

    steps: int
    checkpoints: list[int]
    tokens_per_step: int
    calibrated: bool
    seconds_per_step: float | None = None
    tokens_per_second: int | None = None
    budget_seconds: float | None = None  # for the steps after calibration
    spent_before_seconds: float | None = None  # the stages before training + the calibration
    reserved_after_seconds: float | None = None  # for eval, release, generate
    replans: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checkpoint_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields that apply (a fixed plan has no timing; no re-plans, no entry)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != [] and v != {}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingPlan:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def read(cls, path: Path) -> TrainingPlan | None:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def plan_steps(*, seconds_per_step: float, spent_seconds: float, minutes: float, calibration_steps: int, fractions: list[float],
               tokens_per_step: int, after: AfterTraining) -> TrainingPlan:
    """The steps that fill what ``minutes`` leaves after ``spent_seconds`` and the stages after training."""
    k, step_s = calibration_steps, seconds_per_step
    reserve = after.seconds(step_s, len(fractions) + 1)
    budget = max(MIN_TRAINING_SECONDS, minutes * 60 - spent_seconds - reserve)
    steps = max(MIN_STEPS_FACTOR * k, k + int(budget / step_s))
    return TrainingPlan(
        steps=steps, checkpoints=checkpoint_steps(steps, fractions, [k]), tokens_per_step=tokens_per_step, calibrated=True,
        seconds_per_step=round(step_s, 4), tokens_per_second=round(tokens_per_step / step_s), budget_seconds=round(budget, 1),
        spent_before_seconds=round(spent_seconds, 1), reserved_after_seconds=round(reserve, 1), checkpoint_seconds={str(k): 0.0},
    )


class TimeBudget(Callback):
    """Moves the end of training earlier when the recent speed says the planned steps would overrun
    the plan's time budget (see the module docstring). ``plan`` is updated in place and written to
    ``path``; ``saver``'s steps follow the plan's checkpoints; ``fractions``: the checkpoint
    fractions; ``min_steps``: never end before this step; ``clock``/``say``: for tests."""

    def __init__(self, plan: TrainingPlan, path: Path | None, after: AfterTraining, *, fractions: list[float], min_steps: int,
                 saver: SaveAtSteps | None = None, clock: Callable[[], float] = time.perf_counter, say: Callable[[str], None] = print):
        self.plan, self.path, self.after, self.fractions, self.min_steps = plan, path, after, list(fractions), min_steps
        self.saver, self.clock, self.say = saver, clock, say
        self.marks: collections.deque[tuple[int, float]] = collections.deque(maxlen=REPLAN_WINDOW_STEPS + 1)
        self.t0, self.base, self.start_step = 0.0, 0.0, 0

    @property
    def total_seconds(self) -> float:
        """From the end of calibration to the end of the run: training + the stages after it."""
        return float(self.plan.budget_seconds or 0.0) + float(self.plan.reserved_after_seconds or 0.0)

    def on_start(self, trainer) -> None:
        self.t0, self.start_step = self.clock(), trainer.step
        done = {int(s): t for s, t in self.plan.checkpoint_seconds.items() if int(s) <= trainer.step}
        if done:  # the training seconds at the checkpoint resumed from
            self.base = done[max(done)] + (trainer.step - max(done)) * (self.plan.seconds_per_step or 0.0)
        else:  # a plan without them: as planned since calibration
            self.base = max(0, trainer.step - min(self.plan.checkpoints)) * (self.plan.seconds_per_step or 0.0)
        self.marks.clear()

    def recent_step_seconds(self) -> float | None:
        if len(self.marks) < 2 or self.marks[-1][0] - self.marks[0][0] < REPLAN_MIN_STEPS:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return (t1 - t0) / (s1 - s0)

    def on_step_end(self, trainer) -> None:
        step, now = trainer.step, self.clock()
        if step >= self.start_step + UNTIMED_STEPS:  # the window starts at the end of the untimed steps
            self.marks.append((step, now))
        elapsed = self.base + (now - self.t0)
        changed = False
        if step in self.plan.checkpoints:
            self.plan.checkpoint_seconds[str(step)] = round(elapsed, 1)
            changed = True
        if step < trainer.max_steps and (step % REPLAN_EVERY_STEPS == 0 or step in self.plan.checkpoints):
            step_s = self.recent_step_seconds()
            new_end = self.new_end(step, trainer.max_steps, elapsed, step_s) if step_s else None
            if new_end is not None:
                self.apply(trainer, step, new_end, elapsed, step_s)
                changed = True
        if changed and self.path is not None:
            self.plan.write(self.path)

    def new_end(self, step: int, end: int, elapsed: float, step_seconds: float) -> int | None:
        """The step to end at so that training and the stages after it fit the budget, or None when
        ``end`` still fits (within the slack). ``elapsed``: training seconds after calibration."""
        reserve = self.after.seconds(step_seconds, len(self.plan.checkpoints))
        left = self.total_seconds - elapsed - reserve  # for the steps after this one
        need = (end - step) * step_seconds
        if need <= left + REPLAN_SLACK_FRACTION * self.total_seconds:
            return None
        new = max(step + int(max(left, 0.0) // step_seconds), self.min_steps, step)
        return new if new < end else None

    def apply(self, trainer, step: int, new_end: int, elapsed: float, step_seconds: float) -> None:
        """Move the run's end to ``new_end``: trainer, LR schedule, checkpoints, the run's config."""
        old_end = trainer.max_steps
        trainer.max_steps = new_end
        sched = trainer.module.schedule
        trainer.module.schedule = dataclasses.replace(sched, total_steps=new_end, warmup_steps=min(sched.warmup_steps, new_end))
        checkpoints = checkpoint_steps(new_end, self.fractions, [c for c in self.plan.checkpoints if c <= step], now=step)
        if self.saver is not None:
            self.saver.steps = list(checkpoints)
        if isinstance(getattr(trainer, "config", None), dict):  # what the checkpoints and RUN/config.yaml record
            trainer.config.setdefault("schedule", {})["total_steps"] = new_end
            trainer.config.setdefault("trainer", {})["max_steps"] = new_end
            run_dir = getattr(trainer, "run_dir", None)
            if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
                atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(trainer.config, sort_keys=False))
        left = self.total_seconds - elapsed
        self.plan.replans.append({
            "at_step": step, "seconds_per_step": round(step_seconds, 4), "training_seconds": round(elapsed, 1),
            "seconds_left": round(left, 1), "reserved_after_seconds": round(self.after.seconds(step_seconds, len(checkpoints)), 1),
            "steps_before": old_end, "steps_after": new_end, "checkpoints": checkpoints,
        })
        self.plan.steps, self.plan.checkpoints = new_end, checkpoints
        planned = self.plan.seconds_per_step or float("nan")
        self.say(f"      re-plan at step {step}: {step_seconds:.2f} s/step now (planned {planned:.2f}), {fmt_s(max(left, 0.0))} left "
                 f"for training and the stages after it: {new_end} steps instead of {old_end}; checkpoints at {', '.join(map(str, checkpoints))}")
