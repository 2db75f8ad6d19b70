"""Reading OLMo-core trainer checkpoints (``ai2-olmo-core``): model weights and AdamW state.

OLMo-core's trainer writes, per checkpoint, ``SAVE_FOLDER/stepN/``::

    model_and_optim/.metadata, __*_*.distcp    DCP: "model.<fqn>" and "optim.state.<fqn>.{step,exp_avg,exp_avg_sq}"
                                               tensors, plus the optimizer's hyperparameters as pickled bytes
    config.json                                the experiment config ("model": TransformerConfig, "train_module": ...)
    train/rank*.pt, .metadata.json             trainer state (torch pickles: never read here)

:func:`read_olmo_core` accepts the save folder (its latest complete step), a ``stepN`` directory or
the DCP directory itself (``save_model_and_optim_state``'s output). It reads the metadata with the
allowlist unpickler and the tensors only (:mod:`lmforge.checkpoint.safe_dcp`): the pickled
hyperparameters are never loaded; they come from ``config.json`` (plain JSON) instead.

Name map (OLMo-core -> lmforge; OLMo-2's ``reordered_norm`` block)::

    embeddings.weight                                   embed.weight
    blocks.{i}.attention.w_q / w_k / w_v .weight        blocks.{i}.attn.qkv.weight   (concatenated)
    blocks.{i}.attention.w_out.weight                   blocks.{i}.attn.out.weight
    blocks.{i}.attention.q_norm / k_norm .weight        blocks.{i}.attn.q_norm / k_norm .weight
    blocks.{i}.attention_norm.weight                    blocks.{i}.attn_norm.weight
    blocks.{i}.feed_forward.w1 / w3 / w2 .weight        blocks.{i}.mlp.gate / up / down .weight
    blocks.{i}.feed_forward_norm.weight                 blocks.{i}.mlp_norm.weight
    lm_head.norm.weight                                 norm.weight
    lm_head.w_out.weight                                lm_head.weight
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from lmforge.checkpoint.foreign import ForeignCheckpoint, Layout, read_json_file, vocab_fields
from lmforge.checkpoint.safe_dcp import SafeReader, TensorOnlyPlanner
from lmforge.checkpoint.unsharded import CheckpointError
from lmforge.models.olmo import ModelConfig
from lmforge.optim import OptimConfig

__all__ = ["read_olmo_core", "olmo_core_layout"]

_STEP_DIR = re.compile(r"step(\d+)")
_STATE_KEY = re.compile(r"optim\.state\.(.+)\.(step|exp_avg|exp_avg_sq)")


def _dcp_dir(path: Path) -> tuple[Path, Path]:
    """(DCP directory, the checkpoint directory holding config.json) for any accepted ``path``."""
    if (path / "model_and_optim" / ".metadata").is_file():
        return path / "model_and_optim", path
    if (path / ".metadata").is_file():
        return path, (path.parent if path.name == "model_and_optim" else path)
    steps = [(int(m.group(1)), p) for p in path.glob("step*") if (m := _STEP_DIR.fullmatch(p.name)) and (p / "model_and_optim" / ".metadata").is_file()
             and (p / ".metadata.json").is_file()]
    if steps:
        return _dcp_dir(max(steps)[1])
    raise CheckpointError(f"{path}: not an OLMo-core checkpoint (no model_and_optim/.metadata, .metadata or stepN/ directories)")


def _find_config(ckpt: Path, dcp_dir: Path, config: str | os.PathLike | None) -> tuple[dict[str, Any], Path]:
    candidates = [Path(config)] if config is not None else [ckpt / "config.json", dcp_dir / "config.json", ckpt.parent / "config.json"]
    for c in candidates:
        if c.is_file():
            data = read_json_file(c, "the OLMo-core config")
            if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
                raise CheckpointError(f"{c}: no 'model' section; pass the experiment config OLMo-core saved (config.json) with --config")
            return data, c
    raise CheckpointError(f"{ckpt}: no config.json (OLMo-core's ConfigSaverCallback writes one per checkpoint); "
                          "pass the experiment's config with --config FILE")


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise CheckpointError(f"{where}: no {key!r}")
    return d[key]


def model_config(cfg: dict[str, Any], rows: int, where: str) -> ModelConfig:
    """lmforge's config for OLMo-core's ``TransformerConfig`` (as saved in config.json)."""
    m = cfg["model"]
    block = _get(m, "block", f"{where}: model")
    att = block.get("sequence_mixer") or block.get("attention")
    if not isinstance(att, dict):
        raise CheckpointError(f"{where}: model.block has no attention config")
    name = block.get("name")
    norm = block.get("layer_norm") or {}
    qk = att.get("qk_norm")
    why = None
    if name != "reordered_norm":
        why = f"model.block.name is {name!r} (OLMo-2 is 'reordered_norm')"
    elif (norm.get("name") or "rms") != "rms" or not qk or (qk.get("name") or "rms") != "rms":
        why = "OLMo-2 uses RMSNorm for the blocks and for QK-norm"
    elif att.get("use_head_qk_norm") or att.get("bias") or (block.get("feed_forward") or {}).get("bias"):
        why = "head-wise QK-norm and biases are not part of OLMo-2"
    elif (att.get("rope") or {}).get("name", "default") != "default" or (att.get("rope") or {}).get("partial_rotary_factor", 1.0) != 1.0:
        why = f"RoPE {att.get('rope')} is not OLMo-2's (default, full rotary)"
    elif (block.get("feed_forward") or {}).get("activation", "silu") != "silu" or block.get("feed_forward_moe"):
        why = "the feed-forward is not OLMo-2's SwiGLU"
    elif att.get("window_size") or att.get("sliding_window") or att.get("attention_sinks") or att.get("scalable_softmax"):
        why = "sliding windows, sinks and scalable softmax are not part of OLMo-2"
    if why:
        raise CheckpointError(f"{where}: {why}; lmforge imports OLMo-2 models from OLMo-core")
    tokenizer = ((cfg.get("dataset") or {}).get("tokenizer") or {}).get("vocab_size")
    seq = (cfg.get("train_module") or {}).get("max_sequence_length") or (cfg.get("dataset") or {}).get("sequence_length") or 4096
    return ModelConfig(
        arch="olmo2",
        d_model=int(m["d_model"]),
        n_layers=int(m["n_layers"]),
        n_heads=int(att["n_heads"]),
        n_kv_heads=int(att["n_kv_heads"]) if att.get("n_kv_heads") not in (None, att["n_heads"]) else None,
        mlp_hidden=int(block["feed_forward"]["hidden_size"]),
        max_seq_len=int(seq),
        rope_theta=float((att.get("rope") or {}).get("theta", 500_000)),
        tie_embeddings=bool(m.get("tie_word_embeddings", False)),
        clip_qkv=att.get("clip_qkv"),
        norm_eps=float(norm.get("eps", 1e-6)),
        **vocab_fields(rows, tokenizer),
    )


def optim_config(cfg: dict[str, Any], notes: list[str]) -> OptimConfig:
    """OLMo-core's AdamW hyperparameters as lmforge's (group overrides: weight decay of the
    embeddings / norms; anything else is noted, as lmforge's two groups cannot express it)."""
    o = (cfg.get("train_module") or {}).get("optim") or {}
    kind = str(o.get("_CLASS_", "AdamWConfig")).rsplit(".", 1)[-1]
    if "AdamW" not in kind:
        raise CheckpointError(f"config.json: train_module.optim is {kind}; lmforge carries AdamW state only")
    decay_embeddings = decay_norms = True  # OLMo-core decays every parameter unless overridden
    for override in o.get("group_overrides") or []:
        params, opts = override.get("params") or [], override.get("opts") or {}
        if set(opts) == {"weight_decay"} and float(opts["weight_decay"]) == 0.0 and all("embeddings" in p for p in params):
            decay_embeddings = False
        elif set(opts) == {"weight_decay"} and float(opts["weight_decay"]) == 0.0 and all("norm" in p for p in params):
            decay_norms = False
        else:
            notes.append(f"OLMo-core optimizer group override {override} is not carried (set the new run's optim section)")
    betas = o.get("betas", (0.9, 0.999))
    return OptimConfig(lr=float(o.get("lr", 1e-3)), betas=[float(b) for b in betas], eps=float(o.get("eps", 1e-8)),
                       weight_decay=float(o.get("weight_decay", 1e-2)), decay_embeddings=decay_embeddings, decay_norms=decay_norms)


def olmo_core_layout(cfg: ModelConfig) -> Layout:
    layout: Layout = {"embed.weight": [("embeddings.weight", None)]}
    for i in range(cfg.n_layers):
        a, f, b = f"blocks.{i}.attention", f"blocks.{i}.feed_forward", f"blocks.{i}"
        layout[f"{b}.attn.qkv.weight"] = [(f"{a}.w_q.weight", None), (f"{a}.w_k.weight", None), (f"{a}.w_v.weight", None)]
        layout[f"{b}.attn.out.weight"] = [(f"{a}.w_out.weight", None)]
        layout[f"{b}.attn.q_norm.weight"] = [(f"{a}.q_norm.weight", None)]
        layout[f"{b}.attn.k_norm.weight"] = [(f"{a}.k_norm.weight", None)]
        layout[f"{b}.mlp.gate.weight"] = [(f"{f}.w1.weight", None)]
        layout[f"{b}.mlp.up.weight"] = [(f"{f}.w3.weight", None)]
        layout[f"{b}.mlp.down.weight"] = [(f"{f}.w2.weight", None)]
        layout[f"{b}.attn_norm.weight"] = [(f"{b}.attention_norm.weight", None)]
        layout[f"{b}.mlp_norm.weight"] = [(f"{b}.feed_forward_norm.weight", None)]
    layout["norm.weight"] = [("lm_head.norm.weight", None)]
    if not cfg.tie_embeddings:
        layout["lm_head.weight"] = [("lm_head.w_out.weight", None)]
    return layout


def read_olmo_core(path: str | os.PathLike, *, config: str | os.PathLike | None = None) -> ForeignCheckpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    dcp_dir, ckpt = _dcp_dir(path)
    reader = SafeReader(str(dcp_dir), foreign=True)
    metadata = reader.read_metadata()
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    wanted: dict[str, torch.Tensor] = {}
    for key, md in metadata.state_dict_metadata.items():
        if type(md) is TensorStorageMetadata and (key.startswith("model.") or _STATE_KEY.fullmatch(key)):
            wanted[key] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    if "model.embeddings.weight" not in wanted:
        raise CheckpointError(f"{dcp_dir}: no model.embeddings.weight; not an OLMo-core transformer checkpoint")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        try:
            dcp.load(wanted, storage_reader=reader, planner=TensorOnlyPlanner(), no_dist=True)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged shard file: one line
            raise CheckpointError(f"{dcp_dir}: cannot read the tensors ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    tensors = {k[len("model."):]: v for k, v in wanted.items() if k.startswith("model.")}
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in wanted.items():
        if (m := _STATE_KEY.fullmatch(key)) is not None:
            state.setdefault(m.group(1), {})[m.group(2)] = t
    cfg_json, cfg_path = _find_config(ckpt, dcp_dir, config)
    notes: list[str] = []
    model_cfg = model_config(cfg_json, tensors["embeddings.weight"].shape[0], str(cfg_path))
    optim = optim_config(cfg_json, notes)
    step_match = _STEP_DIR.fullmatch(ckpt.name)
    steps = {float(s["step"]) for s in state.values() if "step" in s}
    step = int(step_match.group(1)) if step_match else int(max(steps, default=0))
    version = None
    if (ckpt / ".metadata.json").is_file():
        version = (read_json_file(ckpt / ".metadata.json", "OLMo-core's checkpoint metadata") or {}).get("version")
    return ForeignCheckpoint(
        config=model_cfg, optim=optim, tensors=tensors, state=state or None, layout=olmo_core_layout(model_cfg), step=step,
        source={"format": "olmo-core", "path": str(ckpt), "config": str(cfg_path), "olmo_core_version": version}, notes=notes,
    )
