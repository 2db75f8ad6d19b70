"""CPU decoding through oneDNN's prepacked products (``lmforge.generate.cpu_kernels``): the same
tokens as PyTorch's default kernels (and, in test_generate.py, as HF's generate), nothing left
patched afterwards, and never stale or in the way of autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ConfigError
from lmforge.generate import BatchDecoder, GenerationConfig, generate_ids
from lmforge.generate.cpu_kernels import available, packed_linears
from lmforge.nn.feed_forward import SwiGLU
from tests.generate.test_generate import NO_EOS, PAD, PROMPTS, VARIED, tiny_model

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN linear kernels")


@pytest.mark.parametrize("arch", ["olmo1", "olmo2"])
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_packed_decoding_gives_the_default_kernels_tokens(arch, tie):
    model = tiny_model(arch, tie, kv=2, std=VARIED)
    out = {}
    for kernels in ("aten", "auto", "onednn"):
        gen = GenerationConfig(max_new_tokens=24, cpu_kernels=kernels)
        out[kernels] = (generate_ids(model, PROMPTS[:1], gen, pad_token_id=PAD, eos_token_id=NO_EOS),
                        generate_ids(model, PROMPTS, gen, pad_token_id=PAD, eos_token_id=NO_EOS))
    assert out["aten"] == out["auto"] == out["onednn"]
    assert len(set(out["auto"][1][0])) >= 5  # the output varies: a real comparison

    # step by step, the logits agree to float32 rounding
    decs = {k: BatchDecoder(model, PROMPTS, GenerationConfig(max_new_tokens=8, cpu_kernels=k), pad_token_id=PAD, eos_token_id=NO_EOS)
            for k in ("aten", "auto")}
    for _ in zip(decs["aten"].steps(), decs["auto"].steps()):
        torch.testing.assert_close(decs["auto"].logits, decs["aten"].logits, atol=2e-5, rtol=1e-5)


def test_the_block_patches_and_restores_and_never_serves_a_stale_or_trainable_product():
    model = tiny_model("olmo2", std=VARIED)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    mlps = [m for m in model.modules() if isinstance(m, SwiGLU)]
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        before = model(torch.tensor([PROMPTS[0]]))
    with packed_linears(model) as on:
        assert on and all("forward" in vars(m) for m in linears + mlps) and "output" in vars(model)
        lin = model.blocks[0].attn.qkv
        with torch.inference_mode():
            torch.testing.assert_close(lin(x), F.linear(x, lin.weight), atol=1e-5, rtol=1e-5)
            with torch.no_grad():
                lin.weight.mul_(2.0)  # changed in place after packing: the product must follow
            torch.testing.assert_close(lin(x), F.linear(x, lin.weight), atol=1e-5, rtol=1e-5)
            with torch.no_grad():
                lin.weight.mul_(0.5)
        # outside inference mode (training, in-loop evaluation with autograd): the ordinary path
        y = model(torch.tensor([PROMPTS[0]]))
        y.float().sum().backward()
        assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
        model.zero_grad(set_to_none=True)
    assert not any("forward" in vars(m) for m in linears + mlps) and "output" not in vars(model)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor([PROMPTS[0]])), before, atol=0, rtol=0)


def test_aten_and_other_dtypes_are_left_alone():
    model = tiny_model("olmo2")
    with packed_linears(model, "aten") as on:
        assert not on and "forward" not in vars(model.blocks[0].attn.qkv)
    model = model.to(torch.bfloat16)
    with packed_linears(model, "auto") as on:
        assert not on
    gen = GenerationConfig(max_new_tokens=4)
    assert len(generate_ids(model, PROMPTS[:1], gen, pad_token_id=PAD, eos_token_id=NO_EOS)[0]) == 4


def test_the_option_is_validated():
    with pytest.raises(ConfigError, match="cpu_kernels"):
        GenerationConfig.from_dict({"cpu_kernels": "fast"})
