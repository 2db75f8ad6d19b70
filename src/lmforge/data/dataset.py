"""Fixed-length training instances over OLMo token files, in a seeded global order.

The token stream of each file (documents joined with EOS, as ``lmforge data tokenize`` and
``dolma tokens`` write them) is cut into consecutive instances of ``seq_len`` tokens; the tail of a
file shorter than ``seq_len`` is dropped (as OLMo does, so an instance never spans two files).
The global order of an epoch is a permutation of all instances seeded with ``seed + epoch``: the
same on every machine, for any number of ranks, and recorded by the run so anyone can answer
"what did the model see at step N" (``instances_at_step``).

numpy only: the trainer turns instances into tensors.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmforge.data.documents import DataError


@dataclasses.dataclass(frozen=True)
class Instance:
    index: int  # instance number in the dataset (before permutation)
    tokens: np.ndarray  # (seq_len,) token ids, int64
    file: str
    start: int  # token offset in the file
    doc_ids: tuple[str, ...]  # documents whose tokens appear in the instance, in order (when metadata exists)


class TokenDataset:
    def __init__(self, paths: Sequence[str | os.PathLike], seq_len: int, *, dtype: Any = None):
        from lmforge.data.token_files import read_token_file

        if seq_len <= 0:
            raise DataError(f"seq_len must be positive, got {seq_len}")
        files = []
        for p in paths:
            p = Path(p)
            files.extend(sorted(p.glob("*.npy")) if p.is_dir() else [p])
        if not files:
            raise DataError(f"no token files (*.npy) in {', '.join(map(str, paths))}")
        self.seq_len = seq_len
        self.files = [str(f) for f in files]
        self._arrays = [read_token_file(f, dtype) for f in files]
        counts = [len(a) // seq_len for a in self._arrays]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first instance of each file
        self._meta: dict[int, tuple[list[int], list[str]]] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_tokens(self) -> int:
        return len(self) * self.seq_len

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"instance {index} out of range (dataset has {len(self)})")
        f = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return f, int(index - self._offsets[f]) * self.seq_len

    def _doc_ids(self, f: int, start: int) -> tuple[str, ...]:
        if f not in self._meta:
            from lmforge.data.token_files import read_metadata

            try:
                rows = read_metadata(self.files[f])
            except (DataError, FileNotFoundError, OSError):
                rows = []
            self._meta[f] = ([r.end for r in rows], [r.id for r in rows])
        ends, ids = self._meta[f]
        if not ends:
            return ()
        first = bisect.bisect_right(ends, start)
        last = bisect.bisect_right(ends, start + self.seq_len - 1)
        return tuple(ids[first : last + 1])

    def __getitem__(self, index: int) -> Instance:
        f, start = self._locate(index)
        tokens = np.asarray(self._arrays[f][start : start + self.seq_len], dtype=np.int64)
        return Instance(index, tokens, self.files[f], start, self._doc_ids(f, start))

    # --- order ------------------------------------------------------------------------------------
    def global_order(self, seed: int, epoch: int = 0) -> np.ndarray:
        """The permutation of all instances for ``epoch`` (seeded with ``seed + epoch``)."""
        return np.random.default_rng(seed + epoch).permutation(len(self))

    def instances_at_step(self, step: int, global_batch: int, seed: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
        """Instance indices of batch ``step`` (0-based) as seen by ``rank`` of ``world_size``:
        each rank takes a contiguous slice of the global batch."""
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} is not divisible by world size {world_size}")
        per_epoch = len(self) // global_batch
        if per_epoch == 0:
            raise DataError(f"the dataset has {len(self)} instances, fewer than one global batch of {global_batch}")
        epoch, b = divmod(step, per_epoch)
        order = self.global_order(seed, epoch)
        batch = order[b * global_batch : (b + 1) * global_batch]
        per_rank = global_batch // world_size
        return batch[rank * per_rank : (rank + 1) * per_rank].tolist()
