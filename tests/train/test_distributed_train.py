"""`lmforge train` under torchrun (2 real gloo processes on the CPU) trains exactly like 1 process
on the same global batch: the same loss curve with DDP and with FSDP, checkpoints that move between
world sizes (2 -> 1 and 1 -> 2 processes) without changing the curve, and each rank training on
its own half of every global batch.

Every run is a real subprocess (``python -m lmforge train`` or ``python -m torch.distributed.run
... -m lmforge train``) with one intra-op thread per process. The module's runs are started side by
side in two waves by one fixture (the second wave resumes runs of the first); each test checks the
exit status and output of the runs it uses, so one failing run fails only the tests that use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from lmforge.checkpoint import load_model
from lmforge.cli import main
from lmforge.train.callbacks import read_metrics
from tests.train.conftest import write_run_config

pytestmark = [
    pytest.mark.required_in_ci,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs torch.distributed with gloo"),
]

REPO = Path(__file__).resolve().parents[2]
STEPS, HALF, WORLD = 8, 4, 2
# global batch 8 = 2 ranks x 2 micro-batches x 2 instances: gradient accumulation on every rank
SECTIONS = dict(
    trainer={"global_batch": 8, "micro_batch": 2},
    schedule={"kind": "cosine", "warmup_steps": 2, "total_steps": STEPS},
    checkpoint={"every": HALF, "keep_last": 2},
)
RTOL, ATOL = 1e-5, 1e-6  # float32 sums in another order (per-rank partial sums, then all-reduce)
TIMEOUT_S = 300

# `lmforge train` through lmforge.cli.main, recording what the Trainer hands to the train module on
# each rank (RUN/batches.rank{R}.jsonl): the instances each rank really trained on, step by step.
RECORDER = textwrap.dedent(
    """
    import json, sys
    from lmforge.train.trainer import Trainer

    _micro_batches = Trainer.micro_batches

    def micro_batches(self, step):
        mbs = _micro_batches(self, step)
        path = self.run_dir / f"batches.rank{self.dist.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"step": step + 1, "rank": self.dist.rank, "world_size": self.dist.world_size,
               "micro_batches": [mb.input_ids.tolist() for mb in mbs]}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\\n")
        return mbs

    Trainer.micro_batches = micro_batches
    from lmforge.cli import main
    sys.exit(main())
    """
)


# --- launching ------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"  # several processes on few cores
    return env


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class Job:
    """``lmforge ARGS`` in one process, or in ``nproc`` processes under torchrun, in the background."""

    args: list[str]
    log: Path
    nproc: int = 1
    script: Path | None = None  # run this instead of ``-m lmforge`` (same command line)
    rc: int | None = None
    output: str = ""
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, port: int) -> Job:
        entry = [str(self.script)] if self.script else ["-m", "lmforge"]
        if self.nproc == 1:
            cmd = [sys.executable, *entry, *self.args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}", "--nnodes=1",
                   "--master_addr=127.0.0.1", f"--master_port={port}", *entry, *self.args]  # fmt: skip
        with open(self.log, "w") as out:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO, start_new_session=True)
        return self

    def wait(self) -> Job:
        try:
            self.rc = self._proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)  # torchrun and its workers: the process group we started
            self.rc = self._proc.wait()
        self.output = self.log.read_text()
        return self

    @property
    def port_taken(self) -> bool:
        return self.rc != 0 and self.nproc > 1 and ("EADDRINUSE" in self.output or "address already in use" in self.output)

    def check(self) -> str:
        """The output of a successful run; a failed one (or an abort at teardown) fails the test."""
        what = f"lmforge {' '.join(self.args)} ({self.nproc} process(es))"
        assert self.rc == 0, f"{what} failed (exit {self.rc}):\n{self.output[-6000:]}"
        # gloo's abort at interpreter exit (a worker thread releasing a tensor after Python began
        # finalizing): must not happen, not even once the run's work is done
        assert "terminate called" not in self.output, f"{what}: a process aborted at exit:\n{self.output[-6000:]}"
        return self.output


def _run_all(jobs: list[Job]) -> None:
    """Start ``jobs`` side by side and wait for them; a torchrun whose port was taken meanwhile is
    started again (up to twice)."""
    todo = jobs
    for _ in range(3):
        for job, port in zip(todo, _free_ports(len(todo))):
            job.start(port)
        for job in todo:
            job.wait()
        todo = [job for job in todo if job.port_taken]
        if not todo:
            return


# --- reading runs ---------------------------------------------------------------------------------
def _curve(run: Path) -> dict[int, dict]:
    recs = [r for r in read_metrics(run) if "loss" in r]
    steps = [r["step"] for r in recs]
    assert steps == sorted(set(steps)), f"{run}: steps logged out of order or twice: {steps}"
    return {r["step"]: r for r in recs}


def _assert_same_curve(run: Path, ref: Path, steps, what: str) -> None:
    got, want = _curve(run), _curve(ref)
    steps = list(steps)
    assert set(steps) <= set(got), f"{what}: steps {sorted(set(steps) - set(got))} missing from {run}/metrics.jsonl"
    for key in ("loss", "grad_norm", "lr"):
        a = torch.tensor([got[s][key] for s in steps], dtype=torch.float64)
        b = torch.tensor([want[s][key] for s in steps], dtype=torch.float64)
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m, k=key, a=a, b=b: f"{what}: {k} at steps {steps}\n got  {a.tolist()}\n want {b.tolist()}\n{m}")  # fmt: skip
    assert [got[s]["tokens"] for s in steps] == [want[s]["tokens"] for s in steps], f"{what}: label-token counts differ"


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step{step:07d}"


def _ckpt_world(run: Path, step: int) -> int:
    """How many processes saved the checkpoint of ``step``."""
    return json.loads((_ckpt(run, step) / "COMPLETE").read_text())["world_size"]


def _assert_same_weights(run: Path, ref: Path, step: int, what: str) -> None:
    got = load_model(_ckpt(run, step)).state_dict()
    want = load_model(_ckpt(ref, step)).state_dict()
    assert got.keys() == want.keys()
    for k in want:
        # Adam divides by sqrt(v): rounding differences in tiny gradient entries grow a little
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{what}: weight {k}: {m}")


def _batches(run: Path, rank: int) -> dict[int, list[list[int]]]:
    """Step -> the instances (token lists) the recorder saw on ``rank``, micro-batches concatenated."""
    recs = [json.loads(line) for line in (run / f"batches.rank{rank}.jsonl").read_text().splitlines()]
    out = {}
    for r in recs:
        assert r["rank"] == rank and r["step"] not in out
        assert [len(mb) for mb in r["micro_batches"]] == [2] * (8 // 2 // r["world_size"]), "micro-batches of 2 instances"
        out[r["step"]] = [seq for mb in r["micro_batches"] for seq in mb]
    return out


def _inspect(run: Path, step: int, world_size: int) -> list[dict]:
    """``lmforge data inspect --run RUN --step N --world-size W --jsonl`` (in this process: numpy only)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["data", "inspect", "--run", str(run), "--step", str(step), "--world-size", str(world_size), "--jsonl"])
    assert rc == 0
    return [json.loads(line) for line in buf.getvalue().splitlines()]


# --- the runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(token_dirs, tmp_path_factory) -> dict:
    """name -> (run directory, [jobs]) for:

    single  1 process, 8 steps (the reference; batches recorded)
    ddp     2 processes, DDP, 8 steps (batches recorded)
    fsdp    2 processes, FSDP, 8 steps
    2to1    2 processes (FSDP) to step 4, then --resume in 1 process to step 8
    1to2    1 process to step 4, then --resume in 2 processes (FSDP) to step 8
    """
    d = tmp_path_factory.mktemp("dist_train")
    recorder = d / "record_batches.py"
    recorder.write_text(RECORDER, encoding="utf-8")
    cfgs = {name: write_run_config(token_dirs, d / name, **SECTIONS) for name in ("single", "ddp", "fsdp", "2to1", "1to2")}

    def job(name: str, *extra: str, nproc: int = 1, script: Path | None = None, part: int = 1) -> Job:
        return Job(["train", str(cfgs[name]), *extra], d / f"{name}.{part}.log", nproc=nproc, script=script)

    first = {
        "single": job("single", script=recorder),
        "ddp": job("ddp", "--trainer.parallel=ddp", nproc=WORLD, script=recorder),
        "fsdp": job("fsdp", "--trainer.parallel=fsdp", nproc=WORLD),
        # the first part stops at step 4 (max_steps), on the 8-step LR schedule
        "2to1": job("2to1", "--trainer.parallel=fsdp", f"--trainer.max_steps={HALF}", nproc=WORLD),
        "1to2": job("1to2", f"--trainer.max_steps={HALF}"),
    }
    _run_all(list(first.values()))
    second = {
        "2to1": job("2to1", "--resume", f"--trainer.max_steps={STEPS}", part=2),
        "1to2": job("1to2", "--trainer.parallel=fsdp", "--resume", f"--trainer.max_steps={STEPS}", nproc=WORLD, part=2),
    }
    _run_all([j for name, j in second.items() if first[name].rc == 0])
    return {name: (d / name, [first[name]] + ([second[name]] if name in second else [])) for name in first}


def _run(runs: dict, name: str) -> tuple[Path, list[str]]:
    """A run's directory and the outputs of its parts, failing the test if a part failed."""
    run, jobs = runs[name]
    return run, [j.check() for j in jobs]


# --- 1. DDP and FSDP on 2 processes == 1 process -------------------------------------------------
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_train_like_one(mode, runs):
    single, _ = _run(runs, "single")
    run, (out,) = _run(runs, mode)
    assert f"({WORLD} process(es)" in out
    assert list(_curve(run)) == list(range(1, STEPS + 1))
    _assert_same_curve(run, single, range(1, STEPS + 1), f"2-process {mode} vs 1 process")
    curve = _curve(single)
    assert curve[STEPS]["loss"] < curve[1]["loss"] - 0.3, "the model should learn something in 8 steps"
    assert _ckpt_world(run, STEPS) == WORLD and _ckpt_world(single, STEPS) == 1
    _assert_same_weights(run, single, STEPS, f"2-process {mode} vs 1 process, step {STEPS}")


# --- 2. checkpoints move between world sizes -----------------------------------------------------
@pytest.mark.parametrize("name,first,then", [("2to1", WORLD, 1), ("1to2", 1, WORLD)])
def test_resume_with_another_world_size(name, first, then, runs):
    single, _ = _run(runs, "single")
    run, (out1, out2) = _run(runs, name)
    assert f"({first} process(es), {HALF} steps" in out1
    assert f"({then} process(es), {STEPS} steps" in out2
    assert f"resumed from {_ckpt(run, HALF)} at step {HALF}" in out2
    assert _ckpt_world(run, HALF) == first and _ckpt_world(run, STEPS) == then
    assert list(_curve(run)) == list(range(1, STEPS + 1))
    _assert_same_curve(run, single, range(1, HALF + 1), f"{first} process(es), before the checkpoint")
    _assert_same_curve(run, single, range(HALF + 1, STEPS + 1), f"{first} -> {then} processes, after resuming")
    _assert_same_weights(run, single, STEPS, f"{first} -> {then} processes, step {STEPS}")


# --- 3. each rank trains on its own half of every global batch -----------------------------------
def test_ranks_split_each_global_batch(runs):
    single, _ = _run(runs, "single")
    ddp, _ = _run(runs, "ddp")
    whole = _batches(single, 0)
    ranks = [_batches(ddp, r) for r in range(WORLD)]
    for rec in (whole, *ranks):
        assert sorted(rec) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        # what the ranks trained on, side by side, is the 1-process batch; each rank its own half
        assert ranks[0][step] + ranks[1][step] == whole[step], f"step {step}"
        per_rank = _inspect(ddp, step, WORLD)
        one = _inspect(single, step, 1)
        assert [row["rank"] for row in per_rank] == [0] * 4 + [1] * 4
        assert [row["rank"] for row in one] == [0] * 8
        by_rank = [[row for row in per_rank if row["rank"] == r] for r in range(WORLD)]
        # disjoint: no instance (mix position, or file and token offset) on both ranks
        pos = [{row["position"] for row in rows} for rows in by_rank]
        where = [{(row["file"], row["offset"]) for row in rows} for rows in by_rank]
        assert len(pos[0]) == len(pos[1]) == 4 and not pos[0] & pos[1], f"step {step}"
        assert len(where[0]) == len(where[1]) == 4 and not where[0] & where[1], f"step {step}"
        # together, in rank order: the 1-process batch of that step
        assert [row["position"] for row in per_rank] == [row["position"] for row in one], f"step {step}"
        # and `data inspect` names exactly the instances the Trainer gave each rank
        for r in range(WORLD):
            assert [row["tokens"] for row in by_rank[r]] == ranks[r][step], f"step {step}, rank {r}"
        assert [row["tokens"] for row in one] == whole[step], f"step {step}"
