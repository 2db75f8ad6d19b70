"""Finding checkpoints: CheckpointInfo from extra.json, incomplete ones, a run directory resolved to
its latest complete checkpoint (what training's init_from, load_pretrained and release share)."""

import json
from pathlib import Path

import pytest

from lmforge.checkpoint import CheckpointError, CheckpointInfo, list_checkpoint_infos, resolve_checkpoint
from lmforge.checkpoint.listing import incomplete_checkpoints, is_run_dir, latest_checkpoint


def _ckpt(run: Path, step: int, extra: dict | None = None, complete: bool = True) -> Path:
    p = run / "checkpoints" / f"step{step:07d}"
    p.mkdir(parents=True)
    if extra is not None:
        (p / "extra.json").write_text(json.dumps(extra))
    if complete:
        (p / "COMPLETE").write_text("{}")
    return p


def test_infos_carry_what_the_trainer_saved(tmp_path):
    new = _ckpt(tmp_path, 20, {"step": 20, "tokens_seen": 40960, "world_size": 2, "global_batch": 8, "seq_len": 256, "rng": {"__tensor__": "x"}})
    old = _ckpt(tmp_path, 10, {"step": 10, "tokens_seen": 2048.0, "world_size": 1})  # before global_batch/seq_len were saved
    bare = _ckpt(tmp_path, 5)  # no extra.json
    weird = _ckpt(tmp_path, 7, {"tokens_seen": True, "world_size": "2", "global_batch": float("nan")})
    _ckpt(tmp_path, 30, {"step": 30}, complete=False)
    infos = list_checkpoint_infos(tmp_path)
    assert infos == [
        CheckpointInfo(5, None, None, bare),
        CheckpointInfo(7, None, None, weird),
        CheckpointInfo(10, 2048, 1, old),
        CheckpointInfo(20, 40960, 2, new, global_batch=8, seq_len=256),
    ]
    assert list_checkpoint_infos(tmp_path / "nowhere") == []


def test_unreadable_extra_is_one_line(tmp_path):
    p = _ckpt(tmp_path, 1)
    (p / "extra.json").write_text("{torn")
    with pytest.raises(CheckpointError, match=r"extra\.json: unreadable") as e:
        list_checkpoint_infos(tmp_path)
    assert "\n" not in str(e.value)


def test_incomplete_checkpoints_are_named_with_why(tmp_path):
    _ckpt(tmp_path, 2)
    _ckpt(tmp_path, 4, complete=False)
    (tmp_path / "checkpoints" / ".step0000006.tmp-abc").mkdir()
    assert [i.split(" ")[0] for i in incomplete_checkpoints(tmp_path)] == [".step0000006.tmp-abc", "step0000004"]
    assert "no COMPLETE marker" in incomplete_checkpoints(tmp_path)[1]


def test_resolve_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="a run directory without a complete checkpoint"):
        resolve_checkpoint(run)
    _ckpt(run, 3)
    latest = _ckpt(run, 12)
    _ckpt(run, 15, complete=False)
    assert is_run_dir(run) and resolve_checkpoint(run) == latest == latest_checkpoint(run)
    assert resolve_checkpoint(latest) == latest  # a checkpoint, an HF directory or a missing path: as given
    assert resolve_checkpoint(tmp_path / "missing") == tmp_path / "missing"
    (run / "model.safetensors").write_bytes(b"")  # weights of its own: a model directory, not a run
    assert not is_run_dir(run) and resolve_checkpoint(run) == run
