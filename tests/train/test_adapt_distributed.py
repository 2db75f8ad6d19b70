"""SFT and DPO under torchrun (2 real gloo processes on the CPU) train like 1 process.

DPO with FSDP2: the reference log-probs are computed by both ranks (each its share, then one
all-reduce), the per-token log-probs run inside the sharded forward, and the loss curve, rewards
and held-out margin equal the 1-process run. SFT with DDP and packed rows: the same curve. Real
subprocesses started side by side (the launcher of test_distributed_train).
"""

from __future__ import annotations

import pytest
import torch
import yaml

from lmforge.checkpoint.unsharded import save_model
from lmforge.models import ModelConfig
from lmforge.tokenizer import Tokenizer
from lmforge.train.callbacks import read_metrics
from lmforge.train.dpo import REFERENCE_CACHE
from tests.train.chat_data import HELDOUT_OBJECTS, TRAIN_OBJECTS, dpo_rows, sft_rows, write_jsonl
from tests.train.test_distributed_train import Job, _run_all

pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs torch.distributed with gloo"),
]


def _config(tmp_path, name: str, objective: str, parallel: str, data: dict, background: bool = False) -> str:
    cfg = {
        "run": {"name": name, "dir": str(tmp_path / name), "seed": 1, "device": "cpu", "init_from": str(data["base"])},
        "chat": {"paths": [str(data[objective])], "template": "tulu", "packing": objective == "sft"},
        "optim": {"lr": 2e-3, "weight_decay": 0.0},
        "schedule": {"kind": "linear", "warmup_ratio": 0.1, "final_lr_ratio": 0.0},
        "trainer": {"objective": objective, "max_steps": 6, "seq_len": 128, "global_batch": 8, "micro_batch": 2, "parallel": parallel},
        "checkpoint": {"every": 3, "keep_last": 2, "background": background},
        "logging": {"progress": False, "plot": False},
    }
    if objective == "dpo":
        cfg["chat"]["heldout"] = [str(data["dpo_heldout"])]
        cfg["eval"] = {"every": 3, "batch_size": 4}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_two_processes_train_like_one(tmp_path, bpe_tokenizer):
    tok = Tokenizer.from_file(bpe_tokenizer.source)
    torch.manual_seed(0)
    model = ModelConfig(arch="olmo2", d_model=64, n_layers=2, n_heads=4, mlp_hidden=128, vocab_size=tok.vocab_size, max_seq_len=128).build()
    data = {
        "base": save_model(tmp_path / "base", model, tokenizer=tok),
        "sft": write_jsonl(tmp_path / "sft.jsonl", sft_rows(TRAIN_OBJECTS, 120, seed=1)),
        "dpo": write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(TRAIN_OBJECTS, 60, seed=3)),
        "dpo_heldout": write_jsonl(tmp_path / "dpo_heldout.jsonl", dpo_rows(HELDOUT_OBJECTS, 10, seed=4)),
    }
    runs = {
        ("dpo", 1): Job(["train", _config(tmp_path, "dpo1", "dpo", "none", data)], tmp_path / "dpo1.log"),
        # ... with checkpoints written in the background (FSDP shards, then rank 0 consolidates them)
        ("dpo", 2): Job(["train", _config(tmp_path, "dpo2", "dpo", "fsdp", data, background=True)], tmp_path / "dpo2.log", nproc=2),
        ("sft", 1): Job(["train", _config(tmp_path, "sft1", "sft", "none", data)], tmp_path / "sft1.log"),
        ("sft", 2): Job(["train", _config(tmp_path, "sft2", "sft", "ddp", data)], tmp_path / "sft2.log", nproc=2),
    }
    _run_all(list(runs.values()))
    for job in runs.values():
        job.check()
    keys = {"dpo": ("loss", "grad_norm", "rewards_margin", "rewards_accuracy"), "sft": ("loss", "grad_norm", "loss_tokens")}
    for objective, names in keys.items():
        one = [r for r in read_metrics(tmp_path / f"{objective}1") if "loss" in r]
        two = [r for r in read_metrics(tmp_path / f"{objective}2") if "loss" in r]
        assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
        for key in names:
            # At step 1 the policy is the reference: rewards are float noise, and which of two noise
            # values is larger (the accuracy) is arbitrary; from step 2 on they are real.
            first = 1 if key == "rewards_accuracy" else 0
            a = torch.tensor([r[key] for r in one[first:]], dtype=torch.float64)
            b = torch.tensor([r[key] for r in two[first:]], dtype=torch.float64)
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m, k=key, o=objective: f"{o} {k}: {m}")
        assert [r["tokens_seen"] for r in one] == [r["tokens_seen"] for r in two]
    # The cached reference table is the same whether one or two processes computed it.
    from safetensors.torch import load_file

    ref1 = load_file(str(tmp_path / "dpo1" / REFERENCE_CACHE))["reference"]
    ref2 = load_file(str(tmp_path / "dpo2" / REFERENCE_CACHE))["reference"]
    torch.testing.assert_close(ref2, ref1, rtol=1e-6, atol=1e-6)
    evals = lambda run: [(r["step"], r["eval/heldout/rewards_margin"]) for r in read_metrics(tmp_path / run) if "eval/heldout/rewards_margin" in r]  # noqa: E731
    e1, e2 = evals("dpo1"), evals("dpo2")
    assert [s for s, _ in e1] == [s for s, _ in e2] == [0, 3, 6]
    torch.testing.assert_close(torch.tensor([m for _, m in e2]), torch.tensor([m for _, m in e1]), rtol=1e-4, atol=1e-5)
    # The background FSDP checkpoints are complete and hold the same weights as the 1-process ones.
    from lmforge.checkpoint.sharded import list_checkpoints
    from lmforge.checkpoint.unsharded import load_model

    for run in ("dpo1", "dpo2", "sft1", "sft2"):
        assert [s for s, _ in list_checkpoints(tmp_path / run)] == [3, 6], run
    a, b = load_model(tmp_path / "dpo1" / "checkpoints" / "step0000006"), load_model(tmp_path / "dpo2" / "checkpoints" / "step0000006")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
