"""Disk full during a checkpoint save: one line, the previous checkpoint intact, nothing half-written
left behind, and the run resumes once there is space. The disk is a real small tmpfs (root only;
skipped where mounting is not allowed)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from lmforge.checkpoint.sharded import list_checkpoints
from tests.faults._harness import lmforge
from tests.train.conftest import write_run_config


@pytest.fixture()
def small_disk(tmp_path):
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()

    def mount(size: str) -> Path:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
        return mnt

    yield mount
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(small_disk, tmp_path, token_dirs):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = small_disk("3m")  # room for one checkpoint of this model (~1.9 MB), not two
    run = disk / "run"
    cfg = write_run_config(token_dirs, run, tmp_path / "run.yaml", trainer={"max_steps": 6}, schedule={"total_steps": 6},
                           checkpoint={"every": 2, "keep_last": 1}, logging={"progress": False, "plot": False})
    r = lmforge("train", cfg)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmforge: error:"), r.stderr[-3000:]
    assert "No space left on device" in lines[0] or "no space left" in lines[0].lower(), lines[0]
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert "step0000002" in lines[0] and "--resume" in lines[0]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "a half-written checkpoint was left"
    # the previous checkpoint is whole: it loads, and with space the run resumes from it
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    r = lmforge("train", cfg, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(run)] == [6]
