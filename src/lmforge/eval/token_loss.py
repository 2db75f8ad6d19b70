"""Loss and perplexity of a model on held-out token files: the in-loop evaluator of pretraining.

    ev = TokenLoss("c4-val", ["tok/val"], seq_len=2048, max_instances=256, batch_size=8)
    ev(model)   # {"loss": 3.21, "ppl": 24.8, "tokens": 524032}

The first ``max_instances`` instances of the files (in file order, not shuffled, so every
evaluation sees the same tokens) are split evenly over ranks; sums are all-reduced, so every rank
returns the same numbers. The model may be wrapped (DDP/FSDP): it is called, not unwrapped.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from lmforge.data.dataset import TokenDataset
from lmforge.distributed import rank_and_world
from lmforge.nn.loss import IGNORE_INDEX

__all__ = ["TokenLoss"]


class TokenLoss:
    def __init__(
        self,
        name: str,
        paths: Sequence[str],
        *,
        seq_len: int,
        max_instances: int = 64,
        batch_size: int = 8,
        dtype: str | None = None,
        autocast_dtype: torch.dtype | None = None,
    ):
        self.name = name
        self.dataset = TokenDataset(paths, seq_len, dtype=dtype)
        self.n = min(max_instances, len(self.dataset))
        self.batch_size, self.autocast_dtype = batch_size, autocast_dtype

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        rank, world = rank_and_world()
        device = next(model.parameters()).device
        per_rank = self.n // world  # equal work on every rank (FSDP needs every rank in every forward)
        mine = list(range(rank * per_rank, (rank + 1) * per_rank))
        was_training = model.training
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, token count
        try:
            for i in range(0, len(mine), self.batch_size):
                tokens = np.stack([self.dataset[j].tokens for j in mine[i : i + self.batch_size]])
                ids = torch.from_numpy(tokens).to(device)
                labels = torch.full_like(ids, IGNORE_INDEX)
                labels[:, :-1] = ids[:, 1:]
                ctx = torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype else torch.autocast(device.type, enabled=False)
                with ctx:
                    out = model(ids, labels=labels, reduction="sum")
                sums[0] += out.ce.double()
                sums[1] += out.n_tokens.double()
        finally:
            model.train(was_training)
        if world > 1:
            dist.all_reduce(sums)
        loss_sum, count = sums.tolist()
        loss = loss_sum / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(count)}
