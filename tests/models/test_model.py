"""The OLMo model: official shapes, presets, forward behaviour, loss, init, FLOPs."""

import pytest
import torch

from lmforge.config import ConfigError
from lmforge.models import PRESETS, ModelConfig, get_preset
from lmforge.nn.loss import lm_loss


def tiny(arch="olmo2", **kw):
    fields = dict(arch=arch, d_model=64, n_layers=2, n_heads=4, mlp_hidden=96, vocab_size=300, max_seq_len=64)
    fields.update(kw)
    return ModelConfig(**fields)


@pytest.mark.parametrize(
    "name, params",
    [
        ("olmo2-1b", 1_484_916_736),  # OLMo-2-0425-1B: vocab 100352, untied
        ("olmo-1b", 1_176_764_416),  # OLMo-1B: vocab 50304, tied
        ("olmo-7b", 6_888_095_744),  # OLMo-7B (Feb 2024)
        ("olmo2-7b", 7_298_617_344),
        ("olmo2-13b", 13_716_198_400),
    ],
)
def test_official_parameter_counts(name, params):
    model = get_preset(name).build(device="meta")
    assert model.num_params() == params


def test_official_shapes():
    c = get_preset("olmo2-1b")
    assert (c.d_model, c.n_layers, c.n_heads, c.mlp_hidden, c.padded_vocab_size) == (2048, 16, 16, 8192, 100352)
    assert c.theta == 500_000 and c.eps == 1e-6 and not c.tie_embeddings and c.init_method == "normal"
    c = get_preset("olmo-1b")
    assert c.padded_vocab_size == 50304 and c.theta == 10_000 and c.tie_embeddings and c.init_method == "mitchell"


@pytest.mark.parametrize("size, lo, hi", [("1m", 0.5e6, 1.5e6), ("20m", 15e6, 25e6), ("60m", 50e6, 70e6), ("150m", 130e6, 170e6)])
def test_small_presets_are_about_their_size(size, lo, hi):
    for arch in ("olmo", "olmo2"):
        n = get_preset(f"{arch}-{size}").build(device="meta").num_params()
        assert lo <= n <= hi, (arch, size, n)


def test_every_preset_builds_and_validates():
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.padded_vocab_size % 128 == 0
        cfg.build(device="meta")


def test_unknown_preset_suggests_closest():
    with pytest.raises(ConfigError, match="unknown model preset 'olmo2-1bb'; did you mean 'olmo2-1b'"):
        get_preset("olmo2-1bb")


@pytest.mark.parametrize("arch", ["olmo1", "olmo2"])
def test_no_biases_and_norm_layout(arch):
    model = tiny(arch).build()
    names = [n for n, _ in model.named_parameters()]
    assert not any("bias" in n for n in names)
    has_norm_weights = any("norm" in n for n in names)
    assert has_norm_weights == (arch == "olmo2")  # OLMo-1's LayerNorms have no parameters


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = tiny().build().eval()
    x = torch.randint(0, 300, (2, 10))
    logits = model(x)
    assert logits.shape == (2, 10, 384)  # vocab 300 padded to a multiple of 128
    y = x.clone()
    y[:, 7:] = torch.randint(0, 300, (2, 3))
    # changing future tokens never changes earlier logits
    assert torch.equal(model(y)[:, :7], logits[:, :7])


@pytest.mark.parametrize("arch", ["olmo1", "olmo2"])
def test_kv_cache_matches_full_forward(arch):
    torch.manual_seed(0)
    model = tiny(arch, n_kv_heads=2).build().eval()
    x = torch.randint(0, 300, (3, 12))
    full = model(x)
    cache = model.new_cache(3, 16)
    parts = [model(x[:, :5], cache=cache), model(x[:, 5:9], cache=cache)]
    parts += [model(x[:, t : t + 1], cache=cache) for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv", [None, 2])
def test_inference_fast_paths_give_the_training_paths_numbers_bit_for_bit(kv):
    """Without autograd, QK-norm and RoPE run on q and k stacked (no GQA) and the KV cache writes
    through per-layer views: the logits equal, bit for bit, those of the same model with autograd
    on (the plain path), token by token through the cache, also after rows are dropped."""
    torch.manual_seed(0)
    model = tiny(n_kv_heads=kv).build().eval()
    x = torch.randint(0, 300, (3, 10))

    def run(grad: bool):
        with torch.set_grad_enabled(grad):
            cache = model.new_cache(3, 12)
            out = [model(x[:, :6], cache=cache)]
            out += [model(x[:, t : t + 1], cache=cache) for t in range(6, 8)]
            cache.reorder(torch.tensor([2, 0]))
            out += [model(x[[2, 0], t : t + 1], cache=cache) for t in range(8, 10)]
            return [o.detach() for o in out]

    with torch.inference_mode():
        fast = run(False)
    for a, b in zip(fast, run(True)):
        assert torch.equal(a, b)


def test_left_padding_gives_the_unpadded_logits():
    torch.manual_seed(0)
    model = tiny().build().eval()
    seq = torch.randint(0, 300, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), seq], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, 3:], model(seq), atol=1e-5, rtol=1e-5)


def test_clip_qkv_changes_output_only_when_it_bites():
    torch.manual_seed(0)
    base = tiny("olmo1").build().eval()
    x = torch.randint(0, 300, (1, 8))
    loose = tiny("olmo1", clip_qkv=1e6).build().eval()
    tight = tiny("olmo1", clip_qkv=1e-3).build().eval()
    loose.load_state_dict(base.state_dict())
    tight.load_state_dict(base.state_dict())
    assert torch.equal(loose(x), base(x))
    assert not torch.allclose(tight(x), base(x))


def test_tied_embeddings_share_storage():
    model = tiny(tie_embeddings=True).build()
    assert model.lm_head is None
    x = torch.randint(0, 300, (1, 4))
    model(x).sum().backward()
    assert model.embed.weight.grad is not None


def test_initialisation_statistics():
    torch.manual_seed(0)
    normal = tiny(d_model=256, n_heads=4, mlp_hidden=512, vocab_size=1000).build()
    w = normal.blocks[0].mlp.gate.weight
    assert abs(w.std().item() - 0.02 * 0.9866) < 0.0005  # N(0, 0.02) truncated at 3 sigma: std 0.9866 * 0.02
    assert w.abs().max().item() <= 3 * 0.02 + 1e-6
    mitchell = tiny("olmo1", d_model=256, n_heads=4, mlp_hidden=512, n_layers=4, vocab_size=1000).build()
    outs = [b.attn.out.weight.std().item() for b in mitchell.blocks]
    assert outs[0] > outs[1] > outs[3]  # deeper output projections start smaller
    assert abs(mitchell.embed.weight.std().item() - 256**-0.5) < 0.01


def test_loss_with_z_loss_and_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 16)
    labels = torch.randint(0, 16, (2, 5))
    labels[0, :2] = -100
    out = lm_loss(logits, labels, z_loss_coef=1e-4)
    keep = labels != -100
    ce = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    z = 1e-4 * torch.logsumexp(logits[keep], -1).pow(2).mean()
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.z_loss, z)
    assert out.n_tokens.item() == 8
    summed = lm_loss(logits, labels, z_loss_coef=1e-4, reduction="sum")
    torch.testing.assert_close(summed.loss / 8, out.loss)


def test_flops_per_token_convention():
    cfg = tiny(vocab_size=256)
    model = cfg.build()
    n = model.num_params() - model.embed.weight.numel()
    assert model.num_flops_per_token(32) == 6 * n + 12 * cfg.n_layers * cfg.d_model * 32
    tied = tiny(vocab_size=256, tie_embeddings=True).build()
    # the tied head still does a (d x V) matmul, so it is counted
    assert tied.num_flops_per_token(32) == model.num_flops_per_token(32)


def test_invalid_shapes_are_rejected():
    with pytest.raises(ConfigError, match="divisible by model.n_heads"):
        tiny(d_model=65).validate()
    with pytest.raises(ConfigError, match="n_kv_heads"):
        ModelConfig.from_dict(dict(d_model=64, n_heads=4, n_kv_heads=3))


@pytest.mark.parametrize("z", [0.0, 1e-2])
@pytest.mark.parametrize("chunk", [7, 1024])
def test_linear_cross_entropy_matches_full_logits(z, chunk):
    from lmforge.nn.loss import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(2, 25, 32, requires_grad=True)
    w = (0.1 * torch.randn(128, 32)).requires_grad_()
    y = torch.randint(0, 100, (2, 25))
    y[0, :5] = -100
    ref = lm_loss(h @ w.t(), y, z_loss_coef=z)
    ref_grads = torch.autograd.grad(3.0 * ref.loss, (h, w))
    out = linear_cross_entropy(h, w, y, z_loss_coef=z, chunk_size=chunk)
    grads = torch.autograd.grad(3.0 * out.loss, (h, w))  # an upstream factor must scale the gradients
    for a, b in [(out.loss, ref.loss), (out.ce, ref.ce), (out.z_loss, ref.z_loss), *zip(grads, ref_grads)]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert out.n_tokens.item() == 45


@pytest.mark.parametrize("tie", [False, True])
def test_model_training_loss_equals_loss_on_logits(tie):
    torch.manual_seed(0)
    model = tiny(tie_embeddings=tie).build()
    x = torch.randint(0, 300, (2, 12))
    y = torch.roll(x, -1, dims=1)
    ref = lm_loss(model(x), y, z_loss_coef=1e-4)
    ref_grads = torch.autograd.grad(ref.loss, list(model.parameters()))
    out = model(x, labels=y, z_loss_coef=1e-4)
    grads = torch.autograd.grad(out.loss, list(model.parameters()))
    torch.testing.assert_close(out.loss, ref.loss)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
