"""The run config of ``lmforge train``: one YAML with a section per component.

    run:        name, directory, seed, device
    model:      ModelConfig (lmforge.models)
    data:       DataConfig (lmforge.data.mixture): token-file sources, weights, seed
    optim:      OptimConfig (lmforge.optim): AdamW
    schedule:   ScheduleConfig (lmforge.optim): LR schedule
    trainer:    batch sizes, steps, clipping, z-loss, precision, parallelism, stability
    checkpoint: how often, how many to keep
    logging:    console, JSONL, W&B, plot
    eval:       in-loop evaluation (perplexity on held-out token files)
    chat:       SFT/DPO data: JSONL conversations or preference pairs, chat template, packing
    dpo:        DPO loss and beta

``trainer.objective`` picks the train module: ``lm`` (pretraining on ``data``), ``sft`` or ``dpo``
(adaptation on ``chat``, usually from ``run.init_from``: an lmforge checkpoint or HF directory).

Each section is its own small dataclass; ``TrainConfig`` only holds them and checks how they fit
together (``validate``). ``configs/train/*.yaml`` are examples.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from lmforge.config import Config, ConfigError
from lmforge.data.mixture import DataConfig, SourceConfig
from lmforge.models import ModelConfig
from lmforge.optim import OptimConfig, ScheduleConfig

__all__ = [
    "RunConfig",
    "TrainerConfig",
    "StabilityConfig",
    "CheckpointConfig",
    "WandbConfig",
    "LoggingConfig",
    "DownstreamConfig",
    "EvalConfig",
    "ChatDataConfig",
    "DPOConfig",
    "TrainConfig",
]


@dataclasses.dataclass
class RunConfig(Config):
    name: str = "run"
    dir: str = "runs/run"  # run directory: config, data order, metrics, checkpoints, plots
    seed: int = 0  # model initialisation and torch RNG; the data order has its own data.seed
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Start from these weights (an lmforge checkpoint or HF model directory); the model section is
    # then the checkpoint's own, and its tokenizer is the run's unless chat.tokenizer says otherwise.
    init_from: str | None = None
    # With init_from an lmforge training checkpoint: also carry its AdamW state (moments and step
    # counts; the hyperparameters are this config's), as OLMo-2's stage 2 anneals from stage 1.
    keep_optimizer: bool = False

    def validate(self) -> None:
        if self.keep_optimizer and self.init_from is None:
            raise ConfigError("run.keep_optimizer needs run.init_from (the training checkpoint whose optimizer state to carry)")


@dataclasses.dataclass
class StabilityConfig(Config):
    """Skip an update whose loss is not finite or spikes above mean + k * std of recent losses."""

    skip_nonfinite: bool = True
    spike_k: float | None = 6.0  # None: no spike detection
    window: int = 50  # recent (not skipped) steps the mean/std are taken over
    min_history: int = 20  # no spike detection before this many steps
    max_consecutive_skips: int = 5  # more in a row stops the run

    def validate(self) -> None:
        if self.spike_k is not None and self.spike_k <= 0:
            raise ConfigError(f"trainer.stability.spike_k must be positive or null, got {self.spike_k}")
        if self.window < 2 or self.min_history < 2:
            raise ConfigError("trainer.stability.window and min_history must be >= 2")
        if self.max_consecutive_skips < 0:
            raise ConfigError("trainer.stability.max_consecutive_skips must be >= 0")


@dataclasses.dataclass
class TrainerConfig(Config):
    seq_len: int | None = None  # tokens per instance; None = model.max_seq_len
    global_batch: int = 8  # instances per optimizer step, over all ranks
    micro_batch: int | None = None  # instances per forward/backward on one rank; None = global_batch / world
    max_steps: int | None = None  # None = schedule.total_steps
    grad_clip: float | None = 1.0
    z_loss: float = 0.0  # z-loss coefficient (OLMo-2: 1e-5)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: fsdp with >1 process
    compile: bool = False  # torch.compile each block
    # One process with parallel: fsdp: still wrap with FSDP2 (a 1-rank group) to use its bf16 policy
    # (bf16 parameters in compute, float32 master weights and gradient reduction) instead of autocast.
    fsdp_single_process: bool = False
    activation_checkpointing: bool = False
    peak_tflops: float | None = None  # per device, for MFU; None = known GPUs (H100, A100, ...)
    stability: StabilityConfig = dataclasses.field(default_factory=StabilityConfig)
    # No host-device sync inside a step: step N's metrics are read while step N+1 runs. Updates are
    # then never skipped (stability checks need the loss before the update): set
    # stability.skip_nonfinite false and stability.spike_k null to use it.
    async_metrics: bool = False
    objective: Literal["lm", "sft", "dpo"] = "lm"  # which train module: pretraining, SFT or DPO
    epochs: float | None = None  # sft/dpo: passes over the data (sets max_steps and schedule.total_steps)

    def validate(self) -> None:
        if self.async_metrics and (self.stability.skip_nonfinite or self.stability.spike_k is not None):
            raise ConfigError(
                "trainer.async_metrics reads the loss after the update, so it cannot skip bad updates: set "
                "trainer.stability.skip_nonfinite=false and trainer.stability.spike_k=null, or async_metrics=false"
            )
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"trainer.epochs must be positive or null, got {self.epochs}")
        if self.global_batch <= 0:
            raise ConfigError(f"trainer.global_batch must be positive, got {self.global_batch}")
        if self.micro_batch is not None and self.micro_batch <= 0:
            raise ConfigError(f"trainer.micro_batch must be positive or null, got {self.micro_batch}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"trainer.max_steps must be positive or null, got {self.max_steps}")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"trainer.seq_len must be >= 2, got {self.seq_len}")
        if self.z_loss < 0:
            raise ConfigError(f"trainer.z_loss must be >= 0, got {self.z_loss}")


@dataclasses.dataclass
class CheckpointConfig(Config):
    every: int | None = 1000  # steps between checkpoints (and one at the end); None: only at the end
    keep_last: int = 3  # newest checkpoints kept ...
    keep_every: int | None = None  # ... plus every step divisible by this (None: none)
    at_end: bool = True
    # Write checkpoints on a background thread: training stops only to copy the state to host
    # memory; the save completes during the next steps (and is waited for before the next one).
    background: bool = False
    # At the end: the average of the last K checkpoints saved during the LR decay, in RUN/average
    # (lmforge.checkpoint.average; OLMo-2-style souping of a decay's end). 0: none.
    average_last: int = 0

    def validate(self) -> None:
        if self.average_last < 0 or self.average_last == 1:
            raise ConfigError(f"checkpoint.average_last must be 0 (none) or >= 2, got {self.average_last}")
        if self.average_last > self.keep_last:
            raise ConfigError(f"checkpoint.average_last ({self.average_last}) exceeds checkpoint.keep_last ({self.keep_last}): "
                              "the checkpoints to average would be pruned first; raise checkpoint.keep_last")
        if self.every is not None and self.every <= 0:
            raise ConfigError(f"checkpoint.every must be positive or null, got {self.every}")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1 (resume needs one), got {self.keep_last}")
        if self.keep_every is not None and self.keep_every <= 0:
            raise ConfigError(f"checkpoint.keep_every must be positive or null, got {self.keep_every}")


@dataclasses.dataclass
class WandbConfig(Config):
    enabled: bool = False
    project: str = "lmforge"
    entity: str | None = None
    mode: Literal["online", "offline"] = "offline"  # offline needs no network; `wandb sync` uploads later
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LoggingConfig(Config):
    every: int = 1  # console/JSONL/W&B every this many steps
    progress: bool = True  # console progress line
    plot: bool = True  # loss/LR PNG at the end
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)

    def validate(self) -> None:
        if self.every <= 0:
            raise ConfigError(f"logging.every must be positive, got {self.every}")


@dataclasses.dataclass
class DownstreamConfig(Config):
    """In-loop downstream tasks (lmforge.eval.downstream.DownstreamEvaluator)."""

    tasks: list[str] = dataclasses.field(default_factory=list)  # e.g. [arc_easy, hellaswag, piqa]
    formulation: Literal["rc_0shot", "rc_5shot", "mc_5shot"] = "rc_0shot"
    limit: int | None = 200  # examples per task (None: OLMES's full/sampled sets)
    batch_size: int = 16
    pmi: Literal["primary", "all", "none"] = "primary"  # score unconditional requests for which tasks


@dataclasses.dataclass
class EvalConfig(Config):
    every: int | None = None  # steps between evaluations (and at the end); None: no in-loop eval
    perplexity: list[SourceConfig] = dataclasses.field(default_factory=list)  # held-out token files
    downstream: DownstreamConfig = dataclasses.field(default_factory=DownstreamConfig)
    max_instances: int = 64  # per held-out set
    batch_size: int = 8  # per rank

    def validate(self) -> None:
        if self.every is not None and self.every <= 0:
            raise ConfigError(f"eval.every must be positive or null, got {self.every}")
        if self.max_instances <= 0 or self.batch_size <= 0:
            raise ConfigError("eval.max_instances and eval.batch_size must be positive")


@dataclasses.dataclass
class ChatDataConfig(Config):
    """SFT/DPO data (lmforge.data.chat): JSONL files of {"messages": [...]} or {"chosen", "rejected"}."""

    paths: list[str] = dataclasses.field(default_factory=list)  # files, directories or globs
    template: str = "tulu"  # lmforge.tokenizer.chat.CHAT_TEMPLATES: tulu (OLMo), chatml, plain
    packing: bool = False  # sft: pack conversations into rows of trainer.seq_len (no cross-attention)
    seed: int = 0  # data order: epoch e is shuffled with seed + e
    tokenizer: str | None = None  # tokenizer file/dir/OLMo name; default: the one saved with run.init_from
    heldout: list[str] = dataclasses.field(default_factory=list)  # evaluated every eval.every steps (sft: loss; dpo: margin, accuracy)


@dataclasses.dataclass
class DPOConfig(Config):
    loss: Literal["sigmoid", "dpo_norm", "ipo", "simpo"] = "sigmoid"
    beta: float = 0.1
    gamma_beta_ratio: float = 0.3  # simpo only: the target margin gamma, as a multiple of beta

    def validate(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"dpo.beta must be positive, got {self.beta}")


@dataclasses.dataclass
class TrainConfig(Config):
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    chat: ChatDataConfig = dataclasses.field(default_factory=ChatDataConfig)
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)

    SECTIONS = ("run", "model", "data", "optim", "schedule", "trainer", "checkpoint", "logging", "eval", "chat", "dpo")

    @property
    def seq_len(self) -> int:
        return self.trainer.seq_len or self.model.max_seq_len

    @property
    def max_steps(self) -> int:
        return self.trainer.max_steps or self.schedule.total_steps

    def validate(self) -> None:
        if self.trainer.objective != "lm" and not self.chat.paths:
            raise ConfigError(f"trainer.objective is {self.trainer.objective!r} but chat.paths is empty; give the JSONL files")
        if self.trainer.objective == "lm" and self.chat.paths:
            raise ConfigError("chat.paths is set but trainer.objective is 'lm'; set trainer.objective to sft or dpo")
        if self.run.init_from is not None:
            return  # the model section comes from the checkpoint; checked when it is loaded
        if self.seq_len > self.model.max_seq_len:
            raise ConfigError(f"trainer.seq_len ({self.seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})")
        if self.schedule.warmup_steps > self.max_steps and self.trainer.max_steps is None:
            raise ConfigError("schedule.warmup_steps exceeds the number of steps")

    def micro_batch(self, world_size: int) -> int:
        """Instances per forward/backward on one rank; checks that the batch sizes fit together."""
        t = self.trainer
        if t.global_batch % world_size:
            raise ConfigError(f"trainer.global_batch ({t.global_batch}) must be divisible by the number of processes ({world_size})")
        per_rank = t.global_batch // world_size
        micro = t.micro_batch or per_rank
        if per_rank % micro:
            raise ConfigError(
                f"trainer.micro_batch ({micro}) must divide the per-process batch ({per_rank} = global_batch "
                f"{t.global_batch} / {world_size} processes)"
            )
        return micro
