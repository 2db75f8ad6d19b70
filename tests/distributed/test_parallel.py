"""Parallelism applied from outside the model: DDP and FSDP2 (gloo, 2 CPU processes) must train
exactly like one process on the full batch, and activation checkpointing must not change numerics."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from lmforge.distributed import DistInfo, destroy_distributed, init_distributed, parallelize
from lmforge.optim import OptimConfig
from tests.conftest import tiny_config

pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs torch.distributed with gloo"),
]

STEPS, BATCH, SEQ, WORLD = 3, 4, 16, 2


def _model():
    torch.manual_seed(0)
    return tiny_config("olmo2", d_model=64, n_layers=2).build()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 384, (BATCH, SEQ + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


def _train(model, x, y, reduce_loss=lambda t: t):
    opt = OptimConfig(lr=1e-2, fused=False).build(model)
    losses = []
    for _ in range(STEPS):
        loss = model(x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(reduce_loss(loss.detach())))
    return losses


def _state(model) -> dict[str, list]:
    return {k: v.detach().cpu().flatten().tolist() for k, v in model.state_dict().items() if v.is_floating_point()}


def _record_linear_dtypes(model) -> set[tuple[str, str, str]]:
    """Forward hooks on every nn.Linear: (input, weight as the forward sees it, output) dtypes."""
    seen: set[tuple[str, str, str]] = set()

    def hook(module, args, output):
        seen.add((str(args[0].dtype), str(module.weight.dtype), str(output.dtype)))

    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(hook)
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = init_distributed("gloo")
    assert info == DistInfo(rank, world, rank, torch.device("cpu"))
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    def mean_over_ranks(t):
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t / world

    x, y = _batch()
    per = BATCH // world
    x, y = x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]
    results = {}
    try:
        ddp = parallelize(_model(), "ddp")
        results["ddp_losses"] = _train(ddp, x, y, mean_over_ranks)
        results["ddp_state"] = _state(ddp.module)

        fsdp = parallelize(_model(), "fsdp")
        compute = _record_linear_dtypes(fsdp)
        results["fsdp_losses"] = _train(fsdp, x, y, mean_over_ranks)
        results["fsdp_compute_dtypes"] = sorted(compute)
        full = get_model_state_dict(fsdp, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        results["fsdp_state"] = {k: v.flatten().tolist() for k, v in full.items() if v.is_floating_point()}

        # Checkpointing composed with FSDP (the documented order): same numbers.
        fsdp_ac = parallelize(_model(), "fsdp", activation_checkpointing=True)
        results["fsdp_ac_losses"] = _train(fsdp_ac, x, y, mean_over_ranks)

        # bf16 compute, float32 master weights and reduction: close, not equal.
        fsdp_bf16 = parallelize(_model(), "fsdp", mixed_precision="bf16")
        compute = _record_linear_dtypes(fsdp_bf16)
        results["fsdp_bf16_losses"] = _train(fsdp_bf16, x, y, mean_over_ranks)
        results["fsdp_bf16_compute_dtypes"] = sorted(compute)
        results["fsdp_bf16_param_dtypes"] = sorted({str(p.dtype) for p in fsdp_bf16.parameters()})
    finally:
        destroy_distributed()
    if rank == 0:
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f)


def _close(a, b, tol=1e-5):
    return torch.allclose(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), rtol=0, atol=tol)


def test_init_distributed_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("gloo")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"))
    assert not torch.distributed.is_initialized()
    destroy_distributed()  # no-op


def test_parallelize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        parallelize(_model(), "tp")
    with pytest.raises(ValueError):
        parallelize(_model(), "none", mixed_precision="bf16")
    with pytest.raises(RuntimeError):
        parallelize(_model(), "ddp")  # no process group


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch-internal, on importing dynamo
def test_compile_is_per_block_and_in_place():
    model = parallelize(_model(), "none", activation_checkpointing=True, compile=True)
    assert all(block._compiled_call_impl is not None for block in model.blocks)  # compiled lazily, on first call
    assert model._compiled_call_impl is None
    assert model.state_dict().keys() == _model().state_dict().keys()


def test_activation_checkpointing_matches_plain_model():
    x, y = _batch()
    plain, ckpt = _model(), parallelize(_model(), "none", activation_checkpointing=True)
    assert type(ckpt.blocks[0]).__name__ == "CheckpointWrapper"
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    loss_p, loss_c = plain(x, labels=y).loss, ckpt(x, labels=y).loss
    loss_p.backward()
    loss_c.backward()
    assert torch.equal(loss_p, loss_c)
    grads_p = {n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in plain.named_parameters()}
    grads_c = {n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in ckpt.named_parameters()}
    assert grads_p.keys() == grads_c.keys()
    for n in grads_p:
        assert torch.equal(grads_p[n], grads_c[n]), n


def test_ddp_and_fsdp_match_single_process(tmp_path):
    x, y = _batch()
    ref = _model()
    ref_losses = _train(ref, x, y)
    ref_state = _state(ref)

    torch.multiprocessing.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    res = json.loads((tmp_path / "results.json").read_text())

    assert ref_losses[-1] < ref_losses[0]  # it trains
    assert _close(res["fsdp_ac_losses"], ref_losses), (res["fsdp_ac_losses"], ref_losses)
    # FSDP's mixed-precision policy is applied: every matmul of the steps ran on bf16 parameters
    # and gave bf16 outputs (float32 without the policy), while the master weights stay float32 ...
    f32, bf16 = "torch.float32", "torch.bfloat16"
    assert res["fsdp_compute_dtypes"] == [[f32, f32, f32]], res["fsdp_compute_dtypes"]
    assert res["fsdp_bf16_compute_dtypes"] == [[bf16, bf16, bf16]], res["fsdp_bf16_compute_dtypes"]
    assert res["fsdp_bf16_param_dtypes"] == [f32]
    # ... and the losses are close to float32's, not equal
    assert _close(res["fsdp_bf16_losses"], ref_losses, tol=5e-2), (res["fsdp_bf16_losses"], ref_losses)
    assert not _close(res["fsdp_bf16_losses"], ref_losses, tol=1e-6), (res["fsdp_bf16_losses"], ref_losses)
    for kind in ("ddp", "fsdp"):
        assert _close(res[f"{kind}_losses"], ref_losses), (kind, res[f"{kind}_losses"], ref_losses)
        state = res[f"{kind}_state"]
        assert state.keys() == ref_state.keys(), kind
        for k in ref_state:
            assert _close(state[k], ref_state[k]), (kind, k)
