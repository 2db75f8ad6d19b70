"""AdamW parameter groups, LR schedules, gradient clipping."""

import math

import pytest
import torch

from lmforge.config import ConfigError
from lmforge.optim import OptimConfig, ScheduleConfig, clip_grad_norm, set_lr
from tests.conftest import tiny_config


def test_weight_decay_only_on_matrices():
    model = tiny_config().build()
    decay, no_decay = OptimConfig().param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 and names[id(p)] != "embed.weight" for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"embed.weight", "norm.weight"}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    with_emb = OptimConfig(decay_embeddings=True).param_groups(model)[0]["params"]
    assert any(names[id(p)] == "embed.weight" for p in with_emb)
    # OLMo-2's recipe: norms decayed too, embeddings still not
    decay2, no_decay2 = OptimConfig(decay_norms=True).param_groups(model)
    assert {names[id(p)] for p in decay2["params"]} >= {"norm.weight", "blocks.0.attn.q_norm.weight"}
    assert [names[id(p)] for p in no_decay2["params"]] == ["embed.weight"]


def test_build_steps_and_lowers_loss():
    torch.manual_seed(0)
    model = tiny_config().build()
    opt = OptimConfig(lr=1e-2).build(model)
    x = torch.randint(0, 300, (2, 16))
    losses = []
    for _ in range(5):
        loss = model(x, labels=torch.roll(x, -1, 1)).loss
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine", "wsd"])
def test_schedules_warm_up_then_follow_their_shape(kind):
    s = ScheduleConfig(kind=kind, warmup_steps=10, total_steps=110, final_lr_ratio=0.1, decay_steps=20 if kind == "wsd" else 0)
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == pytest.approx(1.0)
    end = s.factor(110)
    expected_end = {"constant": 1.0, "linear": 0.1, "cosine": 0.1, "wsd": 0.1}[kind]
    assert end == pytest.approx(expected_end)
    if kind == "cosine":
        assert s.factor(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    if kind == "wsd":
        assert s.factor(89) == 1.0 and s.factor(100) == pytest.approx(0.55)
    factors = [s.factor(i) for i in range(10, 111)]
    assert all(a >= b - 1e-12 for a, b in zip(factors, factors[1:]))  # never increases after warmup


def test_clip_returns_the_norm_before_clipping():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], 1.0).item() == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([p], None).item() == pytest.approx(5.0) and p.grad.norm().item() == pytest.approx(5.0)


def test_invalid_settings_are_one_line():
    with pytest.raises(ConfigError, match="warmup_steps"):
        ScheduleConfig(warmup_steps=20, total_steps=10).validate()
    with pytest.raises(ConfigError, match="decay_steps"):
        ScheduleConfig.from_dict({"kind": "wsd", "total_steps": 10})
    with pytest.raises(ConfigError, match="optim.betas"):
        OptimConfig.from_dict({"betas": [0.9]})
