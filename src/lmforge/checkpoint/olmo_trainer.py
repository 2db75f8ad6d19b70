"""Reading the original OLMo trainer's unsharded checkpoints (``ai2-olmo``): weights and AdamW state.

OLMo's FullCheckpointer writes ``SAVE_FOLDER/stepN-unsharded/`` with ``model.pt`` (the state dict),
``optim.pt`` (the optimizer's state dict: per-parameter ``step``/``exp_avg``/``exp_avg_sq`` keyed by
index or by name, groups listing ``param_names``), ``train.pt`` (trainer state: not read) and
``config.yaml``. Its safetensors variant (``model.safetensors``/``optim.safetensors``) stores the same
dicts with each key a base64 pickle of the key path.

Nothing here runs code from a checkpoint: ``.pt`` files are read with ``torch.load(weights_only=True)``
(torch's allowlist unpickler: tensors, containers, numbers, strings); safetensors keys and pickled
values are read with an unpickler that resolves no global at all (so only strings, numbers, tuples,
lists, dicts and booleans can come out of them); ``config.yaml`` with ``yaml.safe_load``.

Name map (OLMo -> lmforge)::

    transformer.wte.weight                   embed.weight
    transformer.blocks.{i}.att_proj.weight   blocks.{i}.attn.qkv.weight          (q, k, v fused in the same order)
    transformer.blocks.{i}.attn_out.weight   blocks.{i}.attn.out.weight
    transformer.blocks.{i}.q_norm / k_norm   blocks.{i}.attn.q_norm / k_norm      (OLMo-2)
    transformer.blocks.{i}.attn_norm         blocks.{i}.attn_norm                 (OLMo-2: after attention)
    transformer.blocks.{i}.ff_norm           blocks.{i}.mlp_norm                  (OLMo-2)
    transformer.blocks.{i}.ff_proj.weight    blocks.{i}.mlp.up (first half of the rows), mlp.gate (second half)
    transformer.blocks.{i}.ff_out.weight     blocks.{i}.mlp.down.weight
    transformer.ln_f.weight                  norm.weight                          (OLMo-2)
    transformer.ff_out.weight                lm_head.weight                       (untied)
"""

from __future__ import annotations

import base64
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from lmforge.checkpoint.foreign import ForeignCheckpoint, Layout, vocab_fields
from lmforge.checkpoint.unsharded import CheckpointError
from lmforge.models.olmo import ModelConfig
from lmforge.optim import OptimConfig

__all__ = ["read_olmo", "olmo_layout"]

_STEP_DIR = re.compile(r"step(\d+)(-unsharded)?")
_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name} (an OLMo safetensors key holds plain values only)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id")


def _plain(data: bytes, where: str) -> Any:
    try:
        return _NoGlobals(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any damage: one line
        raise CheckpointError(f"{where}: unreadable entry ({type(e).__name__}: {str(e)[:100]})") from None


def _clean(name: str) -> str:
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return name[len("model."):] if name.startswith("model.transformer.") else name


def _read_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - torch's allowlist refused something, or the file is damaged
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a plain tensor checkpoint ({first})") from None


def _read_safetensors(path: Path) -> dict[str, Any]:
    """OLMo's safetensors layout back into a nested dict (keys: base64 pickles of the key path)."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable safetensors ({type(e).__name__}: {str(e)[:120]})") from None
    result: dict[str, Any] = {}
    for key, value in flat.items():
        try:
            raw = base64.urlsafe_b64decode(key)
        except (ValueError, TypeError):
            raw = b""
        decoded = _plain(raw, f"{path}: key {key[:40]!r}") if raw.startswith(b"\x80") else None
        if not (isinstance(decoded, tuple) and len(decoded) == 2 and isinstance(decoded[0], tuple)):
            result[key] = value  # a plain safetensors file: names as they are
            continue
        keys, pickled = decoded
        if pickled:
            value = _plain(value.numpy().tobytes(), f"{path}: {'.'.join(map(str, keys))}")
        target = result
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
    return result


def _checkpoint_dir(path: Path) -> Path:
    if (path / "model.pt").is_file() or (path / "model.safetensors").is_file():
        return path
    steps = [(int(m.group(1)), p) for p in path.glob("step*") if (m := _STEP_DIR.fullmatch(p.name))
             and ((p / "model.pt").is_file() or (p / "model.safetensors").is_file())]
    if steps:
        return max(steps)[1]
    if any(path.glob("rank*.pt")) or (path / "model").is_dir() or (path / "model_and_optim").is_dir():
        raise CheckpointError(f"{path}: a sharded OLMo checkpoint; unshard it with OLMo's scripts/unshard.py, then import the stepN-unsharded directory")
    raise CheckpointError(f"{path}: not an OLMo checkpoint (no model.pt / model.safetensors, no stepN-unsharded/ directories)")


def model_config(cfg: dict[str, Any], rows: int, where: str) -> ModelConfig:
    m = cfg.get("model")
    if not isinstance(m, dict):
        raise CheckpointError(f"{where}: no 'model' section")
    olmo2 = m.get("layer_norm_type") == "rms" and m.get("norm_after") and m.get("attention_layer_norm") and m.get("layer_norm_with_affine", True)
    olmo1 = m.get("layer_norm_type", "default") in ("default", "low_precision") and not m.get("layer_norm_with_affine", True) \
        and not m.get("norm_after") and not m.get("attention_layer_norm")
    why = None
    if not (olmo1 or olmo2):
        why = "its norms are neither OLMo-1's (parameter-free LayerNorm before each sublayer) nor OLMo-2's (RMSNorm after, QK-norm)"
    elif m.get("activation_type", "swiglu") != "swiglu" or m.get("block_type", "sequential") != "sequential":
        why = f"activation {m.get('activation_type')!r} / block {m.get('block_type')!r} (lmforge: swiglu, sequential)"
    elif not m.get("rope") or m.get("alibi") or m.get("include_bias") or m.get("scale_logits") or m.get("embedding_layer_norm"):
        why = "rope off, alibi, biases, scaled logits or an embedding norm are not part of OLMo-1/OLMo-2"
    if why:
        raise CheckpointError(f"{where}: model: {why}; lmforge imports the OLMo-1/OLMo-2 architectures")
    d = int(m["d_model"])
    hidden = int(m.get("mlp_hidden_size") or int(m.get("mlp_ratio", 4)) * d)
    kv = m.get("n_kv_heads") or (1 if m.get("multi_query_attention") else None)
    return ModelConfig(
        arch="olmo2" if olmo2 else "olmo1", d_model=d, n_layers=int(m["n_layers"]), n_heads=int(m["n_heads"]),
        n_kv_heads=int(kv) if kv not in (None, m["n_heads"]) else None, mlp_hidden=hidden // 2,
        max_seq_len=int(m.get("max_sequence_length", 2048)), rope_theta=float(m.get("rope_theta", 10_000)),
        tie_embeddings=bool(m.get("weight_tying", True)), clip_qkv=m.get("clip_qkv"), norm_eps=float(m.get("layer_norm_eps", 1e-5)),
        **vocab_fields(rows, m.get("vocab_size")),
    )


def optim_config(cfg: dict[str, Any], notes: list[str]) -> tuple[OptimConfig, bool]:
    """(lmforge's AdamW hyperparameters, whether the state is AdamW's and can be carried)."""
    o = cfg.get("optimizer") or {}
    adamw = str(o.get("name", "adamw")).lower() == "adamw"
    if not adamw:
        notes.append(f"OLMo optimizer {o.get('name')!r} is not AdamW: weights imported, optimizer state not carried")
    decay_norms = bool(o.get("decay_norm_and_bias", False)) or (o.get("no_decay_norm_and_bias") is False)
    return OptimConfig(lr=float(o.get("learning_rate", 1e-4)), betas=[float(b) for b in o.get("betas", (0.9, 0.95))],
                       eps=float(o.get("eps", 1e-5)), weight_decay=float(o.get("weight_decay", 0.01)),
                       decay_embeddings=bool(o.get("decay_embeddings", False)), decay_norms=decay_norms), adamw


def olmo_layout(cfg: ModelConfig) -> Layout:
    h = cfg.mlp_hidden
    olmo2 = cfg.arch == "olmo2"
    layout: Layout = {"embed.weight": [("transformer.wte.weight", None)]}
    for i in range(cfg.n_layers):
        s, b = f"transformer.blocks.{i}", f"blocks.{i}"
        layout[f"{b}.attn.qkv.weight"] = [(f"{s}.att_proj.weight", None)]
        layout[f"{b}.attn.out.weight"] = [(f"{s}.attn_out.weight", None)]
        if olmo2:
            layout[f"{b}.attn.q_norm.weight"] = [(f"{s}.q_norm.weight", None)]
            layout[f"{b}.attn.k_norm.weight"] = [(f"{s}.k_norm.weight", None)]
        layout[f"{b}.mlp.gate.weight"] = [(f"{s}.ff_proj.weight", (h, 2 * h))]  # OLMo: x, gate = ff_proj(x).chunk(2)
        layout[f"{b}.mlp.up.weight"] = [(f"{s}.ff_proj.weight", (0, h))]
        layout[f"{b}.mlp.down.weight"] = [(f"{s}.ff_out.weight", None)]
        if olmo2:
            layout[f"{b}.attn_norm.weight"] = [(f"{s}.attn_norm.weight", None)]
            layout[f"{b}.mlp_norm.weight"] = [(f"{s}.ff_norm.weight", None)]
    if olmo2:
        layout["norm.weight"] = [("transformer.ln_f.weight", None)]
    if not cfg.tie_embeddings:
        layout["lm_head.weight"] = [("transformer.ff_out.weight", None)]
    return layout


def _optimizer_state(optim: Any, where: str) -> dict[str, dict[str, torch.Tensor]]:
    if not isinstance(optim, dict) or not isinstance(optim.get("state"), dict) or not isinstance(optim.get("param_groups"), list):
        raise CheckpointError(f"{where}: not an optimizer state dict (needs 'state' and 'param_groups')")
    names: dict[Any, str] = {}
    for g in optim["param_groups"]:
        params, pnames = g.get("params") or [], g.get("param_names")
        if params and isinstance(params[0], int):
            if not pnames or len(pnames) != len(params):
                raise CheckpointError(f"{where}: parameters are numbered but the groups carry no param_names; cannot tell which is which")
            names.update({i: _clean(n) for i, n in zip(params, pnames)})
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, entry in optim["state"].items():
        name = names.get(key) if isinstance(key, int) else _clean(str(key))
        if name is None:
            raise CheckpointError(f"{where}: state entry {key!r} is in no parameter group")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), torch.Tensor) for k in ("exp_avg", "exp_avg_sq")):
            raise CheckpointError(f"{where}: state of {name!r} is not AdamW's (exp_avg, exp_avg_sq)")
        step = entry.get("step", 0)
        state[name] = {"step": torch.as_tensor(step, dtype=torch.float32), "exp_avg": entry["exp_avg"], "exp_avg_sq": entry["exp_avg_sq"]}
    return state


def read_olmo(path: str | os.PathLike, *, config: str | os.PathLike | None = None) -> ForeignCheckpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    ckpt = _checkpoint_dir(path)
    cfg_path = Path(config) if config is not None else ckpt / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{ckpt}: no config.yaml (OLMo's checkpointer writes one); pass the run's config with --config FILE")
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid YAML ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: not an OLMo config (a mapping with 'model' and 'optimizer')")
    raw = _read_pt(ckpt / "model.pt") if (ckpt / "model.pt").is_file() else _read_safetensors(ckpt / "model.safetensors")
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{ckpt}: the model file is not a flat dict of tensors")
    tensors = {_clean(k): v for k, v in raw.items()}
    if "transformer.wte.weight" not in tensors:
        raise CheckpointError(f"{ckpt}: no transformer.wte.weight; not an OLMo model state dict")
    notes: list[str] = []
    model_cfg = model_config(cfg, tensors["transformer.wte.weight"].shape[0], str(cfg_path))
    optim, adamw = optim_config(cfg, notes)
    state = None
    opt_file = next((ckpt / n for n in ("optim.pt", "optim.safetensors") if (ckpt / n).is_file()), None)
    if opt_file is None:
        notes.append("no optim.pt: weights imported, optimizer state starts fresh")
    elif adamw:
        state = _optimizer_state(_read_pt(opt_file) if opt_file.suffix == ".pt" else _read_safetensors(opt_file), str(opt_file))
    m = _STEP_DIR.fullmatch(ckpt.name)
    steps = {float(s["step"]) for s in (state or {}).values()}
    step = int(m.group(1)) if m else int(max(steps, default=0))
    return ForeignCheckpoint(config=model_cfg, optim=optim, tensors=tensors, state=state, layout=olmo_layout(model_cfg), step=step,
                             source={"format": "olmo", "path": str(ckpt), "config": str(cfg_path)}, notes=notes)
