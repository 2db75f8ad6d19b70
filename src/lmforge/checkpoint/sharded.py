"""Sharded training-state checkpoints (model + optimizer + run state) with torch.distributed.checkpoint.

    path = save_checkpoint(run_dir, step, model=model, optimizer=opt, extra={"step": step, "rng": rng_state()})
    ...
    ckpt = latest_checkpoint(run_dir)      # (lmforge.checkpoint.listing: list_checkpoint_infos, resolve_checkpoint)
    if ckpt is not None:
        extra = load_checkpoint(ckpt, model=model, optimizer=opt)
        set_rng_state(extra["rng"])
    prune_checkpoints(run_dir, keep_last=3, keep_every=10_000)

A checkpoint is ``run_dir/checkpoints/step{step:07d}/`` holding

    *.distcp, .metadata   DCP shards of {"model": ..., "optim": {"state": ...}} (tensors only)
    optim_groups.json     the optimizer's param_groups (hyperparameters), plain JSON
    extra.json            the caller's ``extra`` as JSON; tensors in it go to extra.safetensors
    model.safetensors, config.yaml   the full (unsharded) model, loadable with ``load_model``
    COMPLETE              written last, inside the temporary directory, before the atomic rename

It is written to ``.step{step:07d}.tmp-*`` and renamed into place, so a killed save never leaves a
directory named like a checkpoint; ``latest_checkpoint`` also requires the ``COMPLETE`` marker.
Works in one process without a process group and with N processes (every rank calls every
function except ``prune_checkpoints``, which only rank 0 acts on); the run directory must be on a
filesystem all ranks share.

A checkpoint is untrusted input: nothing here runs code from one. DCP's pickled ``.metadata`` is read
by :class:`lmforge.checkpoint.safe_dcp.SafeReader` (an exact allowlist of classes; tensors only, in
shard files of the checkpoint directory; tensors read with ``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lmforge.checkpoint.listing import (  # re-exported: finding checkpoints lives there (no torch.distributed)
    CHECKPOINTS,
    COMPLETE,
    EXTRA_JSON,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
)
from lmforge.checkpoint.safe_dcp import SafeReader, TensorOnlyPlanner
from lmforge.checkpoint.unsharded import CheckpointError, atomic_save_safetensors, load_state, save_model
from lmforge.config import atomic_write_text
from lmforge.distributed import rank_and_world, unwrap
from lmforge.storage import crash_point, fsync_dir, umask as _umask

EXTRA_TENSORS = "extra.safetensors"
OPTIM_GROUPS = "optim_groups.json"
GROUP_TENSORS = "optim_groups.safetensors"

__all__ = [
    "CHECKPOINTS",
    "COMPLETE",
    "EXTRA_JSON",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


# --- process groups --------------------------------------------------------------------------
# DCP says this for every single-process save/load, including on the background writer's thread
# (where a catch_warnings() of the main thread no longer applies): single process is the intent.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence DCP's 'assuming the intent is to save/load in a single process' (that is the intent)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (also a barrier)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --- JSON encoding of ``extra`` (tensors go to a safetensors file) ----------------------------
def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint extra{where}: dict key {k!r} is not a string")
            if k.startswith("__") and k.endswith("__"):
                raise TypeError(f"checkpoint extra{where}: dict key {k!r} is reserved")
            out[k] = _encode(v, tensors, f"{where}[{k!r}]")
        return out
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(obj, np.ndarray):
        return {"__ndarray__": {"dtype": obj.dtype.str, "shape": list(obj.shape), "data": obj.ravel().tolist()}}
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"checkpoint extra{where}: cannot store {type(obj).__name__} (use tensors, numbers, strings, lists, dicts)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__ndarray__"}:
            import numpy as np

            d = obj["__ndarray__"]
            return np.asarray(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def _write_json(dir_: Path, name: str, tensors_name: str, obj: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    data = _encode(obj, tensors, "")
    if tensors:
        atomic_save_safetensors(tensors, dir_ / tensors_name)
    atomic_write_text(dir_ / name, json.dumps(data, allow_nan=True) + "\n")


def _read_json(dir_: Path, name: str, tensors_name: str) -> Any:
    path = dir_ / name
    if not path.is_file():
        raise CheckpointError(f"{dir_}: no {name}; the checkpoint is incomplete or was not written by lmforge")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    tensors = load_state(dir_ / tensors_name) if (dir_ / tensors_name).is_file() else {}
    return _decode(data, tensors)


# --- RNG state ------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / python RNG states, in a form ``extra`` can store."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (after a round trip through a checkpoint)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if "numpy" in state:
        import numpy as np

        np.random.set_state(tuple(state["numpy"]))


# --- save / find / load / prune ---------------------------------------------------------------
class _FullModel:
    """What ``save_model`` needs from a model: ``state_dict()`` and ``config``."""

    def __init__(self, state: dict[str, torch.Tensor], config: Any):
        self._state, self.config = state, config

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _model_config(model: torch.nn.Module) -> Any:
    return getattr(unwrap(model), "config", None)


def _begin_save(run_dir: str | os.PathLike, step: int, extra: dict[str, Any] | None) -> tuple[Path, Path]:
    """Checks, then the final path and a fresh hidden temporary directory beside it (made by rank 0,
    its name shared with every rank)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    final = checkpoint_dir(run_dir, step)
    _encode(dict(extra or {}), {}, "")  # unstorable extra: TypeError on every rank, before writing anything
    tmp_name = None
    if rank_and_world()[0] == 0:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent)
        os.chmod(tmp_name, 0o777 & ~_umask())  # mkdtemp makes it 0700
    return final, Path(_broadcast(tmp_name))


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    tokenizer: Any | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step{step:07d}`` atomically; every rank must call this.
    (:func:`save_checkpoint_background` writes the same directory without blocking training.)"""
    final, tmp = _begin_save(run_dir, step, extra)
    rank = rank_and_world()[0]
    error: str | None = None
    cause: BaseException | None = None
    try:
        osd = get_optimizer_state_dict(model, optimizer)
        state = {"model": get_model_state_dict(model), "optim": {"state": osd["state"]}}
        try:
            with _single_process_quiet():
                dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp)), no_dist=not dist.is_initialized())
        except (OSError, CheckpointException) as e:  # every rank learns of any rank's write error from DCP
            raise CheckpointError(_save_error(final, _last_error_line(e))) from None
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            try:
                cfg = _model_config(model)
                if cfg is None:
                    raise CheckpointError("save_checkpoint: the model has no .config; cannot write model.safetensors")
                world = rank_and_world()[1]
                _finish_on_rank0(tmp, final, step, full, cfg, config, tokenizer, osd["param_groups"], dict(extra or {}), world)
            except Exception as e:  # report to the other ranks instead of leaving them in a barrier
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                cause = e
    finally:
        if rank == 0 and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    error = _broadcast(error)
    if error is not None:
        raise CheckpointError(_save_error(final, f"on rank 0: {error}")) from cause
    return final


def _save_error(final: Path, why: str) -> str:
    """One line: what failed, and the checkpoint a resume would start from (untouched by the failure)."""
    try:  # a full disk often surfaces as some other error of the writer (torch's zip writer: "unexpected pos")
        free = shutil.disk_usage(final.parent).free
        if free < 16 << 20 and "space left" not in why:
            why += f"; no space left on device: {free:,} bytes free under {final.parent}"
    except OSError:
        pass
    previous = [p for _, p in list_checkpoints(final.parent.parent) if p.name < final.name]
    then = (f"the previous checkpoint {previous[-1]} is intact: fix the cause (e.g. free disk space), then continue with "
            f"--resume") if previous else "no earlier checkpoint exists"
    return f"{final}: save failed ({why}); {then}"


def _finish_on_rank0(tmp: Path, final: Path, step: int, full: dict[str, torch.Tensor], cfg, config, tokenizer, param_groups, extra, world: int) -> None:
    """Rank 0, after every shard is written: the unsharded weights and the small files, the COMPLETE
    marker, then the rename that makes the checkpoint visible."""
    save_model(tmp, _FullModel(full, cfg), config=config, tokenizer=tokenizer)
    _write_json(tmp, OPTIM_GROUPS, GROUP_TENSORS, param_groups)
    _write_json(tmp, EXTRA_JSON, EXTRA_TENSORS, extra)
    atomic_write_text(tmp / COMPLETE, json.dumps({"step": step, "world_size": world}) + "\n")
    fsync_dir(tmp)
    crash_point(f"before publishing checkpoint {final.name}")
    old = None
    if final.exists():  # re-saving a step: move the old one aside, then swap in
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    crash_point(f"after publishing checkpoint {final.name}")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class PendingSave:
    """A checkpoint being written in the background. ``wait()`` (every rank) returns its path once
    it is complete, or raises :class:`CheckpointError` naming what failed; until then the directory
    is a hidden temporary one that ``latest_checkpoint`` never returns."""

    def __init__(self, final: Path, tmp: Path, future, finisher, blocking_s: float):
        self.final, self.tmp, self.future, self.finisher = final, tmp, future, finisher
        self.blocking_s = blocking_s  # how long the training loop was stopped (staging to host memory)
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self.future.done() and (self.finisher is None or not self.finisher.is_alive())

    def wait(self) -> Path:
        if self._done:
            return self.final
        error: str | None = None
        cause: BaseException | None = None
        try:
            self.future.result()
            if self.finisher is not None:
                self.finisher.join()
                if self.finisher.error is not None:
                    raise self.finisher.error
        except Exception as e:  # noqa: BLE001 - reported on every rank below
            error, cause = f"{type(e).__name__}: {_last_error_line(e)}", e
        finally:
            if rank_and_world()[0] == 0 and self.tmp.exists() and not self.final.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
        # Every rank learns whether any rank failed (a rank's own write error, or rank 0's finish).
        errors = [error]
        if dist.is_initialized():
            errors = [None] * dist.get_world_size()
            dist.all_gather_object(errors, error)
        self._done = True
        bad = next((e for e in errors if e is not None), None)
        if bad is not None:
            raise CheckpointError(_save_error(self.final, f"in the background: {bad}")) from cause
        return self.final


class _Finisher(threading.Thread):
    def __init__(self, future, work):
        super().__init__(daemon=False, name="lmforge-checkpoint-finish")
        self.future, self.work, self.error = future, work, None

    def run(self) -> None:
        try:
            self.future.result()  # rank 0's future ends after every rank's shards and the metadata are written
            self.work()
        except BaseException as e:  # noqa: BLE001 - handed to wait()
            self.error = e


_BACKGROUND_GROUP = None


def _background_group():
    """A gloo process group for the background writer's collectives, so they never interleave with
    training's (NCCL) collectives on the default group. Created once, collectively."""
    global _BACKGROUND_GROUP
    if dist.is_initialized() and _BACKGROUND_GROUP is None:
        _BACKGROUND_GROUP = dist.new_group(backend="gloo")
    return _BACKGROUND_GROUP


def save_checkpoint_background(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    tokenizer: Any | None = None,
) -> PendingSave:
    """:func:`save_checkpoint` without stopping training: the training state is copied to host
    memory (the only blocking part), then written by a background thread; rank 0 then builds the
    unsharded ``model.safetensors`` from the written shards (no collective) and renames the
    directory into place. Call ``.wait()`` on every rank before the next save and before exiting."""
    t0 = time.perf_counter()
    final, tmp = _begin_save(run_dir, step, extra)
    extra = dict(extra or {})
    rank = rank_and_world()[0]
    group = _background_group()
    osd = get_optimizer_state_dict(model, optimizer)
    model_sd = get_model_state_dict(model)
    state = {"model": model_sd, "optim": {"state": osd["state"]}}
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in model_sd.items()}  # global shapes, DTensors included
    param_groups = copy.deepcopy(osd["param_groups"])
    cfg = _model_config(model)
    world = rank_and_world()[1]
    with _single_process_quiet():
        future = dcp.async_save(state, storage_writer=dcp.FileSystemWriter(str(tmp)), process_group=group, no_dist=not dist.is_initialized())
    finisher = None
    if rank == 0:
        if cfg is None:
            raise CheckpointError("save_checkpoint: the model has no .config; cannot write model.safetensors")

        def work() -> None:
            full = {k: torch.empty(shape, dtype=dtype) for k, (shape, dtype) in shapes.items()}
            with _single_process_quiet():
                dcp.load({"model": full}, storage_reader=dcp.FileSystemReader(str(tmp)), no_dist=True)
            _finish_on_rank0(tmp, final, step, full, cfg, config, tokenizer, param_groups, extra, world)

        finisher = _Finisher(future, work)
        finisher.start()
    return PendingSave(final, tmp, future, finisher, time.perf_counter() - t0)


def _last_error_line(e: BaseException) -> str:
    """The most specific line of a (possibly multi-rank, traceback-laden) DCP error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    if errors:
        return errors[-1]
    return lines[0] if lines else type(e).__name__


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    keep_param_groups: bool = False) -> dict[str, Any]:
    """Load model and optimizer state from ``path`` in place and return the saved ``extra``.
    ``keep_param_groups``: the optimizer keeps its own hyperparameters (a new run carrying the
    moments of another: ``run.keep_optimizer``); the groups must hold the same parameters."""
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise CheckpointError(
            f"{ckpt}: no such checkpoint directory; pass one of run_dir/checkpoints/stepNNNNNNN (see latest_checkpoint)"
        )
    if not (ckpt / COMPLETE).is_file():
        raise CheckpointError(
            f"{ckpt}: incomplete checkpoint (no {COMPLETE} marker, the save was interrupted); resume from an earlier one"
        )
    groups = _read_json(ckpt, OPTIM_GROUPS, GROUP_TENSORS)
    extra = _read_json(ckpt, EXTRA_JSON, EXTRA_TENSORS)
    osd = get_optimizer_state_dict(model, optimizer)
    state = {"model": get_model_state_dict(model), "optim": {"state": osd["state"]}}
    reader = SafeReader(str(ckpt))
    if not (ckpt / ".metadata").is_file():
        raise CheckpointError(f"{ckpt}: no .metadata; the sharded state is missing (the checkpoint is damaged)")
    reader.read_metadata()  # checked here, before DCP (which falls back to other files when it fails)
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=reader, planner=TensorOnlyPlanner(), no_dist=not dist.is_initialized())
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:
        first = _last_error_line(e)
        raise CheckpointError(f"{ckpt}: cannot load the sharded state ({first}); does the model/optimizer match the run?") from None
    set_model_state_dict(model, state["model"])
    if keep_param_groups:
        if [sorted(g["params"]) for g in osd["param_groups"]] != [sorted(g["params"]) for g in groups]:
            raise CheckpointError(f"{ckpt}: its optimizer groups hold other parameters than this run's (optim.decay_norms / "
                                  "decay_embeddings differ?); make them match to carry the optimizer state")
        groups = osd["param_groups"]
    set_optimizer_state_dict(model, optimizer, {"state": state["optim"]["state"], "param_groups": groups})
    return extra


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, keep_every: int | None = None) -> list[Path]:
    """Delete complete checkpoints except the newest ``keep_last`` and every step divisible by
    ``keep_every``; returns what was deleted. Only rank 0 deletes (others return [])."""
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    if keep_every is not None and keep_every < 1:
        raise ValueError(f"keep_every must be >= 1 or None, got {keep_every}")
    if rank_and_world()[0] != 0:
        return []
    found = list_checkpoints(run_dir)
    keep = {p for _, p in found[max(0, len(found) - keep_last) :]} if keep_last else set()
    deleted = []
    for step, p in found:
        if p in keep or (keep_every is not None and step % keep_every == 0):
            continue
        # Rename first so a killed prune leaves a temporary, never a half-deleted "complete" dir.
        trash = p.parent / f".{p.name}.tmp-prune"
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(p)
    return deleted
