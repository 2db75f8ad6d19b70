"""Evaluation spread over processes: each rank computes some batches, every rank gets all results.

    spread = Spread.current()                 # rank r of w under torchrun, else (0, 1)
    mine = spread.take(batches)               # batches r, r + w, r + 2w, ...
    results = spread.merge({slot: value ...}) # the union of every rank's dict, on every rank

The split is by *batch*, after the batches are planned exactly as one process plans them (sorted,
then cut): every request is computed in the same batch, with the same padding, as in a one-process
run, so the numbers are bitwise those of one process, for any number of ranks. The batches are
sorted longest first and dealt out round robin, so ranks get similar work.

Under ``torchrun`` :func:`Spread.current` joins the process group (gloo on CPU, nccl with CUDA) if
nobody has; the results are exchanged with ``all_gather_object`` (plain Python: floats, strings).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence, TypeVar

__all__ = ["Spread"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Spread:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Spread":
        """This process's place: from the running process group, or from torchrun's environment
        (the group is then created), else one process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            from lmforge.distributed import init_distributed

            info = init_distributed()
            return cls(info.rank, info.world_size)
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world``-th one, starting at ``rank``."""
        return list(items[self.rank :: self.world])

    def merge(self, part: dict[Any, Any]) -> dict[Any, Any]:
        """The union of every rank's ``part`` (keys are disjoint), the same on every rank."""
        if self.world == 1:
            return dict(part)
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, part)
        out: dict[Any, Any] = {}
        for p in parts:
            out.update(p)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
