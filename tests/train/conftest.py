"""Shared pieces for trainer tests: real token files (lmforge's tokenizer + tokenize) and run configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmforge.data.documents import Document, write_documents
from tests.conftest import corpus_lines, run_tokenize


@pytest.fixture(scope="session")
def token_dirs(tmp_path_factory, bpe_tokenizer) -> dict[str, Path]:
    """{"train": dir, "val": dir, "tokenizer": json}: ~25k training tokens, ~2k held-out tokens."""
    d = tmp_path_factory.mktemp("train_tokens")
    lines = corpus_lines(2200, seed=11)
    docs = [Document(id=f"d{i}", text=" ".join(lines[i * 5 : i * 5 + 5]), source="gen") for i in range(440)]
    write_documents(d / "docs" / "a.jsonl", docs[:200])
    write_documents(d / "docs" / "b.jsonl", docs[200:400])
    write_documents(d / "heldout" / "a.jsonl", docs[400:])
    tok = d / "tokenizer.json"
    bpe_tokenizer.save(tok)
    run_tokenize([str(d / "docs")], str(tok), str(d / "train"))
    run_tokenize([str(d / "heldout")], str(tok), str(d / "val"))
    return {"train": d / "train", "val": d / "val", "tokenizer": tok}


def run_config(token_dirs: dict[str, Path], run_dir: Path, **sections) -> dict:
    """A tiny CPU run config as a dict; ``sections`` update it section by section
    (``trainer={"global_batch": 4}`` merges into the trainer section)."""
    cfg = {
        "run": {"name": run_dir.name, "dir": str(run_dir), "seed": 1},
        "model": {"arch": "olmo2", "d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden": 96, "vocab_size": 384, "max_seq_len": 64},
        "data": {"sources": [{"paths": [str(token_dirs["train"])], "name": "train"}], "seed": 3},
        "optim": {"lr": 3.0e-3},
        "schedule": {"kind": "cosine", "warmup_steps": 2, "total_steps": 10},
        "trainer": {"global_batch": 8, "micro_batch": 4},
        "checkpoint": {"every": 5, "keep_last": 2},
        "logging": {"progress": False, "plot": False},
    }
    for name, update in sections.items():
        cfg[name] = {**cfg.get(name, {}), **update}
    return cfg


def write_run_config(token_dirs: dict[str, Path], run_dir: Path, path: Path | None = None, **sections) -> Path:
    path = path or run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(run_config(token_dirs, run_dir, **sections), sort_keys=False))
    return path
