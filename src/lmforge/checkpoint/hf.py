"""Reading HF transformers model directories (Olmo / Olmo2, safetensors only) as lmforge models.

    model, tokenizer = import_hf("path/to/hf-dir")     # tokenizer None when the directory has none

A model directory is untrusted input, read with these guarantees (each failure one line, a
:class:`CheckpointError` naming the file and what to do):

* weight files are plain ``*.safetensors`` names inside the directory (an index's ``weight_map`` cannot
  point elsewhere, and links may not lead outside it, except huggingface_hub's cache layout);
* the config is checked against the safetensors headers before anything is loaded or built
  (:func:`lmforge.models.hf.check_hf_header`), so absurd shapes are refused in milliseconds;
* nothing is unpickled (no ``*.bin``/``*.pt``).

Writing HF directories is :func:`lmforge.release.export_hf`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open

from lmforge.checkpoint.unsharded import CheckpointError, check_and_load, load_state
from lmforge.config import ConfigError
from lmforge.models.hf import check_hf_header, from_hf_config, from_hf_state_dict
from lmforge.models.olmo import OLMo, ModelConfig

__all__ = ["INDEX", "import_hf", "read_header", "read_hf_state", "read_lmforge_yaml", "weight_files"]

INDEX = "model.safetensors.index.json"


def _read_json(path: Path, what: str) -> Any:
    """A JSON file of a model directory, with a one-line CheckpointError for each way it can be broken."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {e.start}); it is not {what}, re-export the model") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e.msg} at line {e.lineno}); it is not {what}, re-export the model") from None


def _hf_cache_blob(model_dir: Path, target: Path) -> bool:
    """True for huggingface_hub's cache layout: REPO/snapshots/REV/NAME is a symlink to REPO/blobs/HASH."""
    real = model_dir.resolve()
    return real.parent.name == "snapshots" and target.parent == real.parent.parent / "blobs"


def _weight_file(model_dir: Path, name: Any, where: str) -> Path:
    """``model_dir / name`` for a weight file named by ``where`` (the index entry, or the file itself),
    refusing anything but a plain ``*.safetensors`` file name that resolves inside ``model_dir``:
    a model directory is untrusted input, and must not make lmforge read files elsewhere."""
    if not isinstance(name, str):
        raise CheckpointError(f"{where} must name a shard file, got {name!r}; re-export the model")
    plain = bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and not os.path.isabs(name)
    if not plain:
        raise CheckpointError(f"{where} -> {name!r} is not a plain file name; shard files must sit in {model_dir} (refusing to read outside it)")
    if not name.endswith(".safetensors"):
        raise CheckpointError(f"{where} -> {name!r} is not a .safetensors file; lmforge reads safetensors only")
    path = model_dir / name
    target = path.resolve()
    if target.parent != model_dir.resolve() and not _hf_cache_blob(model_dir, target):
        raise CheckpointError(f"{where} -> {name!r} is a link leading outside {model_dir} (to {target}); refusing to read it, copy the file into the directory instead")
    if not target.is_file():
        raise CheckpointError(f"{where} -> {name!r}: file not found in {model_dir}")
    return path


def weight_files(model_dir: Path) -> tuple[list[Path], Path]:
    """The safetensors files of an HF directory (checked to lie inside it) and the file that names
    them (model.safetensors itself, or the index)."""
    single, index = model_dir / "model.safetensors", model_dir / INDEX
    if single.is_file() or single.is_symlink():
        return [_weight_file(model_dir, single.name, str(single))], single
    if index.is_file():
        doc = _read_json(index, "a safetensors index")
        if not isinstance(doc, dict):
            raise CheckpointError(f"{index}: must hold a JSON object with a 'weight_map', got {type(doc).__name__}; re-export the model")
        weight_map = doc.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            got = "no 'weight_map' key" if "weight_map" not in doc else f"'weight_map' is {weight_map!r:.60}"
            raise CheckpointError(f"{index}: {got}; expected an object of tensor name -> shard file, re-export the model")
        files: dict[str, Path] = {}
        for key, name in weight_map.items():
            if not isinstance(name, str) or name not in files:
                files[name] = _weight_file(model_dir, name, f"{index}: weight_map entry {key!r}")
        return [files[n] for n in sorted(files)], index
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise CheckpointError(f"{model_dir}: only pickle weights (*.bin/*.pt) found; lmforge reads safetensors only — convert them with transformers' save_pretrained(safe_serialization=True)")
    raise CheckpointError(f"{model_dir}: no model.safetensors or {INDEX}")


def read_header(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) of safetensors files, from their headers only (no tensor data
    is read; safetensors checks that every shape fits the file, so nothing here can be absurd)."""
    header: dict[str, tuple[tuple[int, ...], str]] = {}
    origin: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                entries = {name: (tuple(st.get_slice(name).get_shape()), st.get_slice(name).get_dtype()) for name in st.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{f}: cannot read safetensors ({str(e).splitlines()[0]}); the file is truncated or corrupt") from None
        for name, entry in entries.items():
            if name in header:
                raise CheckpointError(f"{f}: tensor '{name}' is also in {origin[name]}; the shards overlap, re-export the model")
            header[name], origin[name] = entry, f
    return header


def read_hf_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF directory, single-file or sharded."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(model_dir)[0]:
        state.update(load_state(f))
    return state


def read_lmforge_yaml(path: Path) -> ModelConfig:
    """The ``model:`` section of an export's lmforge.yaml, with one-line errors naming the file and key."""
    try:
        doc = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {e.start}); re-export the model or delete the file") from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e}); re-export the model or delete the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        got = type(doc).__name__ if not isinstance(doc, dict) else ("no 'model' key" if "model" not in doc else f"'model' is {doc['model']!r:.60}")
        raise CheckpointError(f"{path}: expected a mapping with a 'model' section ({got}); re-export the model or delete the file")
    try:
        return ModelConfig.from_dict(doc["model"], _prefix="model.")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def import_hf(model_dir: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Load an HF Olmo/Olmo2 directory as (lmforge model, tokenizer or None).

    Nothing is loaded or built before the config has been checked against the safetensors headers
    (:func:`lmforge.models.hf.check_hf_header`), so a directory whose config promises absurd
    shapes is refused in milliseconds, whatever its size claims."""
    d = Path(model_dir)
    if not d.is_dir():
        raise CheckpointError(f"{d}: model directory not found")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{d}: no config.json; not an HF model directory")
    hf_cfg = _read_json(cfg_path, "an HF model config")
    if not isinstance(hf_cfg, dict):
        raise CheckpointError(f"{cfg_path}: must hold a JSON object (the model's config), got {type(hf_cfg).__name__}")
    tokenizer = None
    if (d / "tokenizer.json").is_file():
        from lmforge.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(d)
    ours = d / "lmforge.yaml"
    if ours.is_file():
        cfg, cfg_name = read_lmforge_yaml(ours), ours.name
    else:
        cfg_name = cfg_path.name
        try:
            cfg = from_hf_config(hf_cfg, vocab_size=tokenizer.vocab_size if tokenizer else None, source=str(cfg_path))
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    files, named_by = weight_files(d)
    try:
        check_hf_header(cfg, read_header(files), str(named_by), config_name=cfg_name)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    hf_state: dict[str, torch.Tensor] = {}
    for f in files:
        hf_state.update(load_state(f))
    try:
        state = from_hf_state_dict(hf_state, cfg, source=str(d))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    model = check_and_load(OLMo(cfg, device="meta"), state, str(d))
    model.rope.reset_parameters(device="cpu")
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), tokenizer
