"""lmforge.distributed: process-group setup and parallelism applied from *outside* the model.

The model code (``lmforge.models``, ``lmforge.nn``) never imports ``torch.distributed``; everything
about processes lives here, torchtitan style:

    info = init_distributed()                      # torchrun env vars, or a single process
    model = ModelConfig(...).build(info.device)
    model = parallelize(model, "fsdp", activation_checkpointing=True, mixed_precision="bf16")
    opt = OptimConfig(...).build(model)            # build the optimiser *after* parallelize
    ...
    destroy_distributed()

``parallelize`` applies, in this fixed order (the order matters, see the function's docstring):

1. activation checkpointing, per block   (``checkpoint_wrapper``, non-reentrant)
2. ``torch.compile``, per block          (in place: ``Module.compile()``, so parameter names stay)
3. data parallelism: FSDP2 ``fully_shard`` per block then the root, or DDP around the whole model

Loss normalisation: DDP and FSDP2 *average* gradients over ranks, so each rank's loss must be a
mean over its own tokens with equal token counts per rank for the result to equal the global mean.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

Mode = Literal["none", "ddp", "fsdp"]

__all__ = ["DistInfo", "all_reduce_mean", "destroy_distributed", "init_distributed", "is_distributed", "parallelize", "rank_and_world", "unwrap"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str | None = None, *, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT). Without those variables this is a single process: no group is
    created and rank 0 of 1 is returned. ``backend`` defaults to nccl with CUDA, else gloo.

    With CUDA, the device is ``cuda:LOCAL_RANK`` (and is made current); otherwise the CPU."""
    env = os.environ
    has_env = "RANK" in env and "WORLD_SIZE" in env
    rank = int(env.get("RANK", 0))
    world_size = int(env.get("WORLD_SIZE", 1))
    local_rank = int(env.get("LOCAL_RANK", rank if has_env else 0))
    backend = backend or _default_backend()
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if has_env and world_size > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in env:
                raise RuntimeError(f"init_distributed: {var} is not set (launch with torchrun)")
        kwargs = dict(backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
        if use_cuda:
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def destroy_distributed() -> None:
    """Tear down the process group, if one exists (a no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        gloo = "gloo" in str(dist.get_backend())  # also "cpu:gloo,cuda:nccl"
        dist.barrier()  # no rank tears down while a peer still has collectives in flight
        dist.destroy_process_group()
        if gloo:
            _wait_for_quiet_threads()


def _wait_for_quiet_threads(timeout_s: float = 2.0, poll_s: float = 0.002, quiet_polls: int = 3) -> None:
    """Wait, with the GIL released, until no other thread of this process is runnable (Linux;
    elsewhere a short sleep). Bounded by ``timeout_s``.

    Why: a gloo worker thread releases the work of a collective (and the tensors it holds) a moment
    *after* the collective completed and the caller moved on. Releasing a tensor that has a Python
    object takes the GIL; if the interpreter is already finalizing by then, the thread cannot take
    it and exits mid-destructor, and the whole process aborts ("terminate called without an active
    exception", SIGABRT): a finished run whose torchrun exit status says it failed. Seen on loaded
    CPUs, where a worker can be descheduled for milliseconds. ``destroy_process_group`` does not
    stop these threads (DTensor's caches keep FSDP's device mesh, and with it the group, alive until
    exit), so wait here until they are all asleep again: blocked waiting for the next work."""
    import threading
    import time

    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        time.sleep(0.1)
        return
    me = str(threading.get_native_id())
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < quiet_polls and time.monotonic() < deadline:
        time.sleep(poll_s)  # releases the GIL: a worker waiting for it gets it now
        quiet = quiet + 1 if _others_asleep(tasks, me) else 0


def _others_asleep(tasks: str, me: str) -> bool:
    """True when every thread of this process but ``me`` is sleeping (state S): none is running,
    runnable, or in uninterruptible I/O."""
    for tid in os.listdir(tasks):
        if tid == me:
            continue
        try:
            with open(f"{tasks}/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread exited meanwhile
            continue
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        if state != b"S":
            return False
    return True


def is_distributed() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (``.module``) and similar wrappers (FSDP2 and compile keep the model itself)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "config"):
        model = model.module
    return model


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (a detached copy); ``t`` itself when not distributed."""
    if not is_distributed():
        return t.detach().clone()
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def _blocks(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"parallelize expects a model with a `blocks` nn.ModuleList, got {type(model).__name__}")
    return blocks


def _mp_policy(mixed_precision):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if mixed_precision is None or isinstance(mixed_precision, MixedPrecisionPolicy):
        return mixed_precision
    if mixed_precision in ("bf16", "bfloat16", torch.bfloat16):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    raise ValueError(f"mixed_precision must be None, 'bf16' or a MixedPrecisionPolicy, got {mixed_precision!r}")


def parallelize(
    model: nn.Module,
    mode: Mode = "none",
    *,
    activation_checkpointing: bool = False,
    compile: bool = False,
    mixed_precision=None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply training-time wrappers to ``model`` (which has ``model.blocks``, an nn.ModuleList) and
    return the module to train. Order, fixed:

    1. ``activation_checkpointing``: each block is wrapped in a non-reentrant ``checkpoint_wrapper``
       (its activations are recomputed in backward). Parameter names are unchanged in state dicts.
    2. ``compile``: each block (wrapper included) is compiled in place with ``Module.compile()``.
       Per block, not the whole model: blocks are identical so one graph is reused, and FSDP's
       hooks stay outside the compiled regions.
    3. ``mode``:
       - ``"none"``: nothing more (single process).
       - ``"fsdp"``: FSDP2 ``fully_shard`` on each block, then on the root (embedding, final norm,
         LM head). ``model`` is modified in place and returned; its type is unchanged (it becomes
         an ``FSDPModule`` as well). ``mixed_precision``: None (all float32), ``"bf16"``
         (bf16 parameters in compute, float32 gradient reduction) or a ``MixedPrecisionPolicy``.
       - ``"ddp"``: ``DistributedDataParallel`` around the whole model; the returned module is the
         DDP wrapper (the model is ``.module``). ``mixed_precision`` is not supported here.

    Build the optimiser from the returned module, after this call.
    """
    if mode not in ("none", "ddp", "fsdp"):
        raise ValueError(f"mode must be 'none', 'ddp' or 'fsdp', got {mode!r}")
    if mixed_precision is not None and mode != "fsdp":
        raise ValueError("mixed_precision is only supported with mode='fsdp'")
    if mode != "none" and not dist.is_initialized():
        raise RuntimeError(f"parallelize(mode={mode!r}) needs a process group: call init_distributed() under torchrun")
    blocks = _blocks(model)

    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

        for i, block in enumerate(blocks):
            blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=False)

    if compile:
        for block in blocks:
            block.compile()

    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        mp = _mp_policy(mixed_precision)
        kwargs = {"reshard_after_forward": reshard_after_forward}
        if mp is not None:
            kwargs["mp_policy"] = mp
        for block in blocks:
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model

    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    return model
