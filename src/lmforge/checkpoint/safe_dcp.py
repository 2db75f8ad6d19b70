"""Reading torch.distributed.checkpoint (DCP) directories that are untrusted input.

    reader = SafeReader(ckpt_dir)                       # lmforge's own checkpoints: tensors only
    reader = SafeReader(d, foreign=True)                # another trainer's (OLMo-core): bytes entries listed, never read
    metadata = reader.read_metadata()                   # checked; a CheckpointError names the file otherwise
    dcp.load(state, storage_reader=reader, planner=TensorOnlyPlanner(), no_dist=True)

A checkpoint is meant to be shared, so nothing here runs code from one. DCP's ``.metadata`` is a
pickle: it is read with an unpickler that resolves exactly the (module, name) pairs below and nothing
else (the classes DCP's metadata is made of, torch's dtypes and ``Size``, the layout lookup, path and
container types). Dotted names, which pickle protocol 4 resolves attribute by attribute (e.g.
``torch.distributed.checkpoint.filesystem`` + ``os.system``), are refused outright.

The metadata must then describe tensors stored in plain shard files of the checkpoint directory,
with no stream transforms. DCP reads a tensor with ``torch.load(weights_only=True)``; a *bytes*
entry (pickled Python objects) would be read with ``weights_only=False``, so :class:`TensorOnlyPlanner`
refuses to load one. lmforge's own checkpoints hold no bytes entries at all. ``foreign=True``
accepts checkpoints that list some (OLMo-core stores the optimizer's hyperparameters that way):
they are described in the metadata, and never read; OLMo-core's own copy of DCP's ``_StorageInfo``
(the same three fields) is read as DCP's.
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from lmforge.checkpoint.unsharded import CheckpointError

__all__ = ["SafeReader", "TensorOnlyPlanner", "check_metadata"]

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_DCP_FILESYSTEM = "torch.distributed.checkpoint.filesystem"
_METADATA_GLOBALS = frozenset(
    {(_DCP_METADATA, n) for n in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")}
    | {
        (_DCP_FILESYSTEM, "_StorageInfo"),
        ("torch.serialization", "_get_layout"),  # a layout from its name (a dict lookup)
        ("torch", "Size"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("collections", "OrderedDict"),
    }
    | {("torch", n) for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)}
)
# What other trainers' metadata adds: a description of a bytes entry (its data is never read), and
# OLMo-core's copy of DCP's per-entry storage record (relative_path, offset, length), read as DCP's.
_FOREIGN_GLOBALS = frozenset({(_DCP_METADATA, "BytesStorageMetadata")})
_ALIASES = {("olmo_core.distributed.checkpoint.filesystem", "_StorageInfo"): (_DCP_FILESYSTEM, "_StorageInfo")}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, *, foreign: bool):
        super().__init__(file)
        self.foreign = foreign

    def find_class(self, module: str, name: str) -> Any:
        if self.foreign:
            module, name = _ALIASES.get((module, name), (module, name))
        allowed = _METADATA_GLOBALS | (_FOREIGN_GLOBALS if self.foreign else frozenset())
        if "." in name or (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from checkpoint metadata (not a DCP metadata type)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id in checkpoint metadata")


def check_metadata(metadata: Any, where: str, *, foreign: bool = False) -> None:
    """Tensor entries only (``foreign``: bytes entries listed too, never loaded), stored in plain
    shard files of the checkpoint directory, with no stream transforms."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, MetadataIndex, TensorStorageMetadata

    if type(metadata) is not Metadata:
        raise CheckpointError(f"{where}: not DCP metadata (a {type(metadata).__name__})")
    entries = metadata.state_dict_metadata
    if not isinstance(entries, dict):
        raise CheckpointError(f"{where}: malformed DCP metadata (state_dict_metadata is a {type(entries).__name__})")
    kinds = (TensorStorageMetadata, BytesStorageMetadata) if foreign else (TensorStorageMetadata,)
    for key, md in entries.items():
        if type(md) not in kinds:
            raise CheckpointError(f"{where}: entry {key!r} is a {type(md).__name__}; lmforge checkpoints hold tensors only")
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise CheckpointError(f"{where}: malformed DCP metadata (storage_data is a {type(storage).__name__})")
    for index, info in storage.items():
        if type(index) is not MetadataIndex or type(info) is not _StorageInfo:
            raise CheckpointError(f"{where}: malformed DCP metadata (storage entry {type(index).__name__} -> {type(info).__name__})")
        rel = info.relative_path
        if not isinstance(rel, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+\.distcp", rel) or rel.startswith("."):
            raise CheckpointError(f"{where}: storage file {rel!r} is not a shard file of the checkpoint directory")
        if getattr(info, "transform_descriptors", None):
            raise CheckpointError(f"{where}: stream transforms {list(info.transform_descriptors)} are not used by lmforge checkpoints; refusing")
        if not isinstance(info.offset, int) or not isinstance(info.length, int) or info.offset < 0 or info.length < 0:
            raise CheckpointError(f"{where}: storage entry for {index.fqn!r} has a bad offset/length")


class SafeReader(dcp.FileSystemReader):
    """DCP's file reader with the metadata read by the allowlist unpickler and checked."""

    def __init__(self, path: str, *, foreign: bool = False):
        super().__init__(path)
        self.foreign = foreign

    def read_metadata(self, *args: Any, **kwargs: Any):
        rank = kwargs.get("rank")
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as f:
            try:
                metadata = _MetadataUnpickler(io.BytesIO(f.read()), foreign=self.foreign).load()
            except pickle.UnpicklingError as e:
                raise CheckpointError(f"{path}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a damaged file: any error of the unpickler
                raise CheckpointError(f"{path}: unreadable DCP metadata ({type(e).__name__}: {str(e)[:100]})") from None
        check_metadata(metadata, str(path), foreign=self.foreign)
        from torch.distributed.checkpoint.metadata import StorageMeta

        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class TensorOnlyPlanner(dcp.DefaultLoadPlanner):
    """DCP's load planner without its one unpickling path (bytes entries, read with
    ``torch.load(weights_only=False)``); tensors are read with ``weights_only=True`` by DCP."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise CheckpointError(f"checkpoint entry {read_item.dest_index.fqn!r} holds pickled bytes; lmforge checkpoints hold tensors only")
