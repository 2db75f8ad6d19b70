"""Run a per-shard function across worker processes, with a progress bar, and stop at once when told.

Every data stage is a plain function of one input shard (plus settings) that writes its output
shard atomically and returns a small picklable result (an Accounting, counts). That makes the
stage trivially parallel here (``--workers N``) and on a cluster (one scheduler task per shard, see
docs/data.md). Results come back in task order, so outputs never depend on the number of workers.

Interrupting (Ctrl-C, SIGTERM, or any error in the parent) cancels the queued shards and stops the
running ones at once: workers ignore SIGINT (the parent decides), and the parent's SIGTERM to a
worker raises inside the shard function, so its ``except BaseException`` clean-up deletes its
temporary files before the worker exits. Finished shards stay finished; a rerun does the rest.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm

__all__ = ["WorkerPool", "WorkerStopped", "Workers", "run_parallel", "shared_pool"]


class WorkerStopped(BaseException):
    """Raised inside a worker's task when the parent stops the pool (not an ``Exception``, so the
    task's ordinary error handling does not swallow it)."""


_STOPPING = False
_IN_TASK = False


def _on_sigterm(signum, frame) -> None:
    global _STOPPING
    if not _IN_TASK:  # idle between tasks: nothing to clean up
        os._exit(143)
    if not _STOPPING:
        _STOPPING = True
        raise WorkerStopped()


def keep_freed_memory() -> None:
    """glibc: serve large blocks from the heap and keep freed memory for reuse. A data task makes
    and drops arrays of several MB per chunk; by default each is a fresh mmap whose pages the kernel
    zeroes again (a third of paragraph dedup's time went to the kernel). Linux/glibc only; no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 256 << 20)  # blocks up to 256 MB from the heap (the largest glibc allows: 32 MB on 32-bit)
        libc.mallopt(m_trim_threshold, 1 << 30)  # give memory back only when 1 GB is free at the top
        libc.mallopt(m_top_pad, 64 << 20)
    except (OSError, AttributeError):  # not glibc (musl): leave the allocator as it is
        pass


def _worker_init(user_init: Callable[[], None] | None) -> None:
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, _on_sigterm)
    if user_init is not None:
        user_init()


def _call(fn: Callable[[Any], Any], task: Any) -> Any:
    global _IN_TASK
    _IN_TASK = True
    try:
        return fn(task)
    except BaseException:
        if _STOPPING:  # the task has cleaned up on the way out; leave without taking another
            os._exit(143)
        raise
    finally:
        _IN_TASK = False


class WorkerPool:
    """A spawned process pool that can be stopped at once (:meth:`stop`): queued tasks are
    cancelled and running ones interrupted. ``submit(fn, task)`` returns a Future."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = None):
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init, initargs=(initializer,)
        )

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        return self.pool.submit(_call, fn, task)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def stop(self, grace_s: float = 10.0) -> None:
        """Cancel what is queued, interrupt what runs (SIGTERM, then SIGKILL after ``grace_s``)."""
        procs = list(getattr(self.pool, "_processes", {}).values())  # CPython's ProcessPoolExecutor keeps them here
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.stop()


class Workers:
    """A :class:`WorkerPool` fed task by task (so the caller can pipeline), or, with ``workers <= 1``,
    each task run at submission in this process. Leaving the block with an exception (Ctrl-C
    included) cancels queued tasks and stops running ones."""

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __enter__(self) -> "Workers":
        if self.workers > 1:
            self.pool = WorkerPool(self.workers)
        return self

    def __exit__(self, exc_type: Any = None, *exc: Any) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.stop()

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Future:
        """A future of ``fn(task)``; without a pool it runs now (exceptions surface at ``result()``)."""
        if self.pool is not None:
            return self.pool.submit(fn, task)
        fut: Future = Future()
        try:
            fut.set_result(fn(task))
        except Exception as e:  # noqa: BLE001 - re-raised by result(); Ctrl-C propagates at once
            fut.set_exception(e)
        return fut


_SHARED: list[WorkerPool] = []  # the pool of the innermost shared_pool block, if any
_SHARED_SIZE: list[int] = []


@contextlib.contextmanager
def shared_pool(workers: int) -> Iterator[None]:
    """Within the block, :func:`run_parallel` calls that want more than one process use one pool of
    ``workers`` processes, spawned once for all of a stage's steps (a spawn costs ~0.3 s per worker),
    instead of a pool per call. An exception stops it like any pool."""
    if workers <= 1:
        yield
        return
    pool = WorkerPool(workers)
    _SHARED.append(pool)
    _SHARED_SIZE.append(workers)
    try:
        yield
    except BaseException:
        pool.stop()
        raise
    else:
        pool.close()
    finally:
        _SHARED.pop()
        _SHARED_SIZE.pop()


def run_parallel(
    fn: Callable[..., Any],
    tasks: Sequence[Any],
    *,
    workers: int = 1,
    desc: str = "shards",
    unit: str = "shard",
    progress: bool = True,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(t) for t in tasks]`` across ``workers`` processes (spawned: safe with threads and
    tokenizers); ``workers <= 1`` runs in this process. ``on_result(i, result)`` is called in this
    process as each task finishes. The first exception stops the pool and propagates."""
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for i, t in enumerate(tasks):
                out.append(fn(t))
                bar.update()
                if on_result is not None:
                    on_result(i, out[-1])
            return out
        results: list[Any] = [None] * len(tasks)
        # the stage's pool when it is not larger than this step's limit (tasks bound the rest)
        shared = _SHARED[-1] if _SHARED and _SHARED_SIZE[-1] <= workers else None
        with contextlib.nullcontext(shared) if shared is not None else WorkerPool(min(workers, len(tasks))) as pool:
            pending = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    results[i] = fut.result()  # raises: the pool is stopped on the way out
                    bar.update()
                    if on_result is not None:
                        on_result(i, results[i])
        return results
    finally:
        bar.close()
