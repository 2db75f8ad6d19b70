"""Where the shard tasks of a corpus stage run: this machine's process pool, or a Ray cluster.

    results = run_tasks(tokenize_shard, tasks, workers=4, executor=ExecutorConfig(executor="ray"))

Every stage is a function of one task (a shard, a bucket, a source) that writes its outputs
atomically behind a done-marker and returns a small picklable result; the driver merges the
results. That makes the executor a detail: the outputs and the accounting are the same on every
executor, for any number of workers, and a task that runs twice (a retry) writes nothing twice.

``local`` (the default): spawned worker processes on this machine (:mod:`lmforge.corpus.parallel`),
``workers`` at a time; Ctrl-C stops them at once.

``ray``: one Ray task per shard with its resource request (``cpus_per_task``, ``memory_per_task``),
on the cluster at ``ray_address`` (``auto``: the cluster this machine belongs to, e.g. after ``ray
start``) or on a Ray started here (bound to 127.0.0.1, ``workers`` CPUs) and stopped afterwards. A
task whose worker process dies (killed, out of memory, a lost node) is retried up to
``max_retries`` times; a task that raises is not (the same input would raise again): the stage
stops with the task's error, naming its file. lmforge must be installed where the workers run
(``pip install "lmforge[ray]"`` on every node).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Literal, Sequence

from lmforge.config import Config, ConfigError, option
from lmforge.corpus.parallel import run_parallel
from lmforge.corpus.plan import replaying, run_step
from lmforge.data.documents import DataError

__all__ = ["RAY_INSTALL", "ExecutorConfig", "TaskFailed", "run_tasks"]

RAY_INSTALL = 'pip install "lmforge[ray]"'


@dataclasses.dataclass
class ExecutorConfig(Config):
    """Where a stage's tasks run (each field is also a command-line flag of every data stage)."""

    executor: Literal["local", "ray"] = option("local", help="local: processes on this machine; ray: tasks on a Ray cluster")
    ray_address: str | None = option(None, help="ray: the cluster to connect to ('auto': the one this machine is in); default: start a local Ray")
    cpus_per_task: float = option(1.0, help="ray: CPUs reserved per task")
    memory_per_task: str | None = option(None, help="ray: memory reserved per task, e.g. 2GB")
    max_retries: int = option(3, help="ray: how often a task whose worker died is run again")

    def validate(self) -> None:
        if self.cpus_per_task <= 0:
            raise ConfigError(f"cpus_per_task must be > 0, got {self.cpus_per_task}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.memory_per_task is not None:
            memory_bytes(self.memory_per_task)


class TaskFailed(DataError):
    """A task failed for good (it raised, or its worker died more often than retries allow)."""


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


def memory_bytes(text: str) -> int:
    """``"2GB"`` -> 2147483648 (binary units: KB, MB, GB, TB)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*", text.lower())
    if not m or m.group(2) not in _UNITS:
        raise ConfigError(f"memory_per_task {text!r} is not a size such as 512MB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    workers: int = 1,
    executor: ExecutorConfig | None = None,
    desc: str = "shards",
    unit: str = "shard",
    progress: bool = True,
    on_result: Callable[[int, Any], None] | None = None,
    describe: Callable[[Any], str] = str,
    more_steps: bool = False,
) -> list[Any]:
    """``[fn(t) for t in tasks]`` on the executor, results in task order; ``on_result(i, result)``
    runs in this process as each task finishes. ``describe(task)`` names a task in errors (its file).

    One call is one *step* of a stage; ``more_steps``: the stage runs further steps after this one.
    During a plan's replay (``lmforge data run-shard``, :mod:`lmforge.corpus.plan`) the step's
    results come from its done-markers instead, or the replay stops here."""
    if replaying():
        return run_step(fn, tasks, desc=desc, unit=unit, describe=describe, on_result=on_result, more_steps=more_steps)
    executor = executor or ExecutorConfig()
    executor.validate()
    on_result = _killable(on_result)
    if executor.executor == "local":
        return run_parallel(fn, tasks, workers=workers, desc=desc, unit=unit, progress=progress, on_result=on_result)
    return _run_on_ray(fn, tasks, executor, workers=workers, desc=desc, unit=unit, progress=progress, on_result=on_result, describe=describe)


def _killable(on_result: Callable[[int, Any], None] | None) -> Callable[[int, Any], None] | None:
    """With ``LMFORGE_KILL_DRIVER_AFTER=N`` (the fault tests) the driver SIGKILLs itself once N tasks
    have finished: a driver killed in the middle of a stage, whose rerun must resume."""
    after = int(os.environ.get("LMFORGE_KILL_DRIVER_AFTER") or 0)
    if not after:
        return on_result
    finished = [0]

    def wrapped(i: int, result: Any) -> None:
        if on_result is not None:
            on_result(i, result)
        finished[0] += 1
        if finished[0] >= after:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    return wrapped


# --- Ray -----------------------------------------------------------------------------------------------
def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _connect(ray, cfg: ExecutorConfig, workers: int) -> bool:
    """Connect to (or start) Ray; True when this process started it (and must stop it)."""
    if ray.is_initialized():
        return False
    common = dict(log_to_driver=False, ignore_reinit_error=True, configure_logging=True, logging_level="WARNING")
    if cfg.ray_address:  # a cluster: its nodes run their own installation of lmforge
        ray.init(address=cfg.ray_address, **common)
        return True
    # a Ray of our own, on this machine only: its workers import what this process imports (a source
    # checkout on sys.path included)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    ray.init(address="local", num_cpus=max(1, workers), include_dashboard=False, _node_ip_address="127.0.0.1", runtime_env=env, **common)
    return True


def _options(cfg: ExecutorConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": cfg.cpus_per_task, "max_retries": cfg.max_retries, "retry_exceptions": False}
    if cfg.memory_per_task:
        opts["memory"] = memory_bytes(cfg.memory_per_task)
    return opts


def _unwrap_error(ray, e: BaseException, what: str) -> BaseException:
    """The task's own exception (a DataError stays a one-line DataError), or a TaskFailed naming it."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = e.as_instanceof_cause()
        original = getattr(e, "cause", None)
        if isinstance(original, (DataError, ConfigError)):
            return original
        first = str(original or cause).strip().splitlines()
        return TaskFailed(f"{what}: {type(original or cause).__name__}: {first[0] if first else ''}")
    reason = str(e).strip().splitlines()
    return TaskFailed(f"{what}: the task's worker died and retries ran out ({type(e).__name__}: {reason[0] if reason else ''})")


def _run_on_ray(fn, tasks, cfg: ExecutorConfig, *, workers, desc, unit, progress, on_result, describe) -> list[Any]:
    from tqdm.auto import tqdm

    ray = _ray()
    started = _connect(ray, cfg, workers)
    results: list[Any] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), desc=f"{desc} (ray)", unit=unit, disable=not progress, dynamic_ncols=True)
    refs: list = []
    pending: list = []
    try:
        remote = ray.remote(fn).options(**_options(cfg))
        refs = [remote.remote(t) for t in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    results[i] = ray.get(ref)
                except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as e:
                    raise _unwrap_error(ray, e, f"{desc} task {i} ({describe(tasks[i])})") from None
                bar.update()
                if on_result is not None:
                    on_result(i, results[i])
        return results
    except BaseException:
        # Nothing keeps running for a stage that stopped: the tasks not yet done are cancelled (queued ones
        # dropped, running ones interrupted). Never a finished one, and never by killing its worker: Ray
        # (2.60) aborts the driver when a force-cancelled task's reply arrives after all.
        for ref in pending:
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - finished or already gone
                pass
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
