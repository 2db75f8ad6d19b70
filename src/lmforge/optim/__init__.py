"""Optimiser pieces: AdamW with weight-decay groups, learning-rate schedules, gradient clipping.

    opt = OptimConfig(lr=4e-4, weight_decay=0.1).build(model)
    sched = ScheduleConfig(kind="cosine", warmup_steps=2000, total_steps=100_000, final_lr_ratio=0.1)
    lr = sched.lr(step, opt_cfg.lr)

By default weight decay applies to matrices only: embeddings, norms and anything 1-D are excluded
(decaying the embedding shrinks rare tokens' vectors toward zero). ``decay_norms=True`` decays
norm weights too, as OLMo-2's recipes do (``decay_norm_and_bias: true``, embeddings excluded).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from lmforge.config import Config, ConfigError


@dataclasses.dataclass
class OptimConfig(Config):
    lr: float = 4e-4
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    decay_norms: bool = False  # decay 1-D parameters (norm weights) too
    fused: bool | None = None  # None: fused where torch supports it for the parameters' device

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")

    def param_groups(self, model: nn.Module) -> list[dict]:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            is_embedding = name.endswith("embed.weight")
            if (p.ndim < 2 and not self.decay_norms) or (is_embedding and not self.decay_embeddings):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def build(self, model: nn.Module) -> torch.optim.AdamW:
        fused = self.fused
        if fused is None:
            devices = {p.device.type for p in model.parameters()}
            fused = devices <= {"cuda", "cpu"} and all(p.is_floating_point() for p in model.parameters())
        return torch.optim.AdamW(
            self.param_groups(model), lr=self.lr, betas=tuple(self.betas), eps=self.eps, fused=bool(fused), foreach=None if fused else True
        )


@dataclasses.dataclass
class ScheduleConfig(Config):
    """LR multiplier over steps. ``wsd`` = warmup, stable, then decay over the last ``decay_steps``."""

    kind: Literal["constant", "linear", "cosine", "wsd"] = "cosine"
    warmup_steps: int = 0
    total_steps: int = 1000
    final_lr_ratio: float = 0.1  # lr at the end as a fraction of the peak
    decay_steps: int = 0  # wsd only
    warmup_ratio: float | None = None  # warmup as a fraction of total_steps (replaces warmup_steps when set)

    def resolved(self, total_steps: int | None = None) -> "ScheduleConfig":
        """A copy with ``total_steps`` (when given) and ``warmup_ratio`` turned into ``warmup_steps``."""
        total = total_steps or self.total_steps
        warmup = self.warmup_steps if self.warmup_ratio is None else int(math.ceil(self.warmup_ratio * total))
        return dataclasses.replace(self, total_steps=total, warmup_steps=min(warmup, total), warmup_ratio=None)

    def validate(self) -> None:
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"schedule.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.warmup_steps < 0 or self.total_steps <= 0:
            raise ConfigError("schedule.warmup_steps must be >= 0 and schedule.total_steps > 0")
        if self.warmup_steps > self.total_steps:
            raise ConfigError(f"schedule.warmup_steps ({self.warmup_steps}) exceeds schedule.total_steps ({self.total_steps})")
        if self.kind == "wsd" and not 0 < self.decay_steps <= self.total_steps - self.warmup_steps:
            raise ConfigError("schedule.decay_steps must be in (0, total_steps - warmup_steps] for kind 'wsd'")
        if not 0 <= self.final_lr_ratio <= 1:
            raise ConfigError(f"schedule.final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")

    def decay_start(self) -> int:
        """The first step of the LR decay (``total_steps`` for a constant schedule: none)."""
        if self.kind == "constant":
            return self.total_steps
        if self.kind == "wsd":
            return self.total_steps - self.decay_steps
        return self.warmup_steps

    def factor(self, step: int) -> float:
        """Multiplier of the peak LR at ``step`` (0-based; the first update uses step 0)."""
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        end = self.final_lr_ratio
        if self.kind == "wsd":
            start_decay = self.total_steps - self.decay_steps
            if step < start_decay:
                return 1.0
            progress = min(1.0, (step - start_decay) / self.decay_steps)
            return 1.0 - (1.0 - end) * progress
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "linear":
            return 1.0 - (1.0 - end) * progress
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr(self, step: int, peak: float) -> float:
        return peak * self.factor(step)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(parameters, max_norm: float | None) -> torch.Tensor:
    """Clip the global gradient norm (when ``max_norm``) and return the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm is None or max_norm <= 0:
        return torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


__all__ = ["OptimConfig", "ScheduleConfig", "set_lr", "clip_grad_norm"]
