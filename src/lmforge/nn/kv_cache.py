"""A preallocated key/value cache for incremental decoding.

Keys and values of every layer live in two tensors of shape (n_layers, B, n_kv_heads, max_len, hd)
allocated once, so a decode step writes one slot instead of concatenating (which would copy the
whole cache every token). ``key_mask`` records which cached positions are real tokens; left-padded
prompts mark their padding as False so no query ever attends to it.
"""

from __future__ import annotations

import torch


class _PerLayer:
    """A cache tensor (n_layers, ...) kept with its per-layer views: a decode step reads each layer's
    cache twice per token, and indexing the whole tensor afresh is a few small ops every time.
    ``cache.k`` is the tensor (assigning it renews the views); ``cache.k_layers[i]`` is ``cache.k[i]``."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name
        setattr(owner, f"{name}_layers", property(lambda obj: getattr(obj, self.slot)[1]))

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.slot)[0]

    def __set__(self, obj, t: torch.Tensor) -> None:
        setattr(obj, self.slot, (t, tuple(t[i] for i in range(t.shape[0]))))


class KVCache:
    k = _PerLayer()  # (n_layers, B, n_kv_heads, max_len, hd)
    v = _PerLayer()

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.key_mask = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.max_len = max_len
        self.length = 0  # number of positions already written (same for every row)
        self.has_padding = False
        # Static mode (``make_static``): the write position is a 0-dim tensor and ``update`` returns
        # the whole buffers, so a decode step has the same shapes every time (CUDA graphs need that).
        self.static_pos: torch.Tensor | None = None

    def make_static(self) -> None:
        """Switch to static decoding from the current length on (after a prefill)."""
        self.static_pos = torch.tensor(self.length, dtype=torch.long, device=self.k.device)
        for t in (self.k, self.v, self.key_mask, self.static_pos):
            torch._dynamo.mark_static_address(t)  # fixed addresses: CUDA graphs read them in place

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def append_mask(self, mask: torch.Tensor | None, n_new: int) -> None:
        """Record which of the next ``n_new`` positions are real tokens (mask (B, n_new), 1 = real)."""
        if self.length + n_new > self.max_len:
            raise ValueError(f"KV cache is full: {self.length} + {n_new} positions > max_len {self.max_len}")
        if mask is not None:
            m = mask.to(torch.bool)
            self.key_mask[:, self.length : self.length + n_new] = m
            self.has_padding = self.has_padding or not bool(m.all())

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nkv, T, hd) at the current position; return all keys/values so far
        (static mode: the whole (B, nkv, max_len, hd) buffers; the caller masks unwritten slots)."""
        if self.static_pos is not None:
            self.k[layer].index_copy_(2, self.static_pos.view(1), k)  # T == 1
            self.v[layer].index_copy_(2, self.static_pos.view(1), v)
            return self.k[layer], self.v[layer]
        start, T = self.length, k.shape[2]
        keys, values = self.k_layers[layer], self.v_layers[layer]  # (B, nkv, max_len, hd) views
        keys.narrow(2, start, T).copy_(k)
        values.narrow(2, start, T).copy_(v)
        return keys.narrow(2, 0, start + T), values.narrow(2, 0, start + T)

    def advance(self, n: int) -> None:
        self.length += n
        if self.static_pos is not None:
            self.static_pos.add_(n)  # in place: the address a captured graph reads stays the same

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (e.g. to drop finished sequences from a batch). Not in static mode."""
        if self.static_pos is not None:
            raise RuntimeError("a static KV cache keeps its batch: finished rows stay (their tokens are discarded)")
        self.k = self.k[:, index]
        self.v = self.v[:, index]
        self.key_mask = self.key_mask[index]
