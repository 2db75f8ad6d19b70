"""What the quickstart's stages after fetch run with: :class:`QuickstartConfig` (model, steps, evaluation).

    cfg = QuickstartConfig.default(minutes=15)   # fit training into a time budget, measured on this machine
    cfg = QuickstartConfig.tiny()                # the test's size: fixed steps, no time budget
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from lmforge.config import Config, ConfigError

__all__ = ["QuickstartConfig", "QuickstartModel"]


@dataclasses.dataclass
class QuickstartModel(Config):
    """The model's shape (the vocabulary size comes from the trained tokenizer)."""

    arch: Literal["olmo2"] = "olmo2"
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    mlp_hidden: int = 512
    max_seq_len: int = 256
    tie_embeddings: bool = True


@dataclasses.dataclass
class QuickstartConfig(Config):
    """Settings of the stages after fetch. Exactly one of ``steps`` (a fixed run: ``checkpoints``
    are its checkpoint steps) and ``minutes`` (the whole run's target: the training steps fill what
    the other stages leave, timed over ``calibration_steps``; checkpoints after calibration and at
    ``checkpoint_fractions`` of the steps) is set."""

    vocab_size: int = 8192
    model: QuickstartModel = dataclasses.field(default_factory=QuickstartModel)
    global_batch: int = 16
    lr: float = 3e-3
    warmup_steps: int = 30
    # a fixed number of steps (no calibration, no time budget) ...
    steps: int | None = None
    checkpoints: list[int] = dataclasses.field(default_factory=list)
    # ... or a time budget
    minutes: float | None = 15.0
    calibration_steps: int = 30  # timed to choose the number of steps (within warmup: the schedule does not depend on it)
    checkpoint_fractions: list[float] = dataclasses.field(default_factory=lambda: [0.125, 0.25, 0.5, 0.75, 1.0])
    # evaluation and samples
    eval_bytes: int = 120_000  # of each held-out domain
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["arc_easy", "piqa", "sciq"])
    limit: int = 100  # examples per downstream task
    # generative tasks' gold bits per byte, for every checkpoint (smooth where a small model's accuracy is noise)
    gold_bpb_tasks: list[str] = dataclasses.field(default_factory=lambda: ["gsm8k:bpb"])
    gold_bpb_limit: int = 100
    max_new_tokens: int = 40

    @classmethod
    def default(cls, minutes: float = 15.0) -> QuickstartConfig:
        """The CPU run of ``lmforge quickstart``: a 2.6M-parameter model trained for what ``minutes`` leaves."""
        return cls.from_dict({"minutes": float(minutes)})

    @classmethod
    def tiny(cls) -> QuickstartConfig:
        """``--tiny``: a 43k-parameter model, 12 steps with checkpoints at 4, 8 and 12, one task on 5 examples,
        NaturalQuestions' gold bits per byte (short answers: the context is 64 tokens)."""
        return cls.from_dict({
            "vocab_size": 512,
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_hidden": 96, "max_seq_len": 64},
            "global_batch": 4, "warmup_steps": 4,
            "steps": 12, "checkpoints": [4, 8, 12], "minutes": None,
            "eval_bytes": 12_000, "tasks": ["arc_easy"], "limit": 5, "gold_bpb_tasks": ["naturalqs_open:bpb"], "gold_bpb_limit": 5, "max_new_tokens": 16,
        })

    @property
    def fixed_steps(self) -> bool:
        """True: ``steps`` is the run; False: the steps are planned from ``minutes``."""
        return self.steps is not None

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.model.max_seq_len

    def validate(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ConfigError("quickstart: set exactly one of steps (a fixed run) and minutes (a time budget)")
        if self.steps is not None:
            if self.steps < 1 or not self.checkpoints or any(not 0 < c <= self.steps for c in self.checkpoints):
                raise ConfigError(f"quickstart: steps must be positive and checkpoints within 1..steps, got {self.steps}, {self.checkpoints}")
        elif self.minutes <= 0:
            raise ConfigError(f"--minutes must be positive, got {self.minutes:g}")
        elif self.calibration_steps < 1 or any(not 0 < f <= 1 for f in self.checkpoint_fractions):
            raise ConfigError("quickstart: calibration_steps must be positive and checkpoint_fractions in (0, 1]")
        if self.warmup_steps > (self.steps or self.calibration_steps):
            raise ConfigError("quickstart: warmup_steps must fit in the steps (or the calibration steps)")

    # --- what each stage's marker records (and its key hashes) ------------------------------------
    def train_settings(self) -> dict[str, Any]:
        """The settings the train stage depends on (also its marker's ``settings``)."""
        out: dict[str, Any] = {"vocab_size": self.vocab_size, "model": self.model.to_dict(), "global_batch": self.global_batch,
                               "lr": self.lr, "warmup_steps": self.warmup_steps}
        if self.fixed_steps:
            out.update(steps=self.steps, checkpoints=list(self.checkpoints))
        else:
            out.update(minutes=self.minutes, calibration_steps=self.calibration_steps, checkpoint_fractions=list(self.checkpoint_fractions))
        return out

    def eval_settings(self) -> dict[str, Any]:
        return {"eval_bytes": self.eval_bytes, "tasks": list(self.tasks), "limit": self.limit,
                "gold_bpb_tasks": list(self.gold_bpb_tasks), "gold_bpb_limit": self.gold_bpb_limit}
