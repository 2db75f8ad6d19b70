"""What the Trainer trains on: one protocol for every kind of data, so the loop never asks which
kind it has.

    data = TokenStream(mixture, vocab_size=50304, document_masking=True)    # pretraining: token files
    data = ChatData(SFTDataset(...), vocab_size=50304)                      # SFT or DPO conversations
    for mb in data.micro_batches(step, global_batch, micro_batch, rank, world_size): ...

A source hands out this rank's share of global batch ``step`` (0-based) as :class:`MicroBatch`es,
says how many real tokens a global batch holds (padding excluded) and, where it has epochs, which
epoch a step is in; its ``fingerprint`` is what the data order depends on (saved with the run, and
compared on resume). Ids outside the model's vocabulary stop training with one line.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from lmforge.data.mixture import Mixture, document_ids
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.train.module import MicroBatch, TrainingError

__all__ = ["ChatData", "TokenStream", "TrainingData"]


class TrainingData(Protocol):
    seq_len: int

    def micro_batches(self, step: int, global_batch: int, micro_batch: int, rank: int, world_size: int) -> list[MicroBatch]: ...

    def batch_tokens(self, step: int, global_batch: int) -> int: ...

    def epoch_of(self, step: int, global_batch: int) -> float | None: ...

    def fingerprint(self) -> dict[str, Any]: ...


class TokenStream:
    """Pretraining data: fixed-length instances of a :class:`~lmforge.data.mixture.Mixture` of token
    files, labels shifted inside each instance, optionally with document ids for intra-document
    attention masking."""

    def __init__(self, mixture: Mixture, *, vocab_size: int | None = None, document_masking: bool = False):
        if document_masking and mixture.eos_id is None:
            raise TrainingError("data.document_masking needs the EOS id: set data.eos_id (no tokenize_summary.json found)")
        self.mixture, self.vocab_size, self.document_masking = mixture, vocab_size, document_masking
        self.seq_len = mixture.seq_len

    def micro_batches(self, step: int, global_batch: int, micro_batch: int, rank: int, world_size: int) -> list[MicroBatch]:
        instances = self.mixture.batch(step, global_batch, rank=rank, world_size=world_size)
        if self.vocab_size is not None:
            self.mixture.check_ids(instances, self.vocab_size)
        tokens = np.stack([m.instance.tokens for m in instances])  # (b, T) int64
        ids = torch.from_numpy(tokens)
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, :-1] = ids[:, 1:]  # the last position has no next token inside the instance
        docs = torch.from_numpy(document_ids(tokens, self.mixture.eos_id)) if self.document_masking else None
        return [
            MicroBatch(ids[i : i + micro_batch], labels[i : i + micro_batch], docs[i : i + micro_batch] if docs is not None else None)
            for i in range(0, len(instances), micro_batch)
        ]

    def batch_tokens(self, step: int, global_batch: int) -> int:
        return global_batch * self.seq_len

    def epoch_of(self, step: int, global_batch: int) -> float | None:
        return None  # token streams are sampled by weight, not read in epochs

    def fingerprint(self) -> dict[str, Any]:
        return self.mixture.fingerprint()


class ChatData:
    """SFT or DPO data: a conversation dataset (:class:`~lmforge.data.chat.SFTDataset`,
    :class:`~lmforge.data.chat.PreferenceDataset`) whose numpy micro-batches become tensors; the
    arrays besides ids, labels and document ids go to ``MicroBatch.extra``."""

    def __init__(self, dataset: Any, *, vocab_size: int | None = None):
        self.dataset, self.vocab_size = dataset, vocab_size
        self.seq_len = dataset.seq_len

    def micro_batches(self, step: int, global_batch: int, micro_batch: int, rank: int, world_size: int) -> list[MicroBatch]:
        out = []
        for a in self.dataset.micro_batches(step, global_batch, micro_batch, rank, world_size):
            top = int(a["input_ids"].max())
            if self.vocab_size is not None and top >= self.vocab_size:
                raise TrainingError(f"token id {top} in batch {step} is outside the model's vocabulary ({self.vocab_size}); use the model's tokenizer")
            t = {k: torch.from_numpy(v) for k, v in a.items()}
            docs = t.pop("document_ids", None)
            out.append(MicroBatch(t.pop("input_ids"), t.pop("labels"), docs, t))
        return out

    def batch_tokens(self, step: int, global_batch: int) -> int:
        return self.dataset.batch_tokens(step, global_batch)

    def epoch_of(self, step: int, global_batch: int) -> float | None:
        return self.dataset.epoch_of(step, global_batch)

    def steps_for_epochs(self, epochs: float, global_batch: int) -> int:
        return self.dataset.steps_for_epochs(epochs, global_batch)

    def fingerprint(self) -> dict[str, Any]:
        return self.dataset.fingerprint()
