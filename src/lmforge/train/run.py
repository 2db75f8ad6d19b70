"""Wire a TrainConfig into a running Trainer: the body of ``lmforge train CONFIG``.

    cfg = TrainConfig.from_yaml("configs/train/tiny-cpu.yaml", overrides=["trainer.max_steps=10"])
    summary = train(cfg, resume=True)

Under ``torchrun --nproc_per_node=N -m lmforge train CONFIG`` every process runs this; the process
group comes from torchrun's environment (``lmforge.distributed.init_distributed``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lmforge.config import ConfigError
from lmforge.distributed import DistInfo, destroy_distributed, init_distributed, parallelize
from lmforge.train.callbacks import CheckpointSaver, ConsoleProgress, CurvesPlot, Evaluation, MetricsJSONL, WandbLogger
from lmforge.train.config import TrainConfig
from lmforge.train.module import LMTrainModule, TrainModule
from lmforge.train.trainer import Trainer

__all__ = ["build_trainer", "train", "peak_flops_per_device"]

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


def build_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The model in float32 with the run's seed. On CUDA it is built on the meta device and
    materialised after sharding would be the memory-lean path; we build it on the target device
    directly (every rank the same numbers, from the same seed) and let FSDP shard it."""
    torch.manual_seed(cfg.run.seed)
    return cfg.model.build(device)


def build_trainer(
    cfg: TrainConfig,
    info: DistInfo | None = None,
    *,
    quiet: bool = False,
    evaluators: list | None = None,
    callbacks: list | None = None,
) -> Trainer:
    """Everything ``cfg`` describes, wired: model (parallelised), optimizer, train module, data,
    callbacks. ``evaluators`` (callables ``model -> {metric: value}`` with a ``name``) run in the
    in-loop evaluation callback besides the ones ``cfg.eval`` describes; ``callbacks`` are added
    after the built-in ones."""
    info = info or init_distributed()
    device = _resolve_device(cfg, info)
    micro = cfg.micro_batch(info.world_size)
    mode = _parallel_mode(cfg, info.world_size)
    amp = _precision(cfg, device)
    model = build_model(cfg, device)
    flops = model.num_flops_per_token(cfg.seq_len)
    t = cfg.trainer
    wrapped = parallelize(
        model,
        mode,
        activation_checkpointing=t.activation_checkpointing,
        compile=t.compile,
        mixed_precision="bf16" if (amp is torch.bfloat16 and mode == "fsdp") else None,
    )
    optimizer = cfg.optim.build(wrapped)
    autocast = amp if (amp is not None and mode != "fsdp") else None  # FSDP2 casts through its policy
    module: TrainModule = LMTrainModule(
        wrapped,
        optimizer,
        cfg.schedule,
        peak_lr=cfg.optim.lr,
        grad_clip=t.grad_clip,
        autocast_dtype=autocast,
        stability=t.stability,
        device=device,
        z_loss=t.z_loss,
    )
    data = cfg.data.build(cfg.seq_len)
    run_dir = Path(cfg.run.dir)
    extra_callbacks = list(callbacks or [])
    callbacks = [CheckpointSaver(cfg.checkpoint.every, cfg.checkpoint.keep_last, cfg.checkpoint.keep_every, cfg.checkpoint.at_end)]
    evaluators = list(evaluators or [])
    if cfg.eval.every is not None and cfg.eval.perplexity:
        from lmforge.eval.token_loss import TokenLoss

        evaluators += [
            TokenLoss(
                s.name or Path(s.paths[0].rstrip("/")).name,
                s.paths,
                seq_len=cfg.seq_len,
                max_instances=cfg.eval.max_instances,
                batch_size=cfg.eval.batch_size,
                dtype=cfg.data.dtype,
                autocast_dtype=autocast,
            )
            for s in cfg.eval.perplexity
        ]
    if cfg.eval.every is not None and cfg.eval.downstream.tasks:
        from lmforge.eval.downstream import DownstreamEvaluator

        spec = data.tokenizer_spec()
        if spec is None:
            raise ConfigError("eval.downstream needs the tokenizer: set data.tokenizer (no tokenize_summary.json names one)")
        from lmforge.tokenizer import Tokenizer

        d = cfg.eval.downstream
        evaluators.append(
            DownstreamEvaluator(
                d.tasks,
                Tokenizer.from_file(spec["path"], eos_token_id=spec["eos_token_id"], pad_token_id=spec["pad_token_id"], bos_token_id=spec["bos_token_id"]),
                d.formulation,
                d.limit,
                d.batch_size,
                autocast_dtype=autocast,
                max_length=cfg.seq_len,
                pmi={"primary": "primary", "all": True, "none": False}[d.pmi],
            )
        )
    if evaluators:
        if cfg.eval.every is None:
            raise ConfigError("evaluators were given but eval.every is null; set eval.every to the steps between evaluations")
        callbacks.append(Evaluation(evaluators, cfg.eval.every))
    callbacks.append(MetricsJSONL(run_dir))
    if cfg.logging.progress and not quiet:
        callbacks.append(ConsoleProgress())
    w = cfg.logging.wandb
    if w.enabled:
        callbacks.append(WandbLogger(run_dir, project=w.project, name=cfg.run.name, mode=w.mode, entity=w.entity, tags=w.tags, config=cfg.to_dict()))
    if cfg.logging.plot:
        callbacks.append(CurvesPlot())
    callbacks += extra_callbacks
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = None
    spec = data.tokenizer_spec()
    if spec is not None:
        from lmforge.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_file(
            spec["path"], eos_token_id=spec["eos_token_id"], pad_token_id=spec["pad_token_id"], bos_token_id=spec["bos_token_id"]
        )
    return Trainer(
        module,
        data,
        run_dir=run_dir,
        max_steps=cfg.max_steps,
        global_batch=t.global_batch,
        micro_batch=micro,
        dist=info,
        callbacks=callbacks,
        config=cfg.to_dict(),
        document_masking=cfg.data.document_masking,
        vocab_size=cfg.model.vocab_size,
        flops_per_token=flops,
        peak_flops=peak_flops_per_device(device, t.peak_tflops),
        log_every=cfg.logging.every,
        quiet=quiet,
        tokenizer=tokenizer,
    )


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
        trainer = build_trainer(cfg, info, quiet=quiet, evaluators=evaluators, callbacks=callbacks)
        if info.is_main:
            cfg.save(trainer.run_dir / "config.yaml")
        n = trainer.module.model
        trainer.print(
            f"lmforge train: {cfg.run.name} -> {trainer.run_dir}  ({info.world_size} process(es), {trainer.max_steps} steps, "
            f"global batch {trainer.global_batch} x {trainer.seq_len} tokens, micro-batch {trainer.micro_batch}, "
            f"{sum(p.numel() for p in n.parameters()) if info.world_size == 1 else 'sharded'} parameters)"
        )
        return trainer.fit(resume=resume)
    finally:
        destroy_distributed()
