"""The Trainer: decides *when* (which batch, which step, when to checkpoint, when to stop).

*How* a step is taken belongs to a train module (``lmforge.train.module``); everything else around
the loop (logging, evaluation, checkpoint cadence, plots) to callbacks (``lmforge.train.callbacks``).

Steps are counted from 1: step N is the N-th optimizer update, trained on batch N-1 of the data
order, and ``RUN/checkpoints/step{N:07d}`` holds the state after it. Resuming from step N restores
model, optimizer, LR schedule position, data position (the order is a function of the step),
stability history and RNG, so the continued run is the uninterrupted run, bit for bit on CPU.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.checkpoint.sharded import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_checkpoint_background,
    set_rng_state,
)
from lmforge.checkpoint.unsharded import CheckpointError
from lmforge.config import atomic_write_text
from lmforge.data.mixture import fingerprint_change
from lmforge.distributed import DistInfo
from lmforge.train.callbacks import Callback
from lmforge.train.data import TrainingData
from lmforge.train.module import MicroBatch, TrainingError, TrainModule

__all__ = ["Trainer", "DATA_ORDER"]

DATA_ORDER = "data_order.json"


def _device_name(device: torch.device, world_size: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"{world_size} x {name}" if world_size > 1 else name


class Trainer:
    def __init__(
        self,
        module: TrainModule,
        data: TrainingData,
        *,
        run_dir: str | os.PathLike,
        max_steps: int,
        global_batch: int,
        micro_batch: int,
        dist: DistInfo,
        callbacks: list[Callback] = (),
        config: dict[str, Any] | None = None,
        flops_per_token: int | None = None,
        peak_flops: float | None = None,
        log_every: int = 1,
        quiet: bool = False,
        tokenizer: Any | None = None,
        async_metrics: bool = False,
        run_files: dict[str, str] | None = None,
    ):
        self.module, self.data, self.dist = module, data, dist
        self.run_dir = Path(run_dir)
        self.max_steps, self.global_batch, self.micro_batch = max_steps, global_batch, micro_batch
        self.seq_len = data.seq_len
        self.callbacks = [cb for cb in callbacks if dist.is_main or not cb.main_only]
        self.config = config
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.log_every, self.quiet = log_every, quiet
        self.tokenizer = tokenizer  # saved into every checkpoint, so `lmforge export` needs nothing else
        self.device_name = _device_name(module.device, dist.world_size)
        self.step = 0  # completed optimizer steps
        self.async_metrics = async_metrics  # read step N's metrics while step N+1 runs (no sync in a step)
        self._device_logged = False
        self.tokens_seen = 0  # real (non-padding) tokens of the completed steps, all ranks
        self._pending = None  # a checkpoint being written in the background (checkpoint.background)
        self._pending_t0 = 0.0
        self._step_times: list[float] = []
        self.run_files = dict(run_files or {})  # name -> text, written into the run dir once the checks pass

    # --- small pieces -----------------------------------------------------------------------------
    def print(self, *args: Any) -> None:
        if self.dist.is_main and not self.quiet:
            print(*args, flush=True)

    def batch_tokens(self, step: int) -> int:
        """Real tokens in global batch ``step`` (0-based), padding excluded."""
        return self.data.batch_tokens(step, self.global_batch)

    def eta_seconds(self) -> float:
        recent = self._step_times[-20:]
        if not recent:
            return float("nan")
        return (self.max_steps - self.step) * sum(recent) / len(recent)

    def log(self, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.log(self, record)

    def has_checkpoint(self, step: int) -> bool:
        return any(s == step for s, _ in list_checkpoints(self.run_dir))

    # --- data -------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[MicroBatch]:
        """This rank's share of batch ``step`` (0-based), cut into micro-batches."""
        return self.data.micro_batches(step, self.global_batch, self.micro_batch, self.dist.rank, self.dist.world_size)

    def _record_data_order(self) -> None:
        """Save what the data order depends on (rank 0); refuse to resume if the data changed."""
        fp = self.data.fingerprint()
        fp["global_batch"] = self.global_batch
        path = self.run_dir / DATA_ORDER
        if path.is_file() and self.step > 0:
            change = fingerprint_change(json.loads(path.read_text(encoding="utf-8")), fp)
            if change is not None:
                raise TrainingError(
                    f"{path}: the data changed since the run started ({change}); resuming would train on different "
                    "batches. Restore the data/config or start a new run.dir"
                )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(fp, indent=1) + "\n")

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, background: bool = False) -> Path | None:
        """Save the state after step ``self.step`` (every rank). ``background``: stop training only
        to copy the state to host memory, write it on a thread, and return None; the save is
        finished (and a failure raised) by :meth:`finish_checkpoint`, which the next save calls."""
        self.finish_checkpoint()
        t0 = time.perf_counter()
        extra = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "rng": rng_state(),
            "module": self.module.extra_state(),
            "world_size": self.dist.world_size,
            "global_batch": self.global_batch,  # with seq_len: the batch a release's model card states
            "seq_len": self.seq_len,
        }
        kw = dict(model=self.module.model, optimizer=self.module.optimizer, extra=extra, config=self.config, tokenizer=self.tokenizer)
        if background:
            self._pending = save_checkpoint_background(self.run_dir, self.step, **kw)
            self._pending_t0 = t0
            self.print(f"checkpoint: step {self.step} writing in the background (training stopped {self._pending.blocking_s:.2f}s)")
            return None
        path = save_checkpoint(self.run_dir, self.step, **kw)
        self.print(f"checkpoint: {path} ({time.perf_counter() - t0:.1f}s)")
        return path

    def finish_checkpoint(self) -> Path | None:
        """Wait for a background save to complete (every rank); its path, or None if none was pending."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        path = pending.wait()
        self.print(f"checkpoint: {path} ({time.perf_counter() - self._pending_t0:.1f}s since it started, in the background)")
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        extra = load_checkpoint(path, model=self.module.model, optimizer=self.module.optimizer)
        self.step = int(extra["step"])
        self.tokens_seen = int(extra.get("tokens_seen", self.step * self.global_batch * self.seq_len))
        self.module.load_extra_state(extra.get("module", {}))
        set_rng_state(extra["rng"])
        self.print(f"resumed from {path} at step {self.step}")

    def resume(self, resume: bool | str | os.PathLike | None) -> None:
        """``True``: the latest complete checkpoint of the run, if any; a path: that checkpoint.
        Without ``resume``, a run directory that already has checkpoints is an error."""
        if resume in (None, False):
            found = latest_checkpoint(self.run_dir)
            if found is not None:
                raise CheckpointError(
                    f"{self.run_dir} already has checkpoints (latest {found.name}); pass --resume to continue it, "
                    "or choose another run.dir"
                )
            return
        path = latest_checkpoint(self.run_dir) if resume is True else Path(resume)
        if path is None:
            self.print(f"--resume: no complete checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0")
            return
        try:
            self.load_checkpoint(path)
        except CheckpointError as e:
            earlier = [p for _, p in list_checkpoints(self.run_dir) if p.name < path.name]
            if not earlier:
                raise
            raise CheckpointError(f"{e}; the previous complete checkpoint is {earlier[-1]}: resume from it with --resume {earlier[-1]}") from None

    # --- the loop ---------------------------------------------------------------------------------
    def fit(self, resume: bool | str | os.PathLike | None = None) -> dict[str, Any]:
        self.resume(resume)
        self._record_data_order()
        if self.dist.is_main:  # only now: a refused start leaves the run directory as it was
            for name, text in self.run_files.items():
                atomic_write_text(self.run_dir / name, text)
        self.module.prepare(self)
        for cb in self.callbacks:
            cb.on_start(self)
        last: dict[str, Any] = {}
        deferred = None  # async_metrics: (DeferredMetrics, dt, step, tokens_seen) of the previous step
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            while self.step < self.max_steps:
                t0 = time.perf_counter()
                mbs = self.micro_batches(self.step)
                out = self.module.train_batch(mbs, self.step, defer=True) if self.async_metrics else self.module.train_batch(mbs, self.step)
                self.tokens_seen += self.batch_tokens(self.step)
                self.step += 1
                if deferred is not None:  # the previous step's metrics, read while this step runs
                    last = self._emit(deferred[0].resolve(), *deferred[1:])
                    deferred = None
                dt = time.perf_counter() - t0
                self._step_times.append(dt)
                if self.async_metrics:
                    deferred = (out, dt, self.step, self.tokens_seen)
                else:
                    last = self._emit(out, dt, self.step, self.tokens_seen)
                for cb in self.callbacks:
                    cb.on_step_end(self)
            if deferred is not None:
                last = self._emit(deferred[0].resolve(), *deferred[1:])
                deferred = None
        except BaseException as e:
            if deferred is not None:  # the last completed step's metrics still reach the logs
                try:
                    self._emit(deferred[0].resolve(), *deferred[1:])
                except Exception:  # noqa: BLE001 - never mask the original error
                    pass
            pending = self._pending
            if pending is not None:  # a checkpoint of an earlier, good step still completes
                try:
                    pending.future.result()
                    if pending.finisher is not None:
                        pending.finisher.join()
                except Exception:  # noqa: BLE001 - never mask the original error
                    pass
            for cb in self.callbacks:  # loggers flush and close; nothing is saved from a failed step
                try:
                    cb.on_error(self, e)
                except Exception:  # noqa: BLE001 - never mask the original error
                    pass
            raise
        for cb in self.callbacks:
            cb.on_end(self)
        return last

    def _emit(self, metrics: dict[str, Any], dt: float, step: int, tokens_seen: int) -> dict[str, Any]:
        """The record of step ``step`` (1-based); logged on the logging cadence."""
        record = self._step_record(metrics, dt, step, tokens_seen)
        if step % self.log_every == 0 or step == self.max_steps or "skipped" in metrics:
            self.log(record)
        return record

    def _step_record(self, metrics: dict[str, Any], dt: float, step: int, tokens_seen: int) -> dict[str, Any]:
        tokens = self.batch_tokens(step - 1)
        record = {"step": step, **metrics, "tokens_seen": tokens_seen, "step_time": dt, "tokens_per_s": tokens / dt}
        epoch = self.data.epoch_of(step, self.global_batch)
        if epoch is not None:
            record["epoch"] = epoch
        record["tokens_per_s_per_device"] = record["tokens_per_s"] / self.dist.world_size
        if not self._device_logged:  # the first record of this process: say what it ran on
            record["device"] = self.device_name
            self._device_logged = True
        if self.flops_per_token and self.peak_flops:
            record["mfu"] = record["tokens_per_s_per_device"] * self.flops_per_token / self.peak_flops
        return record
