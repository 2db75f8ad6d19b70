"""The scratch files that the steps of a stage pass to each other (dedup's keys, buckets, clusters):
numpy arrays and bytes in a directory that is local, or a prefix beside the outputs on an object
store (then every task, on any node, reaches it). Arrays are read with ``allow_pickle=False``."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from lmforge.objectstore import RemotePath

__all__ = ["load_array", "load_bytes", "save_array", "save_arrays", "save_bytes"]


def save_bytes(path: Any, data: bytes) -> None:
    if isinstance(path, RemotePath):
        path.write_bytes(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def load_bytes(path: Any) -> bytes:
    return path.read_bytes()


def save_array(path: Any, array: np.ndarray) -> None:
    if not isinstance(path, RemotePath):
        np.save(path, array)
        return
    buf = io.BytesIO()
    np.save(buf, array)
    path.write_bytes(buf.getvalue())


def save_arrays(path: Any, arrays: dict[str, np.ndarray]) -> None:
    if not isinstance(path, RemotePath):
        np.savez(path, **arrays)
        return
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def load_array(path: Any) -> Any:
    """An array (``.npy``) or a dict-like of arrays (``.npz``)."""
    if not isinstance(path, RemotePath):
        return np.load(path, allow_pickle=False)
    return np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
