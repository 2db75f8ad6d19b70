"""Decoding on a CPU with oneDNN's prepacked matrix products.

A decode step multiplies a few rows (the batch) by every weight matrix of the model. PyTorch's
default CPU path for such products (MKL's GEMV/GEMM on these shapes) runs on one core and reads the
weights at ~14 GB/s on the benchmark machine, where one core streams 36 GB/s and two 71 GB/s. The
same products through oneDNN with the weights reordered once into its blocked layout
(``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``, what inductor's CPU backend
emits for frozen linear layers) take 1.7 ms instead of 5.1 ms for olmo2-20m's matrices at batch 1,
and 1.8 ms instead of 7.8 ms at batch 4.

:func:`packed_linears` is a context manager around a decode: it packs each ``nn.Linear`` weight and
the output projection once and routes their forwards through oneDNN while inference mode is on,
the input is float32 on the CPU and the weight has not changed since it was packed (its version
counter); anything else takes the ordinary path. Leaving the block restores the modules. The
packed copies cost one more copy of the weights in memory, so ``auto`` packs models up to
:data:`AUTO_MAX_BYTES`. The numbers differ from the ordinary path's by float32 rounding only
(the greedy tokens of ``bench/decode_cpu.py`` equal HF's, checked before every timing).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from lmforge.nn.feed_forward import SwiGLU

__all__ = ["AUTO_MAX_BYTES", "Kernels", "available", "packed_linears"]

Kernels = Literal["auto", "onednn", "aten"]
AUTO_MAX_BYTES = 2 << 30  # weights packed by "auto": the packed copy doubles them


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


_CACHE = WeakIdKeyDictionary()  # weight -> its _Packed (by identity; gone with the weight)


def _fast(x: torch.Tensor) -> bool:
    """Inference on float32 CPU tensors: what the packed products serve."""
    return torch.is_inference_mode_enabled() and x.dtype == torch.float32 and x.device.type == "cpu"


class _Packed:
    """One weight in oneDNN's layout, valid while the weight's version counter is unchanged."""

    def __init__(self, weight: torch.Tensor):
        self.version = weight._version  # no reference to the weight: the cache is keyed by it
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())

    @classmethod
    def of(cls, weight: torch.Tensor) -> "_Packed":
        """The packed copy of ``weight``, reused by later decodes while the weight is unchanged
        (kept beside the weight: it goes when the weight goes)."""
        found = _CACHE.get(weight)
        if found is None or found.version != weight._version:
            found = _CACHE[weight] = cls(weight)
        return found

    def usable(self, x: torch.Tensor, weight: torch.Tensor) -> bool:
        return _fast(x) and weight._version == self.version

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed, bias, "none", [], "")
        return y.reshape(*shape[:-1], y.shape[-1])


def _linear_forward(module: nn.Linear, packed: _Packed):
    weight, bias = module.weight, module.bias  # held here: no module attribute lookups per call

    def forward(x: torch.Tensor) -> torch.Tensor:
        if packed.usable(x, weight):
            return packed(x, bias)
        return F.linear(x, module.weight, module.bias)

    return forward


class _PackedPair:
    """Two weights of one input stacked into one packed product (SwiGLU's gate and up)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.versions = (a._version, b._version)
        with torch.no_grad():
            self.packed = _Packed(torch.cat([a.detach(), b.detach()]))

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor) -> "_PackedPair":
        found = _PAIRS.get(a)
        if found is None or found.versions != (a._version, b._version):
            found = _PAIRS[a] = cls(a, b)
        return found


_PAIRS = WeakIdKeyDictionary()  # gate weight -> its _PackedPair with up


def _swiglu_forward(module: SwiGLU):
    gate_w, up_w, down_w, hidden = module.gate.weight, module.up.weight, module.down.weight, module.hidden
    pair = _PackedPair.of(gate_w, up_w)
    down = _Packed.of(down_w)
    ordinary = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (_fast(x) and pair.versions == (gate_w._version, up_w._version)):
            return ordinary(x)
        gate, up = pair.packed(x).chunk(2, dim=-1)  # (..., hidden) each
        h = F.silu(gate) * up
        if down_w._version == down.version:  # the packed down, without a module call
            return down(h)
        return module.down(h)

    return forward


def _output_forward(model: nn.Module, weight: torch.Tensor, ordinary):
    packed = _Packed.of(weight)

    def output(hidden: torch.Tensor) -> torch.Tensor:
        if packed.usable(hidden, weight) and model.head_weight is weight:
            return packed(hidden)
        return ordinary(hidden)

    return output


def _is_own(cls: type, name: str, module: str, qualname: str) -> bool:
    """Whether ``cls.name`` is lmforge's own implementation (not a subclass's override or a
    replacement): only those are known to compute exactly the product that is packed."""
    fn = getattr(cls, name, None)
    return getattr(fn, "__module__", None) == module and getattr(fn, "__qualname__", None) == qualname


def _wanted(model: nn.Module, kernels: Kernels) -> bool:
    if kernels == "aten":
        return False
    params = list(model.parameters())
    # plain float32 CPU tensors only: sharded parameters (FSDP's DTensors, which have placements)
    # keep the ordinary path
    on_cpu_f32 = bool(params) and all(p.device.type == "cpu" and p.dtype == torch.float32 and not hasattr(p, "placements") for p in params)
    if kernels == "onednn":
        if not available():
            raise RuntimeError("cpu_kernels='onednn': this PyTorch build has no oneDNN linear kernels; use 'auto' or 'aten'")
        return on_cpu_f32
    return on_cpu_f32 and available() and sum(p.numel() * 4 for p in params) <= AUTO_MAX_BYTES


@contextlib.contextmanager
def packed_linears(model: nn.Module, kernels: Kernels = "auto") -> Iterator[bool]:
    """Within the block, ``model``'s linear layers (exactly nn.Linear), SwiGLU and output projection (lmforge's own, not overridden) use oneDNN's prepacked
    products (see the module docstring); yields whether they do."""
    if not _wanted(model, kernels):
        yield False
        return
    patched: list[tuple[nn.Module, str]] = []
    try:
        for module in model.modules():
            if _is_own(type(module), "forward", "lmforge.nn.feed_forward", "SwiGLU.forward") and "forward" not in vars(module):
                module.forward = _swiglu_forward(module)  # gate and up: one packed product
                patched.append((module, "forward"))
            if type(module) is nn.Linear and "forward" not in vars(module):
                module.forward = _linear_forward(module, _Packed.of(module.weight))
                patched.append((module, "forward"))
        if hasattr(model, "head_weight") and _is_own(type(model), "output", "lmforge.models.olmo", "OLMo.output") and "output" not in vars(model):
            model.output = _output_forward(model, model.head_weight, model.output)
            patched.append((model, "output"))
        yield True
    finally:
        for module, name in patched:
            delattr(module, name)
