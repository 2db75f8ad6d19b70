"""Supervised fine-tuning (Open Instruct / Tulu): next-token loss on the assistant's tokens only.

The Trainer, checkpoints, logging, FSDP/DDP and resume are pretraining's; what differs is the data
(``lmforge.data.chat.SFTDataset``: conversations rendered with a chat template, labels set only
where the assistant speaks: each assistant turn's content and its EOS) and, for packed rows, that
attention and positions restart with every conversation. The loss is the mean over the assistant
tokens of the global batch, so a long answer weighs as many tokens as it has (Tulu's "sum"
normalisation divided by a constant), independent of how the batch is cut into micro-batches.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from lmforge.distributed import is_distributed
from lmforge.train.module import MicroBatch, TrainModule

__all__ = ["SFTTrainModule", "SFTHeldout"]


class SFTTrainModule(TrainModule):
    count_name = "loss_tokens"  # assistant tokens in the global batch

    def loss_sum(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.model(
            mb.input_ids,  # (b, T): right-padded conversations, or packed rows
            labels=mb.labels,  # (b, T): IGNORE_INDEX except where the next token is the assistant's
            document_ids=mb.document_ids,  # packed rows: one id per conversation, -1 for padding
            position_ids=mb.extra.get("position_ids"),  # packed rows: 0, 1, ... again per conversation
            reduction="sum",
        )
        return out.loss, {}


class SFTHeldout:
    """In-loop evaluator: mean loss over the assistant tokens of held-out conversations."""

    def __init__(self, name: str, data, module: SFTTrainModule, batch_size: int, rank: int = 0, world_size: int = 1):
        self.name, self.data, self.module, self.batch_size = name, data, module, batch_size
        self.rank, self.world_size = rank, world_size

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        m = self.module
        was_training = model.training
        model.eval()
        n = self.data.n
        chunks = [list(range(s, min(s + self.batch_size, n))) for s in range(0, n, self.batch_size)]
        totals = torch.zeros(2, dtype=torch.float64, device=m.device)  # loss sum, tokens
        for r in range(math.ceil(len(chunks) / self.world_size)):
            k = r * self.world_size + self.rank
            a = self.data.rows_micro_batch(chunks[k] if k < len(chunks) else chunks[0])
            t = {key: torch.from_numpy(v) for key, v in a.items()}
            mb = MicroBatch(t.pop("input_ids"), t.pop("labels"), t.pop("document_ids", None), t).to(m.device)
            with m._autocast():
                loss, _ = m.loss_sum(mb)
            if k < len(chunks):
                totals += torch.stack([loss.double(), torch.tensor(float(mb.n_label_tokens), dtype=torch.float64, device=m.device)])
        if is_distributed():
            dist.all_reduce(totals)
        model.train(was_training)
        loss = float(totals[0]) / max(float(totals[1]), 1.0)
        return {"loss": loss, "tokens": int(totals[1])}
