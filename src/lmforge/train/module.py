"""Train modules: *how* one optimizer step is taken. The Trainer decides *when*.

A train module owns the (parallelised) model, the optimizer and the LR schedule, and turns one
global batch (this rank's share of it, as a list of micro-batches) into one update:

    metrics = module.train_batch(micro_batches, step)

``LMTrainModule`` is next-token prediction (pretraining); ``train.sft.SFTTrainModule`` and
``train.dpo.DPOTrainModule`` are the others, on the same Trainer: they differ in how a micro-batch
becomes a loss (``loss_sum``) and what the loss is normalised by (``count``), nothing else.

Loss normalisation: the loss of a step is the mean over every non-masked label token in the
*global* batch. Each micro-batch contributes its *sum* of token losses divided by the global token
count; DDP/FSDP average gradients over ranks, so the divisor is ``count / world_size``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmforge.distributed import is_distributed, rank_and_world
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.optim import ScheduleConfig, clip_grad_norm, set_lr

__all__ = ["MicroBatch", "TrainModule", "LMTrainModule", "TrainingError", "DeferredMetrics"]


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many skipped steps in a row); one line saying why."""


@dataclasses.dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (b, T)
    labels: torch.Tensor  # (b, T) next-token targets, IGNORE_INDEX where not counted
    document_ids: torch.Tensor | None = None  # (b, T) for intra-document masking
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # what other train modules need

    def to(self, device: torch.device) -> MicroBatch:
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return MicroBatch(move(self.input_ids), move(self.labels), move(self.document_ids), {k: move(v) for k, v in self.extra.items()})

    @property
    def n_label_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclasses.dataclass
class DeferredMetrics:
    """A step's metrics still on the device (``TrainModule.train_batch(defer=True)``): ``resolve()``
    reads them (waiting for that step only), giving what ``train_batch`` returns without ``defer``."""

    values: torch.Tensor  # (1 + len(keys),) loss, then the extra metrics, already normalised
    grad_norm: torch.Tensor
    total: torch.Tensor
    keys: list[str]
    lr: float
    count_name: str

    def resolve(self) -> dict[str, Any]:
        values = self.values.tolist()
        metrics = {"loss": values[0], "grad_norm": float(self.grad_norm), "lr": self.lr, self.count_name: int(self.total.item())}
        metrics.update(zip(self.keys, values[1:]))
        return metrics


class TrainModule:
    """Base: model + optimizer + schedule; subclasses define ``loss_sum`` for one micro-batch."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: ScheduleConfig,
        *,
        peak_lr: float,
        grad_clip: float | None = 1.0,
        autocast_dtype: torch.dtype | None = None,
        stability=None,
        device: torch.device | None = None,
    ):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.peak_lr, self.grad_clip, self.autocast_dtype = peak_lr, grad_clip, autocast_dtype
        self.device = device or next(model.parameters()).device
        self.stability = stability
        window = stability.window if stability is not None else 50
        self.recent_losses: collections.deque[float] = collections.deque(maxlen=window)
        self.consecutive_skips = 0
        self.world_size = rank_and_world()[1]

    count_name = "tokens"  # what ``count`` counts, as logged

    # --- what subclasses define -----------------------------------------------------------------
    def loss_sum(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum (not mean) of the per-token losses of one micro-batch, and sums of extra metrics."""
        raise NotImplementedError

    def count(self, mb: MicroBatch) -> int:
        """How many loss terms ``loss_sum`` adds up (the normaliser)."""
        return mb.n_label_tokens

    def prepare(self, trainer) -> None:
        """Called once by ``Trainer.fit`` after resuming, before the first step (DPO: reference log-probs)."""

    # --- one step ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _sync_context(self, last: bool):
        """Gradient all-reduce only after the last micro-batch (DDP: no_sync; FSDP2: a flag)."""
        m = self.model
        if last:
            if hasattr(m, "set_requires_gradient_sync"):
                m.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if hasattr(m, "no_sync"):
            return m.no_sync()
        if hasattr(m, "set_requires_gradient_sync"):
            m.set_requires_gradient_sync(False)
        return contextlib.nullcontext()

    def _global_count(self, micro_batches: list[MicroBatch]) -> torch.Tensor:
        n = torch.tensor([float(sum(self.count(mb) for mb in micro_batches))], device=self.device)
        if is_distributed():
            dist.all_reduce(n)
        return n

    def train_batch(self, micro_batches: list[MicroBatch], step: int, *, defer: bool = False) -> dict[str, float] | DeferredMetrics:
        """One optimizer update (``step`` is 0-based: the LR schedule's step). Returns metrics.

        ``defer``: no host-device synchronisation at all: the update is applied unconditionally
        (stability checks need the loss on the host *before* the update, so they are off), and the
        metrics come back as :class:`DeferredMetrics`, read later (the Trainer reads step N's while
        step N+1 runs). The numbers are the same as without ``defer``."""
        self.model.train()
        lr = self.schedule.lr(step, self.peak_lr)
        set_lr(self.optimizer, lr)
        total = self._global_count(micro_batches)  # (1,) label tokens in the global batch
        scale = self.world_size / total.clamp(min=1)  # DDP/FSDP average over ranks
        loss_sum = torch.zeros((), device=self.device)
        extras: dict[str, torch.Tensor] = {}
        for i, mb in enumerate(micro_batches):
            mb = mb.to(self.device)
            with self._sync_context(i == len(micro_batches) - 1), self._autocast():
                loss, parts = self.loss_sum(mb)
                (loss * scale[0]).backward()
            loss_sum += loss.detach().float()
            for k, v in parts.items():
                extras[k] = extras.get(k, 0) + v.detach().float()
        grad_norm = clip_grad_norm(self.model.parameters(), self.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a DTensor
            grad_norm = grad_norm.full_tensor()
        # One reduction for every metric: [loss_sum, extras...] summed over ranks.
        keys = sorted(extras)
        packed = torch.stack([loss_sum] + [extras[k] for k in keys])
        if is_distributed():
            dist.all_reduce(packed)
        if defer:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return DeferredMetrics(packed / total.clamp(min=1), grad_norm, total, keys, lr, self.count_name)
        values = (packed / total.clamp(min=1)).tolist()  # the one host sync of the step
        loss = values[0]
        gnorm = float(grad_norm)
        skip_reason = self._skip_reason(loss, gnorm)
        if skip_reason is None:
            self.optimizer.step()
            self.recent_losses.append(loss)
            self.consecutive_skips = 0
        else:
            self.consecutive_skips += 1
        self.optimizer.zero_grad(set_to_none=True)
        metrics = {"loss": loss, "grad_norm": gnorm, "lr": lr, self.count_name: int(total.item())}
        metrics.update({k: v for k, v in zip(keys, values[1:])})
        if skip_reason is not None:
            metrics["skipped"] = skip_reason
            limit = self.stability.max_consecutive_skips if self.stability is not None else 0
            if self.consecutive_skips > limit:
                raise TrainingError(
                    f"step {step + 1}: {self.consecutive_skips} updates in a row skipped (last: {skip_reason}); "
                    "stopping. Lower optim.lr, check the data at these steps (`lmforge data inspect`), or resume from "
                    "an earlier checkpoint"
                )
        return metrics

    def _skip_reason(self, loss: float, grad_norm: float) -> str | None:
        s = self.stability
        if s is None:
            return None
        if s.skip_nonfinite and not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"non-finite loss {loss} / grad norm {grad_norm}"
        if s.spike_k is not None and len(self.recent_losses) >= s.min_history:
            xs = list(self.recent_losses)
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
            threshold = mean + s.spike_k * max(std, 1e-3 * abs(mean))
            if loss > threshold:
                return f"loss spike {loss:.4f} > mean {mean:.4f} + {s.spike_k:g} * std {std:.4f}"
        return None

    # --- state for checkpoints (besides model and optimizer) --------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"recent_losses": list(self.recent_losses), "consecutive_skips": self.consecutive_skips}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.recent_losses.clear()
        self.recent_losses.extend(float(x) for x in state.get("recent_losses", []))
        self.consecutive_skips = int(state.get("consecutive_skips", 0))


class LMTrainModule(TrainModule):
    """Next-token prediction with optional z-loss (pretraining)."""

    def __init__(self, *args, z_loss: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.z_loss = z_loss

    def loss_sum(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.model(mb.input_ids, labels=mb.labels, z_loss_coef=self.z_loss, document_ids=mb.document_ids, reduction="sum")
        parts = {"ce": out.ce}
        if self.z_loss:
            parts["z_loss"] = out.z_loss
        return out.loss, parts
