"""`lmforge data inspect`: the instances of a step, exactly as the trainer used them, decoded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.data.token_files import read_metadata
from lmforge.tokenizer.core import Tokenizer
from lmforge.train.config import TrainConfig
from lmforge.train.trainer import Trainer
from tests.train.conftest import run_config, token_dirs  # noqa: F401  (token_dirs: the session fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, token_dirs):  # noqa: F811
    """A 3-step run on a private copy of the token files, and the input ids the trainer fed per step."""
    from lmforge.train.run import train

    root = tmp_path_factory.mktemp("inspect")
    tokens = root / "tokens"
    shutil.copytree(token_dirs["train"], tokens)
    dirs = {**token_dirs, "train": tokens}
    cfg = TrainConfig.from_dict(run_config(dirs, root / "run", trainer={"max_steps": 3}, schedule={"total_steps": 3}))
    fed: dict[int, list[torch.Tensor]] = {}
    original = Trainer.micro_batches

    def recording(self, step):
        mbs = original(self, step)
        fed[step + 1] = [mb.input_ids.clone() for mb in mbs]  # 1-based, as metrics.jsonl and inspect count
        return mbs

    mp = pytest.MonkeyPatch()
    mp.setattr(Trainer, "micro_batches", recording)
    try:
        train(cfg, quiet=True)
    finally:
        mp.undo()
    return {"run": root / "run", "tokens": tokens, "cfg": cfg, "fed": fed, "tokenizer": token_dirs["tokenizer"]}


def inspect(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["data", "inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_jsonl_rows_are_what_the_trainer_used(trained, capsys):
    code, out, err = inspect(capsys, "--run", str(trained["run"]), "--step", "2", "--jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    cfg = trained["cfg"]
    assert len(rows) == cfg.trainer.global_batch == 8
    # what the trainer actually fed at step 2, micro-batch after micro-batch
    fed = torch.cat(trained["fed"][2]).numpy()
    assert np.array_equal(np.array([r["tokens"] for r in rows]), fed)
    # ... which is batch 1 (0-based) of the mixture the config builds
    mix = cfg.data.build(cfg.seq_len)
    for r, m in zip(rows, mix.batch(1, cfg.trainer.global_batch)):
        assert r["tokens"] == m.instance.tokens.tolist() and r["position"] == m.position
        assert (r["file"], r["offset"], r["source"], r["step"], r["rank"]) == (m.instance.file, m.instance.start, "train", 2, 0)
    # other steps differ
    assert not np.array_equal(torch.cat(trained["fed"][1]).numpy(), fed)

    tok = Tokenizer.from_file(str(trained["tokenizer"]))
    for r in rows:
        assert len(r["tokens"]) == cfg.seq_len
        assert r["text"] == tok.decode(r["tokens"], skip_special_tokens=False)
        # the documents named are exactly those whose token ranges overlap the instance
        meta = read_metadata(r["file"])
        want = [m.id for m in meta if m.start < r["offset"] + cfg.seq_len and m.end > r["offset"]]
        assert r["doc_ids"] == want and want
        # and the instance's EOS tokens split it into that many documents
        assert int(np.sum(np.array(r["tokens"][:-1]) == tok.eos_token_id)) + 1 == len(want)


def test_world_size_splits_the_batch(trained, capsys):
    code, out, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "3", "--jsonl")
    assert code == 0
    full = [json.loads(line) for line in out.splitlines()]
    code, out, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "3", "--jsonl", "--world-size", "2")
    assert code == 0
    split = [json.loads(line) for line in out.splitlines()]
    assert [r["rank"] for r in split] == [0] * 4 + [1] * 4
    assert [r["position"] for r in split] == [r["position"] for r in full]
    assert [r["tokens"] for r in split] == [r["tokens"] for r in full]
    code, _, err = inspect(capsys, "--run", str(trained["run"]), "--step", "3", "--world-size", "3")
    assert code == 2 and "not divisible" in err


def test_out_writes_jsonl_atomically(trained, capsys, tmp_path):
    target = tmp_path / "step2.jsonl"
    code, out, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "2", "--out", str(target))
    assert code == 0 and "8 instances of step 2" in out and str(target) in out
    _, jsonl, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "2", "--jsonl")
    assert target.read_text(encoding="utf-8") == jsonl
    assert [p.name for p in tmp_path.iterdir()] == ["step2.jsonl"]  # no temporary file left behind
    # a failing inspect leaves an existing output untouched
    code, _, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "0", "--out", str(target))
    assert code == 2 and target.read_text(encoding="utf-8") == jsonl


def test_text_mode_prints_one_header_per_instance(trained, capsys):
    code, out, _ = inspect(capsys, "--run", str(trained["run"]), "--step", "1")
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("=== step 1 instance ")]
    assert len(headers) == 8
    assert all("(rank 0): train" in h and ".npy @ token " in h and "docs: d" in h for h in headers)
    assert [h.split(" instance ")[1].split(" ")[0] for h in headers] == [str(i) for i in range(8)]


def test_bad_requests_exit_2_with_one_line(trained, capsys, tmp_path):
    code, out, err = inspect(capsys, "--run", str(trained["run"]), "--step", "0", "--jsonl")
    assert code == 2 and out == "" and "--step must be >= 1" in err and err.count("\n") == 1
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    code, out, err = inspect(capsys, "--run", str(empty), "--step", "1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "config.yaml" in err and "not found" in err and "lmforge train" in err


def test_changed_token_files_are_refused(trained, capsys, tmp_path):
    # a copy of the run whose config points at a copy of the tokens, so the module's run stays intact
    tokens = tmp_path / "tokens"
    shutil.copytree(trained["tokens"], tokens)
    run = tmp_path / "run"
    run.mkdir()
    text = (trained["run"] / "config.yaml").read_text(encoding="utf-8").replace(str(trained["tokens"]), str(tokens))
    (run / "config.yaml").write_text(text, encoding="utf-8")
    order = json.loads((trained["run"] / "data_order.json").read_text(encoding="utf-8"))
    for f in order["files"]:
        f["path"] = f["path"].replace(str(trained["tokens"]), str(tokens))
    (run / "data_order.json").write_text(json.dumps(order), encoding="utf-8")
    code, _, err = inspect(capsys, "--run", str(run), "--step", "2", "--jsonl")
    assert code == 0, err

    victim = sorted(tokens.glob("*.npy"))[0]
    size = victim.stat().st_size
    with open(victim, "ab") as fh:  # a few tokens: the instance count (and order) may not even change
        np.array([5, 6, 7], dtype=np.uint16).tofile(fh)
    code, out, err = inspect(capsys, "--run", str(run), "--step", "2", "--jsonl")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "changed since the run started" in err and victim.name in err and f"{size} bytes then, {size + 6} now" in err
    with open(victim, "ab") as fh:  # a whole instance more: the mix changes as well
        np.arange(1, 65, dtype=np.uint16).tofile(fh)
    code, _, err = inspect(capsys, "--run", str(run), "--step", "2", "--jsonl")
    assert code == 2 and "changed since the run started" in err
