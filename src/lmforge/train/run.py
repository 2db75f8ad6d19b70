"""Wire a TrainConfig into a running Trainer: the body of ``lmforge train CONFIG``.

    cfg = TrainConfig.from_yaml("configs/train/tiny-cpu.yaml", overrides=["trainer.max_steps=10"])
    summary = train(cfg, resume=True)

Under ``torchrun --nproc_per_node=N -m lmforge train CONFIG`` every process runs this; the process
group comes from torchrun's environment (``lmforge.distributed.init_distributed``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from lmforge.config import ConfigError
from lmforge.distributed import DistInfo, destroy_distributed, init_distributed, parallelize
from lmforge.train.callbacks import AverageCheckpoints, CheckpointSaver, ConsoleProgress, CurvesPlot, Evaluation, MetricsJSONL, WandbLogger
from lmforge.train.config import TrainConfig
from lmforge.train.objectives import OBJECTIVES, build_chat_data, heldout_evaluator
from lmforge.train.trainer import Trainer

__all__ = ["build_trainer", "build_chat_data", "init_model", "train", "peak_flops_per_device"]

# Dense bf16 tensor-core peaks (FLOP/s) per device, for MFU. fp32 runs are reported against these too.
_PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "GH200": 989.4e12, "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12}


def peak_flops_per_device(device: torch.device, override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def _resolve_device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    want = cfg.run.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is 'cuda' but no CUDA device is available; use run.device=cpu")
    if want == "cpu":
        return torch.device("cpu")
    return info.device


def _parallel_mode(cfg: TrainConfig, world_size: int) -> str:
    mode = cfg.trainer.parallel
    if mode == "auto":
        return "fsdp" if world_size > 1 else "none"
    if mode == "fsdp" and world_size == 1 and cfg.trainer.fsdp_single_process:
        return "fsdp"  # a 1-rank FSDP2: for its bf16 mixed-precision policy, nothing is sharded
    if mode != "none" and world_size == 1:
        return "none"  # one process: nothing to shard or replicate
    if mode == "none" and world_size > 1:
        raise ConfigError(f"trainer.parallel is 'none' but {world_size} processes were started; use ddp or fsdp")
    return mode


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.trainer.precision
    if p == "auto":
        p = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if p == "bf16" else None


def _seed_host_rngs(seed: int) -> None:
    """Python's and numpy's global generators from the run's seed (they are saved in checkpoints
    with torch's), so a run and its resumed continuation hold the same states, not ones seeded from
    the operating system at start-up."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The model in float32 with the run's seed. On CUDA it is built on the meta device and
    materialised after sharding would be the memory-lean path; we build it on the target device
    directly (every rank the same numbers, from the same seed) and let FSDP shard it."""
    torch.manual_seed(cfg.run.seed)
    return cfg.model.build(device)


def init_model(cfg: TrainConfig, device: torch.device):
    """The model to train and the tokenizer saved with it (None if none): built from ``cfg.model``
    with the run's seed, or loaded from ``run.init_from`` (float32), whose architecture then
    replaces ``cfg.model`` so the run's config and checkpoints describe what was trained."""
    if cfg.run.init_from is None:
        return build_model(cfg, device), None
    from lmforge.checkpoint import CheckpointError, load_pretrained, resolve_checkpoint

    try:
        source = resolve_checkpoint(cfg.run.init_from)  # a run directory: its latest complete checkpoint
    except CheckpointError:
        raise ConfigError(f"run.init_from {Path(cfg.run.init_from)} is a run directory without a complete checkpoint") from None
    model, tokenizer = load_pretrained(source, device=device, dtype=torch.float32)
    cfg.model = model.config
    if cfg.seq_len > cfg.model.max_seq_len:
        raise ConfigError(f"trainer.seq_len ({cfg.seq_len}) exceeds the max_seq_len ({cfg.model.max_seq_len}) of run.init_from {cfg.run.init_from}")
    return model, tokenizer


def carry_optimizer_state(init_from: str, model, optimizer) -> None:
    """Load the AdamW moments and step counts of the training checkpoint ``init_from`` (a run
    directory: its latest) into ``optimizer``, keeping this run's hyperparameters."""
    from lmforge.checkpoint import CheckpointError, resolve_checkpoint
    from lmforge.checkpoint.sharded import load_checkpoint

    source = resolve_checkpoint(init_from)
    if not (source / ".metadata").is_file():
        raise CheckpointError(f"run.keep_optimizer: {source} holds no optimizer state (an HF export, an average or a model-only "
                              "checkpoint); point run.init_from at a training checkpoint or drop run.keep_optimizer")
    load_checkpoint(source, model=model, optimizer=optimizer, keep_param_groups=True)


def build_trainer(
    cfg: TrainConfig,
    info: DistInfo | None = None,
    *,
    quiet: bool = False,
    evaluators: list | None = None,
    callbacks: list | None = None,
) -> Trainer:
    """Everything ``cfg`` describes, wired: model (parallelised), optimizer, the objective's train
    module and data (:data:`lmforge.train.objectives.OBJECTIVES`), callbacks. ``evaluators``
    (callables ``model -> {metric: value}`` with a ``name``) run in the in-loop evaluation callback
    besides the ones ``cfg.eval`` describes; ``callbacks`` are added after the built-in ones."""
    info = info or init_distributed()
    _seed_host_rngs(cfg.run.seed)
    device = _resolve_device(cfg, info)
    mode = _parallel_mode(cfg, info.world_size)
    if mode == "fsdp" and info.world_size == 1 and not torch.distributed.is_initialized():
        # One process without torchrun: a 1-rank group in memory (no ports), so FSDP2 can wrap.
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
    amp = _precision(cfg, device)
    model, init_tokenizer = init_model(cfg, device)
    t = cfg.trainer
    objective = OBJECTIVES[t.objective]
    data, tokenizer = objective.data(cfg, init_tokenizer, info, quiet)
    if t.epochs is not None:
        if not objective.epochs:
            raise ConfigError("trainer.epochs is for sft/dpo data; pretraining runs set trainer.max_steps or schedule.total_steps")
        t.max_steps = data.steps_for_epochs(t.epochs, t.global_batch)
        cfg.schedule = cfg.schedule.resolved(t.max_steps)
    else:
        cfg.schedule = cfg.schedule.resolved()
    flops = model.num_flops_per_token(cfg.seq_len)
    wrapped = parallelize(model, mode, activation_checkpointing=t.activation_checkpointing, compile=t.compile,
                          mixed_precision="bf16" if (amp is torch.bfloat16 and mode == "fsdp") else None)
    optimizer = cfg.optim.build(wrapped)
    if cfg.run.keep_optimizer:  # a resume then loads the run's own checkpoint over it
        carry_optimizer_state(cfg.run.init_from, wrapped, optimizer)
    autocast = amp if (amp is not None and mode != "fsdp") else None  # FSDP2 casts through its policy
    module = objective.module(cfg, wrapped, optimizer, peak_lr=cfg.optim.lr, grad_clip=t.grad_clip, autocast_dtype=autocast,
                              stability=t.stability, device=device)
    evaluators = list(evaluators or []) + _evaluators(cfg, tokenizer, module, info, autocast)
    run_files = {"config.yaml": cfg.to_yaml()}  # written by the Trainer once resume and data checks pass
    accounting = getattr(getattr(data, "dataset", None), "accounting_json", None)
    if accounting:
        run_files["data_accounting.json"] = accounting
    return Trainer(
        module,
        data,
        run_dir=Path(cfg.run.dir),
        max_steps=cfg.max_steps,
        global_batch=t.global_batch,
        micro_batch=cfg.micro_batch(info.world_size),
        dist=info,
        callbacks=_callbacks(cfg, evaluators, quiet) + list(callbacks or []),
        config=cfg.to_dict(),
        flops_per_token=flops,
        peak_flops=peak_flops_per_device(device, t.peak_tflops),
        log_every=cfg.logging.every,
        quiet=quiet,
        tokenizer=tokenizer,
        async_metrics=t.async_metrics,
        run_files=run_files,
    )


def _evaluators(cfg: TrainConfig, tokenizer, module, info: DistInfo, autocast) -> list:
    """The in-loop evaluators ``cfg.eval`` (and ``chat.heldout``) describe."""
    found = []
    if cfg.trainer.objective != "lm" and cfg.chat.heldout:
        found.append(heldout_evaluator(cfg, tokenizer, module, info))
    if cfg.eval.every is not None and cfg.eval.perplexity:
        from lmforge.eval.token_loss import TokenLoss

        found += [
            TokenLoss(s.name or Path(s.paths[0].rstrip("/")).name, s.paths, seq_len=cfg.seq_len, max_instances=cfg.eval.max_instances,
                      batch_size=cfg.eval.batch_size, dtype=cfg.data.dtype, autocast_dtype=autocast)
            for s in cfg.eval.perplexity
        ]
    if cfg.eval.every is not None and cfg.eval.downstream.tasks:
        from lmforge.eval.downstream import DownstreamEvaluator

        if tokenizer is None:
            raise ConfigError("eval.downstream needs the tokenizer: set data.tokenizer (no tokenize_summary.json names one)")
        d = cfg.eval.downstream
        found.append(DownstreamEvaluator(d.tasks, tokenizer, d.formulation, d.limit, d.batch_size, autocast_dtype=autocast,
                                         max_length=cfg.seq_len, pmi={"primary": "primary", "all": True, "none": False}[d.pmi]))
    return found


def _callbacks(cfg: TrainConfig, evaluators: list, quiet: bool) -> list:
    """The built-in callbacks, in order: checkpoints, evaluation, metrics.jsonl, console, W&B, plots."""
    c = cfg.checkpoint
    callbacks = [CheckpointSaver(c.every, c.keep_last, c.keep_every, c.at_end, c.background)]
    if c.average_last:  # after the saver: the last checkpoint is written and pruning done
        callbacks.append(AverageCheckpoints(c.average_last, cfg.schedule.decay_start()))
    if evaluators:
        if cfg.eval.every is None:
            raise ConfigError("evaluators were given but eval.every is null; set eval.every to the steps between evaluations")
        callbacks.append(Evaluation(evaluators, cfg.eval.every, at_start=cfg.trainer.objective != "lm"))
    run_dir = Path(cfg.run.dir)
    callbacks.append(MetricsJSONL(run_dir))
    if cfg.logging.progress and not quiet:
        callbacks.append(ConsoleProgress())
    w = cfg.logging.wandb
    if w.enabled:
        callbacks.append(WandbLogger(run_dir, project=w.project, name=cfg.run.name, mode=w.mode, entity=w.entity, tags=w.tags, config=cfg.to_dict()))
    if cfg.logging.plot:
        callbacks.append(CurvesPlot())
    return callbacks


def train(
    cfg: TrainConfig,
    *,
    resume: bool | str | os.PathLike | None = None,
    quiet: bool = False,
    evaluators: list | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the last step's metrics. ``evaluators``/``callbacks``:
    see :func:`build_trainer`."""
    info = init_distributed()
    try:
        with own_run_dir(Path(cfg.run.dir), resume, info):
            trainer = build_trainer(cfg, info, quiet=quiet, evaluators=evaluators, callbacks=callbacks)
            n = trainer.module.model
            trainer.print(
                f"lmforge train: {cfg.run.name} -> {trainer.run_dir}  ({info.world_size} process(es), {trainer.max_steps} steps, "
                f"global batch {trainer.global_batch} x {trainer.seq_len} tokens, micro-batch {trainer.micro_batch}, "
                f"{sum(p.numel() for p in n.parameters()) if info.world_size == 1 else 'sharded'} parameters)"
            )
            return trainer.fit(resume=resume)
    finally:
        destroy_distributed()


def check_resume(run_dir: Path, resume: bool | str | os.PathLike | None) -> None:
    """Refuse, before anything is written: a run directory that has checkpoints without
    ``resume``, or a ``resume`` path that is not a complete checkpoint."""
    from lmforge.checkpoint.sharded import COMPLETE, latest_checkpoint
    from lmforge.checkpoint.unsharded import CheckpointError

    if resume in (None, False):
        found = latest_checkpoint(run_dir)
        if found is not None:
            raise CheckpointError(
                f"{run_dir} already has checkpoints (latest {found.name}); pass --resume to continue it, or choose another run.dir"
            )
    elif resume is not True:
        path = Path(resume)
        if not path.is_dir() or not (path / COMPLETE).is_file():
            raise CheckpointError(f"--resume {path}: not a complete checkpoint directory (RUN/checkpoints/stepNNNNNNN with a {COMPLETE} marker)")


def _remove_stale_scratch(run_dir: Path) -> None:
    """Temporaries of killed runs: half-written checkpoint directories and files (the caller holds
    the run dir's lock, so no live run owns them)."""
    import shutil

    from lmforge.storage import remove_stale_temporaries

    remove_stale_temporaries(run_dir)
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir():
        for p in ckpts.iterdir():
            if p.name.startswith(".step") and ".tmp-" in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def own_run_dir(run_dir: Path, resume: bool | str | os.PathLike | None, info: DistInfo) -> Iterator[None]:
    """Hold ``run_dir`` for this training job (rank 0 takes the lock for every rank) after checking
    that this job may write there; every rank raises the same one-line error otherwise."""
    from lmforge.storage import lock_output

    with contextlib.ExitStack() as stack:
        error: BaseException | None = None
        if info.is_main:
            try:
                stack.enter_context(lock_output(run_dir, "lmforge train " + " ".join(sys.argv[1:])))
                check_resume(run_dir, resume)
                _remove_stale_scratch(run_dir)
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        if info.world_size > 1 and torch.distributed.is_initialized():
            box = [None if error is None else (type(error), str(error))]
            torch.distributed.broadcast_object_list(box, src=0)
            if box[0] is not None and error is None:
                kind, msg = box[0]
                error = kind(msg)
        if error is not None:
            raise error
        yield
