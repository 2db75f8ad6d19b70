"""Resuming `lmforge train`: a run killed with SIGKILL and resumed is the uninterrupted run, bit for bit.

Every run that is compared exactly runs as its own process (``python -m lmforge train``, as a user
would), with one intra-op thread each, so the numbers do not depend on torch state that other tests
leave in the pytest process, and two runs can go side by side on a small machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmforge.checkpoint import load_model
from lmforge.checkpoint.sharded import COMPLETE, checkpoint_dir, latest_checkpoint, list_checkpoints
from lmforge.cli import main
from lmforge.train.callbacks import read_metrics
from tests.train.conftest import write_run_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
# Checkpoint every 3 steps; keep the newest 2 plus every 12th: the uninterrupted run ends with
# checkpoints {12, 24, 27, 30}, so there is an older checkpoint to resume from on purpose.
SECTIONS = dict(
    schedule={"kind": "cosine", "warmup_steps": 2, "total_steps": STEPS},
    checkpoint={"every": 3, "keep_last": 2, "keep_every": 12},
)
FINAL_CHECKPOINTS = [12, 24, 27, 30]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


class Train:
    """``python -m lmforge train CFG ARGS...`` in the background, output to a log file."""

    def __init__(self, cfg: Path, *args: str, log: Path):
        self.log = log
        self._out = open(log, "w")
        cmd = [sys.executable, "-m", "lmforge", "train", str(cfg), *args]
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)

    def wait(self, timeout: float = 300) -> str:
        """Wait for a successful exit; the output."""
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        out = self.log.read_text()
        assert rc == 0, f"lmforge train failed (rc {rc}):\n{out[-4000:]}"
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self._out.close()


def _train_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if "loss" in r]


def _steps(run: Path) -> list[int]:
    return [s for s, _ in list_checkpoints(run)]


def _assert_same_training(run: Path, reference: Path) -> None:
    """Per step, exactly once, the same loss / grad norm / LR as the reference run (==, not approx)."""
    got, want = _train_records(run), _train_records(reference)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1)), "every step exactly once, in order"
    assert [r["step"] for r in want] == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm", "lr", "ce", "tokens", "tokens_seen"):
        assert [r[key] for r in got] == [r[key] for r in want], key


def _assert_same_model(ckpt_a: Path, ckpt_b: Path) -> None:
    a, b = load_model(ckpt_a).state_dict(), load_model(ckpt_b).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _copy_run(src: Path, dst: Path, token_dirs) -> Path:
    """A copy of a finished run directory, and its config pointing at the copy."""
    shutil.copytree(src, dst)
    return write_run_config(token_dirs, dst, **SECTIONS)


def _kill_after_step_6(train: Train, run: Path) -> None:
    """SIGKILL the run once its step-6 checkpoint is complete and it has logged a step after it."""
    target = checkpoint_dir(run, 6) / COMPLETE
    deadline = time.monotonic() + 240
    while not (target.is_file() and any(r["step"] >= 7 for r in _train_records(run))):
        if train.proc.poll() is not None:
            pytest.fail(f"the run ended (rc {train.proc.returncode}) before its step-6 checkpoint:\n{train.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail("no step-6 checkpoint within 240 s")
        time.sleep(0.002)
    os.kill(train.proc.pid, signal.SIGKILL)
    train.proc.wait(timeout=60)
    train.stop()
    # It was killed mid-run, not finished: the kill is what ended it, and the run is incomplete.
    assert train.proc.returncode == -signal.SIGKILL, f"the run finished before it could be killed (rc {train.proc.returncode})"


@pytest.fixture(scope="module")
def runs(token_dirs, tmp_path_factory) -> dict:
    """Three runs of one config, two at a time:

    reference  uninterrupted
    killed     SIGKILLed after its step-6 checkpoint (and a logged step after it), then ``--resume``d
    older      a copy of the finished reference resumed with ``--resume RUN/checkpoints/step0000012``
    """
    root = tmp_path_factory.mktemp("resume")
    reference, killed, older = root / "reference", root / "killed", root / "older"
    started: list[Train] = []
    try:
        started.append(ref := Train(write_run_config(token_dirs, reference, **SECTIONS), log=root / "reference.log"))
        killed_cfg = write_run_config(token_dirs, killed, **SECTIONS)
        started.append(first := Train(killed_cfg, log=root / "killed.log"))
        _kill_after_step_6(first, killed)
        latest = latest_checkpoint(killed)
        killed_at = int(latest.name[len("step") :])
        logged_before = max(r["step"] for r in _train_records(killed))
        assert 6 <= killed_at < STEPS and 7 <= logged_before < STEPS
        started.append(resumed := Train(killed_cfg, "--resume", log=root / "resumed.log"))

        ref.wait()
        assert _steps(reference) == FINAL_CHECKPOINTS
        older_cfg = _copy_run(reference, older, token_dirs)
        older_ckpt = checkpoint_dir(older, 12)
        started.append(again := Train(older_cfg, "--resume", str(older_ckpt), log=root / "older.log"))

        resumed_out = resumed.wait()
        older_out = again.wait()
    finally:
        for t in started:
            t.stop()
    return {
        "reference": reference,
        "killed": killed,
        "killed_at": killed_at,
        "logged_before": logged_before,
        "resumed_out": resumed_out,
        "latest_at_kill": latest,
        "older": older,
        "older_ckpt": older_ckpt,
        "older_out": older_out,
    }


def test_sigkill_resume_is_bit_exact(runs):
    run = runs["killed"]
    assert f"resumed from {runs['latest_at_kill']} at step {runs['killed_at']}" in runs["resumed_out"]
    # Steps the killed process logged after its last checkpoint were dropped and trained again, once.
    _assert_same_training(run, runs["reference"])
    assert _steps(run) == FINAL_CHECKPOINTS


def test_sigkill_resume_final_model_equal(runs):
    _assert_same_model(checkpoint_dir(runs["killed"], STEPS), checkpoint_dir(runs["reference"], STEPS))


def test_resume_from_an_older_checkpoint(runs):
    run = runs["older"]
    assert f"resumed from {runs['older_ckpt']} at step 12" in runs["older_out"]
    _assert_same_training(run, runs["reference"])
    _assert_same_model(checkpoint_dir(run, STEPS), checkpoint_dir(runs["reference"], STEPS))
    assert _steps(run) == FINAL_CHECKPOINTS


def test_existing_checkpoints_need_resume(runs, token_dirs, tmp_path, capsys):
    run = tmp_path / "again"
    cfg = _copy_run(runs["reference"], run, token_dirs)
    before = (run / "metrics.jsonl").read_text()
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lmforge: error: ") and "--resume" in err and "step0000030" in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing was touched
    assert _steps(run) == FINAL_CHECKPOINTS


def test_resume_refuses_a_changed_data_order(runs, token_dirs, tmp_path, capsys):
    run = tmp_path / "reseeded"
    cfg = _copy_run(runs["reference"], run, token_dirs)
    before = (run / "metrics.jsonl").read_text()
    assert main(["train", str(cfg), "--resume", "--data.seed=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lmforge: error: ") and "data_order.json" in err
    assert "changed" in err and "seed" in err  # the data order changed: its seed
    assert (run / "metrics.jsonl").read_text() == before
    assert _steps(run) == FINAL_CHECKPOINTS
