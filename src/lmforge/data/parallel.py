"""Run a per-shard function across worker processes, with a progress bar.

Every data stage is a plain function of one input shard (plus settings) that writes its output
shard atomically and returns a small picklable result (an Accounting, counts). That makes the
stage trivially parallel here (``--workers N``) and on a cluster (one scheduler task per shard, see
docs/data.md). Results come back in task order, so outputs never depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm


def run_parallel(
    fn: Callable[..., Any],
    tasks: Sequence[Any],
    *,
    workers: int = 1,
    desc: str = "shards",
    unit: str = "shard",
    progress: bool = True,
) -> list[Any]:
    """``[fn(t) for t in tasks]`` across ``workers`` processes (spawned: safe with threads and
    tokenizers); ``workers <= 1`` runs in this process. Exceptions propagate."""
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(fn(t))
                bar.update()
            return out
        results: list[Any] = [None] * len(tasks)
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            from concurrent.futures import as_completed

            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
        return results
    finally:
        bar.close()
