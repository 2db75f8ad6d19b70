"""Training data: one or more sets of token files, mixed by weight, in a seeded global order.

    data = DataConfig(sources=[SourceConfig(name="web", paths=["tok/web"], weight=0.7),
                               SourceConfig(name="code", paths=["tok/code"], weight=0.3)], seed=42)
    mix = data.build(seq_len=2048)
    mix.batch(step, global_batch, rank=r, world_size=w)   # the instances rank r trains on at step

How a mixture is made (all of it a pure function of the config and the files, so anyone can redo it):

1. Each source's token files are cut into fixed-length instances (``TokenDataset``).
2. Source *i* contributes ``count_i = floor(N * w_i / sum(w))`` instances. ``N`` is
   ``data.instances`` when set; otherwise the largest mix in which no source repeats more than its
   ``max_repeat`` (1.0 = each instance at most once). A source smaller than its share is repeated
   (up-sampled) only up to ``max_repeat``; a larger one is down-sampled.
3. A source contributes ``count_i // len_i`` whole copies of itself and, for the remainder, the
   first ``count_i % len_i`` instances of a permutation seeded with ``seed`` and the source's
   position (so when up-sampling every instance appears floor or ceil times; down-sampling takes
   a seeded random subset).
4. The global order of epoch *e* is a permutation of the mix seeded with ``seed + e`` (for a single
   source of weight 1 this is exactly ``TokenDataset.global_order``). Batch *s* is the *s*-th run
   of ``global_batch`` positions; each rank takes a contiguous slice of it.

numpy only (no torch), so ``lmforge data inspect`` stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.config import Config, ConfigError
from lmforge.data.dataset import Instance, TokenDataset
from lmforge.data.documents import DataError

__all__ = ["SourceConfig", "DataConfig", "Mixture", "MixedInstance", "document_ids", "fingerprint_change"]


@dataclasses.dataclass
class SourceConfig(Config):
    """One set of token files (files, directories of ``*.npy``, or globs)."""

    paths: list[str] = dataclasses.field(default_factory=list)
    name: str = ""  # defaults to the first path's name
    weight: float = 1.0  # share of the mix (normalised over sources)
    max_repeat: float = 1.0  # how many times the source may be repeated to reach its share

    def validate(self) -> None:
        if not self.paths:
            raise ConfigError("data.sources[].paths must list at least one token file or directory")
        if self.weight <= 0:
            raise ConfigError(f"data source {self.name or self.paths[0]!r}: weight must be positive, got {self.weight}")
        if self.max_repeat <= 0:
            raise ConfigError(f"data source {self.name or self.paths[0]!r}: max_repeat must be positive, got {self.max_repeat}")


@dataclasses.dataclass
class DataConfig(Config):
    sources: list[SourceConfig] = dataclasses.field(default_factory=list)
    seed: int = 0  # the global order of epoch e is seeded with seed + e
    instances: int | None = None  # size of the mix; None = as large as max_repeat allows
    dtype: str | None = None  # token dtype; None = from tokenize_summary.json (dolma files: set it)
    eos_id: int | None = None  # for document masking/ids; None = from tokenize_summary.json
    document_masking: bool = False  # attend only within a document (documents split at EOS)
    tokenizer: str | None = None  # for decoding in `lmforge data inspect`; None = from tokenize_summary.json

    def validate(self) -> None:
        if self.instances is not None and self.instances <= 0:
            raise ConfigError(f"data.instances must be positive or null, got {self.instances}")
        if self.dtype is not None and self.dtype not in ("uint16", "uint32", "int32", "int64"):
            raise ConfigError(f"data.dtype must be uint16, uint32, int32 or int64, got {self.dtype!r}")
        names = [s.name for s in self.sources if s.name]
        if len(names) != len(set(names)):
            raise ConfigError(f"data.sources: names must be unique, got {names}")

    def build(self, seq_len: int) -> Mixture:
        if not self.sources:
            raise ConfigError("data.sources is empty: add at least one source with paths (token files from `lmforge data tokenize`)")
        return Mixture(self, seq_len)


@dataclasses.dataclass(frozen=True)
class MixedInstance:
    position: int  # position in the mix (before the epoch permutation)
    source: str
    instance: Instance


def _expand(paths: list[str]) -> list[str]:
    import glob

    out = []
    for p in paths:
        if any(c in p for c in "*?["):
            # a glob keeps token files and directories: "tok/*" must not pick up the .csv.gz
            # metadata or tokenize_summary.json beside the .npy files
            hits = [h for h in sorted(glob.glob(p)) if h.endswith(".npy") or Path(h).is_dir()]
            if not hits:
                raise DataError(
                    f"no token files (*.npy) match {p!r}; fix data.sources[].paths "
                    "(token files come from `lmforge data tokenize` or `dolma tokens`)"
                )
        else:
            hits = [p]
        for h in hits:
            if not Path(h).exists():
                raise DataError(f"{h}: no such token file or directory (run `lmforge data tokenize` first)")
            out.append(h)
    return out


def _read_summary_field(path: str, key: str) -> Any:
    d = Path(path)
    d = d if d.is_dir() else d.parent
    f = d / "tokenize_summary.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8")).get(key)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


class Mixture:
    def __init__(self, cfg: DataConfig, seq_len: int):
        self.cfg, self.seq_len = cfg, seq_len
        self.names: list[str] = []
        self.datasets: list[TokenDataset] = []
        for i, src in enumerate(cfg.sources):
            files = _expand(src.paths)
            dtype = cfg.dtype
            for f in files:
                recorded = _read_summary_field(f, "dtype")
                if dtype is None and recorded is None:
                    raise DataError(
                        f"{f}: no tokenize_summary.json beside the token files, so their dtype is unknown; "
                        "set data.dtype (uint16 for OLMo-1/GPT-NeoX vocabularies, uint32 for OLMo-2)"
                    )
                if dtype is not None and recorded is not None and recorded != dtype:
                    raise DataError(
                        f"{f}: data.dtype is {dtype} but tokenize_summary.json says the files hold {recorded}; "
                        f"set data.dtype: {recorded} (or leave it null), or keep files of other dtypes in separate runs"
                    )
            ds = TokenDataset(files, seq_len, dtype=dtype)
            if len(ds) == 0:
                raise DataError(f"data source {src.name or files[0]!r}: no instance of {seq_len} tokens (files too short)")
            self.datasets.append(ds)
            self.names.append(src.name or Path(src.paths[0].rstrip("/")).name or f"source{i}")
        w = np.array([s.weight for s in cfg.sources], dtype=np.float64)
        ratio = w / w.sum()
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        cap = np.array([s.max_repeat for s in cfg.sources]) * sizes
        n = cfg.instances if cfg.instances is not None else int(math.floor(min(cap / ratio) + 1e-9))
        counts = np.floor(n * ratio + 1e-9).astype(np.int64)
        for i, c in enumerate(counts):
            if c > cap[i] + 1e-9:
                raise DataError(
                    f"data source {self.names[i]!r}: {c} instances requested but it has {int(sizes[i])} "
                    f"and max_repeat {cfg.sources[i].max_repeat}; raise max_repeat or lower data.instances"
                )
        self.counts = counts
        # position -> (source, instance within source), concatenated source by source
        src_ids, inst_ids = [], []
        for i, (ds, c) in enumerate(zip(self.datasets, counts)):
            # whole copies of the source in instance order (the epoch permutation shuffles them; so a
            # single source of weight 1 is exactly TokenDataset's order), plus a seeded random part
            rng = np.random.default_rng([cfg.seed, i])
            whole, part = divmod(int(c), len(ds))
            picks = np.concatenate([np.arange(len(ds))] * whole + [rng.permutation(len(ds))[:part]])
            src_ids.append(np.full(c, i, dtype=np.int32))
            inst_ids.append(picks.astype(np.int64))
        self._src = np.concatenate(src_ids) if src_ids else np.zeros(0, np.int32)
        self._inst = np.concatenate(inst_ids) if inst_ids else np.zeros(0, np.int64)
        if len(self) == 0:
            raise DataError("the data mixture is empty; check data.sources and data.instances")
        self._orders: dict[int, np.ndarray] = {}
        eos = cfg.eos_id
        if eos is None:
            for src in cfg.sources:
                eos = (_read_summary_field(_expand(src.paths)[0], "tokenizer") or {}).get("eos_token_id")
                if eos is not None:
                    break
        self.eos_id = eos

    def __len__(self) -> int:
        return len(self._src)

    @property
    def files(self) -> list[str]:
        return [f for d in self.datasets for f in d.files]

    def __getitem__(self, position: int) -> MixedInstance:
        i = int(self._src[position])
        return MixedInstance(position, self.names[i], self.datasets[i][int(self._inst[position])])

    # --- order ------------------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.clear()
            self._orders[epoch] = np.random.default_rng(self.cfg.seed + epoch).permutation(len(self))
        return self._orders[epoch]

    def steps_per_epoch(self, global_batch: int) -> int:
        n = len(self) // global_batch
        if n == 0:
            raise DataError(f"the data mix has {len(self)} instances of {self.seq_len} tokens, fewer than one global batch of {global_batch}")
        return n

    def positions(self, step: int, global_batch: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
        """Mix positions of batch ``step`` (0-based) for ``rank``: a contiguous slice of the global batch."""
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} is not divisible by world size {world_size}")
        epoch, b = divmod(step, self.steps_per_epoch(global_batch))
        batch = self.order(epoch)[b * global_batch : (b + 1) * global_batch]
        per = global_batch // world_size
        return batch[rank * per : (rank + 1) * per].tolist()

    def batch(self, step: int, global_batch: int, *, rank: int = 0, world_size: int = 1) -> list[MixedInstance]:
        return [self[p] for p in self.positions(step, global_batch, rank=rank, world_size=world_size)]

    def check_ids(self, instances: list[MixedInstance], vocab_size: int) -> None:
        """Raise a DataError naming the file and token offset of the first id >= ``vocab_size``."""
        for m in instances:
            t = m.instance.tokens
            if int(t.max()) >= vocab_size or int(t.min()) < 0:
                off = int(np.flatnonzero((t >= vocab_size) | (t < 0))[0])
                raise DataError(
                    f"{m.instance.file}: token id {int(t[off])} at token offset {m.instance.start + off} is outside the "
                    f"model's vocabulary (vocab_size {vocab_size}); were these files made with another tokenizer?"
                )

    def tokenizer_spec(self) -> dict[str, Any] | None:
        """The tokenizer the files were made with: ``{"path", "eos_token_id", "pad_token_id",
        "bos_token_id"}`` from ``data.tokenizer`` and/or tokenize_summary.json; None if unknown."""
        info: dict[str, Any] = {}
        for f in self.files:
            recorded = _read_summary_field(f, "tokenizer")
            if recorded:
                info = dict(recorded)
                break
        if self.cfg.tokenizer is not None:
            info["path"] = self.cfg.tokenizer
        if not info.get("path") or not Path(info["path"]).exists():
            return None
        if self.cfg.eos_id is not None:
            info["eos_token_id"] = self.cfg.eos_id
        return {k: info.get(k) for k in ("path", "eos_token_id", "pad_token_id", "bos_token_id")}

    # --- record -----------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What the order depends on, to save with a run and check on resume/inspect."""
        files = []
        for name, ds in zip(self.names, self.datasets):
            for f in ds.files:
                files.append({"source": name, "path": f, "bytes": os.path.getsize(f)})
        h = hashlib.sha256()
        h.update(self._src.tobytes())
        h.update(self._inst.tobytes())
        return {
            "seed": self.cfg.seed,
            "seq_len": self.seq_len,
            "instances": len(self),
            "sources": [
                {"name": n, "instances_available": len(d), "instances_used": int(c), "weight": s.weight}
                for n, d, c, s in zip(self.names, self.datasets, self.counts, self.cfg.sources)
            ],
            "files": files,
            "mix_sha256": h.hexdigest(),
        }


def fingerprint_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two ``Mixture.fingerprint()`` records in a way that changes the data a
    step trains on (None when nothing does): the mix, its seed/length, or any token file's size.
    Conversation datasets (``data.chat``) record ``sha256`` of their token ids instead of files."""
    then_files = {f["path"]: f["bytes"] for f in old.get("files", [])}
    now_files = {f["path"]: f["bytes"] for f in new.get("files", [])}
    changed = sorted(p for p in then_files.keys() | now_files.keys() if then_files.get(p) != now_files.get(p))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]} ({then_files.get(changed[0], 'absent')} bytes then, {now_files.get(changed[0], 'absent')} now){more}"
    for key in ("mix_sha256", "sha256", "kind", "packing", "seed", "seq_len", "global_batch"):
        if key in old and key in new and old[key] != new[key]:
            return f"{key}: {old[key]!r} then, {new[key]!r} now"
    return None


def document_ids(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """(B, T) document number of each token within its row: a document ends *with* its EOS, so the
    token after an EOS starts the next document. Used for intra-document attention masking."""
    is_eos = (tokens == eos_id).astype(np.int64)
    return np.cumsum(is_eos, axis=-1) - is_eos  # the EOS itself belongs to the document it ends
