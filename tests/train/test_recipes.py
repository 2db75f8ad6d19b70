"""The shipped training configs (configs/train/*.yaml).

(a) Every one loads and validates; the official recipes carry the published model shapes (equal to
    the presets, field for field) and OLMo's hyperparameters: batch in tokens, total tokens, LR,
    schedule, warmup, z-loss, token files.
(b) Every one trains one real step, shrunk to a tiny model on real token files: everything but the
    model size, the data and the batch stays as shipped (architecture, init, tying, z-loss,
    activation checkpointing, schedule, stability options), so each config's code path runs.

New configs under configs/train/ are picked up by the glob; an official recipe is recognised by
its file name (a key of OFFICIAL).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lmforge.checkpoint.sharded import COMPLETE, checkpoint_dir, latest_checkpoint
from lmforge.models.presets import get_preset
from lmforge.train.callbacks import read_metrics
from lmforge.train.config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "train"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))

# The "Official OLMo configurations" table of the reference figures (shared/docs/reference-figures.md).
# tokens_per_step and total_tokens are the table's rounded figures (~4.2M, 3T, ...): checked to 1%.
OFFICIAL = {
    "olmo-1b": dict(
        context=2048, tokens_per_step=4.2e6, total_tokens=3e12, lr=4e-4, kind="cosine", warmup_steps=2000,
        final_lr_ratio=0.1, z_loss=0.0, theta=10_000.0, eps=1e-5, init="mitchell", padded_vocab=50304, tied=True,
        dtype="uint16", eos_id=50279,
    ),
    "olmo-7b": dict(
        context=2048, tokens_per_step=4.2e6, total_tokens=2.46e12, lr=3e-4, kind="linear", warmup_steps=5000,
        final_lr_ratio=0.1, z_loss=0.0, theta=10_000.0, eps=1e-5, init="mitchell", padded_vocab=50304, tied=False,
        dtype="uint16", eos_id=50279,
    ),
    "olmo2-1b": dict(
        context=4096, tokens_per_step=2.1e6, total_tokens=4e12, lr=4e-4, kind="cosine", warmup_tokens=8.39e9,
        final_lr_ratio=0.1, z_loss=1e-5, theta=500_000.0, eps=1e-6, init="normal", padded_vocab=100352, tied=False,
        dtype="uint32", eos_id=100257,
    ),
    "olmo2-7b": dict(
        context=4096, tokens_per_step=4.2e6, total_tokens=3.9e12, lr=3e-4, kind="cosine", warmup_tokens=8.39e9,
        final_lr_ratio=0.1, z_loss=1e-5, theta=500_000.0, eps=1e-6, init="normal", padded_vocab=100352, tied=False,
        dtype="uint32", eos_id=100257,
    ),
}
# The CPU configs: approximate parameter counts (the names promise them).
CPU_PARAMS = {"tiny-cpu": 1e6, "small-cpu": 20e6}

TINY_MODEL = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=None, mlp_hidden=96, vocab_size=384, max_seq_len=64)


def _ids(p: Path) -> str:
    return p.name


def _close(value: float, reference: float, rel: float = 0.01) -> bool:
    return abs(value - reference) <= rel * abs(reference)


def test_configs_are_found():
    names = {p.stem for p in CONFIGS}
    assert set(OFFICIAL) <= names, f"missing official recipes: {set(OFFICIAL) - names}"
    assert set(CPU_PARAMS) <= names


# --- (a) load, validate, match the published recipes ------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_config_loads_and_validates(path):
    cfg = TrainConfig.from_yaml(path)
    cfg.validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # YAML round trip is lossless
    assert cfg.seq_len <= cfg.model.max_seq_len
    assert cfg.schedule.warmup_steps < cfg.max_steps <= cfg.schedule.total_steps
    assert cfg.data.sources, "a shipped config names its token files (placeholders are fine)"
    cfg.micro_batch(1)  # the batch sizes fit together in one process
    if path.stem in OFFICIAL:
        cfg.micro_batch(8)  # ... and on 8 GPUs, as the recipes are launched


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_recipe_matches_reference(name):
    ref = OFFICIAL[name]
    cfg = TrainConfig.from_yaml(CONFIG_DIR / f"{name}.yaml")

    # Model: the preset, field for field, and the table's resolved values.
    assert cfg.model == get_preset(name)
    m = cfg.model
    assert m.max_seq_len == ref["context"] and cfg.seq_len == ref["context"]
    assert m.theta == ref["theta"] and m.eps == ref["eps"] and m.init_method == ref["init"]
    assert m.padded_vocab_size == ref["padded_vocab"] and m.tie_embeddings == ref["tied"]

    # Batch and length, in tokens.
    tokens_per_step = cfg.trainer.global_batch * cfg.seq_len
    assert _close(tokens_per_step, ref["tokens_per_step"]), tokens_per_step
    total = cfg.max_steps * tokens_per_step
    assert _close(total, ref["total_tokens"]), f"{total:.4g} tokens, reference {ref['total_tokens']:.4g}"
    assert cfg.max_steps == round(ref["total_tokens"] / tokens_per_step) or _close(total, ref["total_tokens"], 1e-6)

    # Optimiser and schedule.
    assert cfg.optim.lr == ref["lr"] and cfg.optim.betas == [0.9, 0.95] and cfg.optim.weight_decay == 0.1
    assert cfg.trainer.grad_clip == 1.0 and cfg.trainer.z_loss == ref["z_loss"]
    s = cfg.schedule
    assert s.kind == ref["kind"] and s.final_lr_ratio == ref["final_lr_ratio"]
    if "warmup_steps" in ref:
        assert s.warmup_steps == ref["warmup_steps"]
    else:  # OLMo-2 gives its warmup in tokens
        assert _close(s.warmup_steps * tokens_per_step, ref["warmup_tokens"]), s.warmup_steps
    if name.startswith("olmo2"):
        # OLMo-2's cosine runs over 5T tokens (t_max 5e12); stage 1 stops before its end.
        assert _close(s.total_steps * tokens_per_step, 5e12)
    else:
        assert cfg.trainer.max_steps is None  # the schedule's length is the run's length

    # Systems settings and data format.
    assert cfg.trainer.precision == "bf16" and cfg.trainer.parallel == "fsdp"
    assert cfg.checkpoint.every == 1000
    assert cfg.data.dtype == ref["dtype"] and cfg.data.eos_id == ref["eos_id"]
    assert all(p.endswith(".npy") for src in cfg.data.sources for p in src.paths)


@pytest.mark.parametrize("name", sorted(CPU_PARAMS))
def test_cpu_config_sizes(name):
    cfg = TrainConfig.from_yaml(CONFIG_DIR / f"{name}.yaml")
    n = cfg.model.build("meta").num_params()
    assert 0.7 * CPU_PARAMS[name] <= n <= 1.3 * CPU_PARAMS[name], n
    assert cfg.trainer.precision in ("auto", "fp32") and not cfg.trainer.compile


# --- (b) one real training step of every config, shrunk -------------------------------------------
def shrink(cfg: TrainConfig, token_dirs: dict[str, Path], run_dir: Path) -> TrainConfig:
    """``cfg`` with a tiny model, the test token files, a 2-instance batch, one step, fp32, one process."""
    d = cfg.to_dict()
    d["run"].update(dir=str(run_dir), device="cpu")
    d["model"].update(TINY_MODEL)
    d["data"].update(sources=[{"name": "train", "paths": [str(token_dirs["train"])]}], dtype=None, eos_id=None)
    d["trainer"].update(global_batch=2, micro_batch=1, seq_len=None, max_steps=1, precision="fp32", parallel="none", compile=False)
    d["checkpoint"].update(every=None)
    d["logging"].update(plot=False, progress=False)
    d["eval"].update(every=None)
    return TrainConfig.from_dict(d)


@pytest.mark.parametrize("path", CONFIGS, ids=_ids)
def test_config_trains_one_step(path, token_dirs, tmp_path):
    from lmforge.train.run import train

    shipped = TrainConfig.from_yaml(path)
    run_dir = tmp_path / path.stem
    cfg = shrink(shipped, token_dirs, run_dir)
    # What makes each config itself survives the shrinking.
    for key in ("arch", "tie_embeddings", "init", "init_std", "rope_theta", "norm_eps", "clip_qkv"):
        assert getattr(cfg.model, key) == getattr(shipped.model, key), key
    assert cfg.trainer.activation_checkpointing == shipped.trainer.activation_checkpointing
    assert cfg.trainer.z_loss == shipped.trainer.z_loss and cfg.schedule == shipped.schedule

    if cfg.run.init_from is not None:  # an anneal recipe: its stage-1 run, the same config from scratch
        stage1 = cfg.merged({"run": {"dir": str(tmp_path / "stage1"), "init_from": None, "keep_optimizer": False}})
        train(stage1, quiet=True)
        cfg = cfg.merged({"run": {"init_from": stage1.run.dir}})
    last = train(cfg, quiet=True)

    assert last["step"] == 1 and "skipped" not in last
    assert math.isfinite(last["loss"]) and math.isfinite(last["grad_norm"])
    assert last["loss"] > 0 and last["lr"] > 0
    ckpt = latest_checkpoint(run_dir)
    assert ckpt == checkpoint_dir(run_dir, 1) and (ckpt / COMPLETE).is_file()
    assert [r["step"] for r in read_metrics(run_dir) if "loss" in r] == [1]
    assert TrainConfig.from_yaml(run_dir / "config.yaml") == cfg
