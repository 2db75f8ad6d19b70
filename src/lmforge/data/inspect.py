"""``lmforge data inspect --run RUN --step N``: what did the model see at step N?

Rebuilds the run's data order from RUN/config.yaml (the ``data`` section and the batch size),
checks it against RUN/data_order.json (written when the run started), and returns the instances of
the batch trained on in step N (1-based, as in metrics.jsonl and checkpoint names): for each one its
rank, source, file, token offset, source document ids, token ids and decoded text.

numpy + tokenizers only: no torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import yaml

from lmforge.config import ConfigError
from lmforge.data.documents import DataError
from lmforge.data.mixture import DataConfig, fingerprint_change

__all__ = ["inspect_step"]


def _run_settings(run: Path) -> tuple[DataConfig, int, int]:
    path = run / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path}: not found; --run must be a run directory written by `lmforge train`")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data = DataConfig.from_dict(raw.get("data", {}), _prefix="data.")
    trainer = raw.get("trainer", {}) or {}
    model = raw.get("model", {}) or {}
    seq_len = trainer.get("seq_len") or model.get("max_seq_len")
    global_batch = trainer.get("global_batch")
    if not seq_len or not global_batch:
        raise ConfigError(f"{path}: needs trainer.global_batch and model.max_seq_len (or trainer.seq_len)")
    return data, int(seq_len), int(global_batch)


def _decoder(data: DataConfig, files: list[str]):
    tok_path = data.tokenizer
    if tok_path is None:
        for f in files:
            summary = Path(f).parent / "tokenize_summary.json"
            if summary.is_file():
                tok_path = json.loads(summary.read_text(encoding="utf-8")).get("tokenizer", {}).get("path")
                if tok_path:
                    break
    if not tok_path or not Path(tok_path).is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    return lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False)


def _chat_tokenizer(run: Path, raw: dict[str, Any]):
    """The SFT/DPO run's tokenizer: chat.tokenizer, else the one saved in its checkpoints or init_from."""
    from lmforge.tokenizer.olmo import load_tokenizer

    spec = (raw.get("chat") or {}).get("tokenizer")
    if spec:
        return load_tokenizer(spec)
    candidates = sorted((run / "checkpoints").glob("step*"), reverse=True) if (run / "checkpoints").is_dir() else []
    init = (raw.get("run") or {}).get("init_from")
    if init:
        candidates += sorted((Path(init) / "checkpoints").glob("step*"), reverse=True) + [Path(init)]
    for c in candidates:
        if (c / "tokenizer.json").is_file():
            return load_tokenizer(c)
    raise DataError(f"{run}: no tokenizer found (no checkpoint with tokenizer.json, no chat.tokenizer); cannot rebuild the SFT/DPO data")


def _inspect_chat(run: Path, raw: dict[str, Any], step: int, world_size: int) -> Iterator[dict[str, Any]]:
    """SFT/DPO runs: the conversations (or pairs) of a step, the loss tokens marked [[...]]."""
    from lmforge.data.chat import PreferenceDataset, SFTDataset, mark_loss_tokens, read_preferences, read_sft

    chat, trainer = raw.get("chat") or {}, raw.get("trainer") or {}
    seq_len = int(trainer.get("seq_len") or (raw.get("model") or {}).get("max_seq_len"))
    global_batch = int(trainer["global_batch"])
    tok = _chat_tokenizer(run, raw)
    template, paths, seed = chat.get("template", "tulu"), chat.get("paths", []), int(chat.get("seed", 0))
    if trainer.get("objective") == "sft":
        examples, _ = read_sft(paths, tok, template, seq_len)
        ds = SFTDataset(examples, seq_len, pad_id=tok.pad_token_id, seed=seed, packing=bool(chat.get("packing", False)))
    else:
        pairs, _ = read_preferences(paths, tok, template, seq_len)
        ds = PreferenceDataset(pairs, seq_len, pad_id=tok.pad_token_id, seed=seed)
    recorded = run / "data_order.json"
    if recorded.is_file():
        change = fingerprint_change(json.loads(recorded.read_text(encoding="utf-8")), ds.fingerprint())
        if change is not None:
            raise DataError(f"{recorded}: {change} changed since the run started; the order rebuilt now would differ")

    def marked(ex) -> str:
        return mark_loss_tokens(tok, ex)

    for rank in range(world_size):
        for position, i in enumerate(ds.batch_indices(step - 1, global_batch, rank, world_size)):
            if isinstance(ds, SFTDataset):
                exs = [ds.examples[j] for j in ds.instances[i]]
                texts = [marked(e) for e in exs]
                tokens = [t for e in exs for t in e.ids.tolist()]
            else:
                exs = [ds.pairs[i].chosen, ds.pairs[i].rejected]
                texts = ["CHOSEN: " + marked(exs[0]), "REJECTED: " + marked(exs[1])]
                tokens = exs[0].ids.tolist()
            yield {
                "step": step, "rank": rank, "position": position, "source": trainer.get("objective"),
                "file": exs[0].where.rsplit(":", 1)[0], "offset": 0, "doc_ids": [e.where for e in exs],
                "tokens": tokens, "text": "\n---\n".join(texts),
            }


def inspect_step(run: str | os.PathLike, step: int, *, world_size: int = 1) -> Iterator[dict[str, Any]]:
    """The instances of step ``step`` (1-based), rank by rank, as JSON-able dicts. SFT/DPO runs:
    conversations, with the tokens the loss counts in [[...]]."""
    run = Path(run)
    if step < 1:
        raise DataError(f"--step must be >= 1 (step 1 is the first update), got {step}")
    raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) if (run / "config.yaml").is_file() else {}
    if (raw.get("trainer") or {}).get("objective") in ("sft", "dpo"):
        yield from _inspect_chat(run, raw, step, world_size)
        return
    data_cfg, seq_len, global_batch = _run_settings(run)
    mix = data_cfg.build(seq_len)
    recorded = run / "data_order.json"
    if recorded.is_file():
        old = json.loads(recorded.read_text(encoding="utf-8"))
        change = fingerprint_change(old, mix.fingerprint())
        if change is not None:
            raise DataError(f"{recorded}: {change} changed since the run started; the order rebuilt now would differ")
    decode = _decoder(data_cfg, mix.files)
    for rank in range(world_size):
        for m in mix.batch(step - 1, global_batch, rank=rank, world_size=world_size):
            inst = m.instance
            row = {
                "step": step,
                "rank": rank,
                "position": m.position,
                "source": m.source,
                "file": inst.file,
                "offset": inst.start,
                "doc_ids": list(inst.doc_ids),
                "tokens": inst.tokens.tolist(),
            }
            if decode is not None:
                row["text"] = decode(inst.tokens)
            yield row
