"""Two commands on one output: the second is refused at once with one line, before it writes
anything; and a refused command leaves the run it was refused for exactly as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.data.documents import Document, write_documents
from lmforge.storage import LOCK_NAME, OutputLockedError, lock_output
from tests.conftest import corpus_lines
from tests.faults._harness import held_elsewhere, lmforge, snapshot, write_yaml
from tests.train.conftest import write_run_config


def _refused(capsys, argv: list[str], where: Path) -> str:
    """``lmforge ARGV`` in this process while another process holds ``where``: exit 2, one line."""
    before = snapshot(where)
    with held_elsewhere(where):
        assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("fetch:",))]
    assert len(lines) == 1 and lines[0].startswith("lmforge: error:"), err
    assert "in use by another lmforge command" in lines[0] and "lmforge (another run)" in lines[0], lines[0]
    assert snapshot(where) == before, "the refused command wrote into the held directory"
    return lines[0]


@pytest.fixture()
def docs(tmp_path):
    lines = corpus_lines(200, seed=2)
    for name in ("a", "b"):
        write_documents(tmp_path / "corpus" / "documents" / f"{name}.jsonl",
                        [Document(id=f"{name}{i}", text="\n".join(lines[i * 2 : i * 2 + 2]), source="s") for i in range(40)])
    return tmp_path / "corpus"


def test_lock_is_exclusive_across_processes_reentrant_within_one_and_freed_by_death(tmp_path):
    d = tmp_path / "out"
    with held_elsewhere(d) as holder:
        with pytest.raises(OutputLockedError, match=rf"{d} is in use by another lmforge command \(pid {holder.pid} "):
            with lock_output(d, "second"):
                pass
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
        with lock_output(d, "third"):
            with lock_output(d, "nested, same process"):
                assert json.loads((d / LOCK_NAME).read_text())["command"] == "third"


def test_data_commands_refuse_a_held_output(tmp_path, docs, bpe_tokenizer, capsys):
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    _refused(capsys, ["data", "tokenize", "--documents", docs / "documents", "--tokenizer", tok, "--out", tmp_path / "tokens"], tmp_path / "tokens")
    _refused(capsys, ["data", "dedup", "--documents", docs / "documents", "--mode", "documents", "--name", "dd"], docs / "attributes" / "dd")
    _refused(capsys, ["data", "tag", "--documents", docs / "documents", "--taggers", "gopher_quality", "--experiment", "q"], docs / "attributes" / "q")
    mix = write_yaml(tmp_path / "mix.yaml", {"documents": [str(docs / "documents")], "attributes": [], "output": str(tmp_path / "mixed"), "workers": 1})
    _refused(capsys, ["data", "mix", mix], tmp_path / "mixed")
    _refused(capsys, ["data", "analyze", "--documents", docs / "documents", "--out", tmp_path / "report", "--tasks", ""], tmp_path / "report")
    recipe = write_yaml(tmp_path / "recipe.yaml", {"sources": [{"name": "local", "kind": "local", "domain": "prose", "local": str(docs / "documents")}]})
    _refused(capsys, ["data", "fetch", recipe, "--out", tmp_path / "fetched"], tmp_path / "fetched")
    # and with the holder gone, each runs (the same command line, nothing left over from the refusals)
    assert main(["data", "tokenize", "--documents", str(docs / "documents"), "--tokenizer", str(tok), "--out", str(tmp_path / "tokens")]) == 0


def test_two_trains_into_one_new_run_dir(tmp_path, token_dirs):
    """Two real ``lmforge train`` processes: the second is refused while the first runs, and the
    first run's files are its own."""
    run = tmp_path / "run"
    first = write_run_config(token_dirs, run, tmp_path / "first.yaml", trainer={"max_steps": 400}, schedule={"total_steps": 400}, checkpoint={"every": 100})
    second = write_run_config(token_dirs, run, tmp_path / "second.yaml", optim={"lr": 1e-4})
    a = subprocess.Popen([sys.executable, "-m", "lmforge", "train", str(first)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert a.poll() is None, a.stderr.read()
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.2)
        b = lmforge("train", second)
        assert b.returncode == 2
        err = [ln for ln in b.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("lmforge: error:") and f"pid {a.pid}" in err[0], b.stderr
        assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 3.0e-3  # the first run's config
    finally:
        a.kill()
        a.wait()


def test_refused_train_leaves_the_run_as_it_was(tmp_path, token_dirs, capsys):
    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run, trainer={"max_steps": 4}, schedule={"total_steps": 4}, checkpoint={"every": 2})
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    config_before = (run / "config.yaml").read_bytes()
    # 1. new hyperparameters into a run that has checkpoints, without --resume
    other = write_run_config(token_dirs, run, tmp_path / "other.yaml", optim={"lr": 1e-4}, trainer={"max_steps": 4}, schedule={"total_steps": 4})
    assert main(["train", str(other)]) == 2
    assert "already has checkpoints" in capsys.readouterr().err
    # 2. --resume with other data: refused by the data-order check, after loading the checkpoint
    changed = write_run_config(token_dirs, run, tmp_path / "changed.yaml", data={"seed": 99}, trainer={"max_steps": 6}, schedule={"total_steps": 6})
    assert main(["train", str(changed), "--resume"]) == 2
    assert "the data changed" in capsys.readouterr().err
    # 3. --resume from something that is not a checkpoint
    assert main(["train", str(other), f"--resume={tmp_path / 'nowhere'}"]) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == config_before
    assert snapshot(run) == before


def test_damaged_latest_checkpoint_names_the_previous_one(tmp_path, token_dirs, capsys):
    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run, trainer={"max_steps": 4}, schedule={"total_steps": 4}, checkpoint={"every": 2, "keep_last": 2})
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    shard = next((run / "checkpoints" / "step0000004").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    assert main(["train", str(cfg), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    prev = run / "checkpoints" / "step0000002"
    assert f"--resume {prev}" in err[0], err[0]
    assert main(["train", str(cfg), "--resume", str(prev)]) == 0  # the suggestion works


def test_second_release_is_refused_and_leaves_the_running_ones_scratch(tmp_path, token_dirs, capsys):
    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run, trainer={"max_steps": 2}, schedule={"total_steps": 2}, checkpoint={"every": 2})
    assert main(["train", str(cfg)]) == 0
    repo = tmp_path / "repo"
    assert main(["release", str(run), "--repo", str(repo)]) == 0
    capsys.readouterr()
    scratch = repo / ".git" / "lmforge-release-running"  # what a running release works in
    scratch.mkdir()
    (scratch / "half-exported.safetensors").write_bytes(b"...")
    _refused(capsys, ["release", run, "--repo", repo], repo / ".git")
    assert (scratch / "half-exported.safetensors").is_file()
