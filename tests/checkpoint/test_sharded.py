"""Sharded training-state checkpoints: round trip, resume bit-identity, atomicity, pruning, errors."""

from __future__ import annotations

import json
import os
import random
import socket

import numpy as np
import pytest
import torch

from lmforge.checkpoint import CheckpointError, load_model
from lmforge.checkpoint.sharded import (
    COMPLETE,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lmforge.models import OLMo
from lmforge.optim import OptimConfig
from tests.conftest import tiny_config

OPT = OptimConfig(lr=1e-2, fused=False)


def _model(seed: int = 0) -> OLMo:
    torch.manual_seed(seed)
    return OLMo(tiny_config())


def _step(model, opt, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 384, (2, 16), generator=g)
    out = model(ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _trained(steps: int = 2):
    model = _model()
    opt = OPT.build(model)
    for s in range(steps):
        _step(model, opt, s)
    return model, opt


def _assert_same_optim(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(v, sb["state"][k][name]), (k, name)


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_roundtrip_and_bit_identical_resume(tmp_path):
    model, opt = _trained(2)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    extra = {"step": 2, "data": {"epoch": 0, "offset": 4096}, "rng": rng_state()}
    path = save_checkpoint(tmp_path, 2, model=model, optimizer=opt, extra=extra, config={"run": {"name": "t"}})
    assert path == checkpoint_dir(tmp_path, 2) == tmp_path / "checkpoints" / "step0000002"
    assert (path / COMPLETE).is_file()
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]
    expect_torch, expect_py, expect_np = torch.rand(3), random.random(), np.random.rand()

    model2 = _model(seed=99)
    opt2 = OPT.build(model2)
    loaded = load_checkpoint(path, model=model2, optimizer=opt2)
    _assert_same_params(model, model2)
    _assert_same_optim(opt, opt2)
    assert loaded["step"] == 2 and loaded["data"] == {"epoch": 0, "offset": 4096}

    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expect_torch)
    assert random.random() == expect_py
    assert np.random.rand() == expect_np

    _step(model, opt, 2)
    _step(model2, opt2, 2)
    _assert_same_params(model, model2)
    _assert_same_optim(opt, opt2)


def test_no_pickle_in_extra_and_unsharded_model_loads(tmp_path):
    model, opt = _trained(1)
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, extra={"step": 1, "t": torch.arange(3)})
    data = json.loads((path / "extra.json").read_text())
    assert data["step"] == 1 and data["t"] == {"__tensor__": "t0"}
    assert (path / "extra.safetensors").is_file()
    json.loads((path / "optim_groups.json").read_text())
    m = load_model(path)
    _assert_same_params(model, m)
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint(tmp_path, 2, model=model, optimizer=opt, extra={"bad": object()})


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import lmforge.checkpoint.sharded as sharded

    model, opt = _trained(1)
    save_checkpoint(tmp_path, 1, model=model, optimizer=opt, extra={})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sharded, "save_model", boom)  # fails after the DCP shards are written
    with pytest.raises(CheckpointError, match="disk full") as e:
        save_checkpoint(tmp_path, 3, model=model, optimizer=opt, extra={})
    assert "\n" not in str(e.value)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step0000001"]
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 1)


def test_resave_same_step_replaces(tmp_path):
    model, opt = _trained(1)
    save_checkpoint(tmp_path, 5, model=model, optimizer=opt, extra={"v": 1})
    save_checkpoint(tmp_path, 5, model=model, optimizer=opt, extra={"v": 2})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step0000005"]
    model2 = _model(1)
    assert load_checkpoint(checkpoint_dir(tmp_path, 5), model=model2, optimizer=OPT.build(model2))["v"] == 2


def test_latest_skips_incomplete_and_tmp(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model, opt = _trained(1)
    save_checkpoint(tmp_path, 10, model=model, optimizer=opt, extra={})
    root = tmp_path / "checkpoints"
    (root / "step0000030").mkdir()  # incomplete: no COMPLETE marker
    tmp = root / ".step0000040.tmp-abc"
    tmp.mkdir()
    (tmp / COMPLETE).write_text("{}")
    (root / "notes").mkdir()
    assert latest_checkpoint(tmp_path) == root / "step0000010"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(root / "step0000030", model=model, optimizer=opt)
    msg = str(e.value)
    assert "\n" not in msg and "step0000030" in msg and "incomplete" in msg


def test_missing_checkpoint_one_line_error(tmp_path):
    model = _model()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "checkpoints" / "step0000007", model=model, optimizer=OPT.build(model))
    msg = str(e.value)
    assert "\n" not in msg and "step0000007" in msg and "latest_checkpoint" in msg


def test_mismatched_model_one_line_error(tmp_path):
    model, opt = _trained(1)
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, extra={})
    other = OLMo(tiny_config(d_model=32, n_heads=2))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model=other, optimizer=OPT.build(other))
    assert "\n" not in str(e.value) and str(path) in str(e.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_metadata_is_not_unpickled_blindly(tmp_path):
    import pickle

    model, opt = _trained(1)
    path = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, extra={})
    (path / ".metadata").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        load_checkpoint(path, model=model, optimizer=opt)
    assert "\n" not in str(e.value)


def test_prune(tmp_path):
    root = tmp_path / "checkpoints"
    for s in [100, 200, 300, 400, 500, 600, 700]:
        d = root / f"step{s:07d}"
        d.mkdir(parents=True)
        (d / COMPLETE).write_text("{}")
    (root / "step0000050").mkdir()  # incomplete: left alone
    deleted = prune_checkpoints(tmp_path, keep_last=2, keep_every=300)
    assert sorted(p.name for p in deleted) == ["step0000100", "step0000200", "step0000400", "step0000500"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [300, 600, 700]
    assert (root / "step0000050").is_dir()
    assert not [p for p in root.iterdir() if ".tmp" in p.name]
    assert prune_checkpoints(tmp_path, keep_last=5) == []  # fewer than keep_last: nothing goes
    assert [s for s, _ in list_checkpoints(tmp_path)] == [300, 600, 700]
    prune_checkpoints(tmp_path, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [700]
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, keep_last=-1)


# --- two processes (gloo) save, one process loads -------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, fsdp: bool) -> None:
    import torch.distributed as dist

    from lmforge.distributed import destroy_distributed

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if fsdp:  # FSDP2: parameters and optimizer state are DTensor shards
            from torch.distributed.fsdp import fully_shard

            model = _model()
            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
            opt = OPT.build(model)
            for s in range(2):
                _step(model, opt, s)
        else:
            model, opt = _trained(2)  # same seed on both ranks: a replicated model
        save_checkpoint(run_dir, 2, model=model, optimizer=opt, extra={"rank0": rank})
    finally:
        destroy_distributed()


@pytest.mark.required_in_ci
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp2"])
def test_two_process_save_one_process_load(tmp_path, fsdp):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), fsdp), nprocs=2, join=True)
    path = latest_checkpoint(tmp_path)
    assert path == checkpoint_dir(tmp_path, 2)
    ref, ref_opt = _trained(2)
    model = _model(seed=42)
    opt = OPT.build(model)
    extra = load_checkpoint(path, model=model, optimizer=opt)
    assert extra == {"rank0": 0}
    _assert_same_params(ref, model)
    _assert_same_optim(ref_opt, opt)
    assert json.loads((path / COMPLETE).read_text())["world_size"] == 2
    _assert_same_params(ref, load_model(path))  # the gathered, unsharded copy
