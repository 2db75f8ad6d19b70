"""The side-by-side benchmarks run (in --quick / --tiny mode) and check their own correctness gates:
each writes its agreement check into its JSON, and exits 1 when the check fails (shown here by
running four of them with a fault put into lmforge).

No timing is asserted here: speed figures come from running the scripts (docs/benchmarks.md).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(script: str, *args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """Run ``bench/script`` with ``args``; ``prelude``: Python run first in the same process (a fault)."""
    if not prelude:
        cmd = [sys.executable, str(BENCH / script), *args]
    else:  # the fault lives in a module of its own (torch.compile looks functions' globals up by module name)
        run = (
            "import runpy, sys, types\n"
            "fault = types.ModuleType('injected_fault'); sys.modules['injected_fault'] = fault\n"
            f"exec(compile({prelude!r}, 'injected_fault', 'exec'), fault.__dict__)\n"
            f"sys.argv = [{str(BENCH / script)!r}] + sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", run, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_train_step_cpu_quick(tmp_path):
    r = _bench("train_step_cpu.py", "--quick", "--json", str(tmp_path / "r.json"))
    _ok(r)
    assert "ratio lmforge/HF" in r.stdout and "machine:" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    agree = res["agreement"]
    assert agree["ok"] is True and agree["steps"] >= 4
    assert agree["initial_loss_diff"] <= agree["initial_loss_tol"] == 1e-4  # float32
    assert agree["loss_drift"] <= agree["loss_drift_tol"] == 1e-3
    assert abs(res["initial_loss"]["lmforge"] - res["initial_loss"]["HF"]) == pytest.approx(agree["initial_loss_diff"])
    assert math.isfinite(res["initial_loss"]["HF"]) and res["initial_loss"]["HF"] > 1


def test_decode_cpu_quick(tmp_path):
    r = _bench("decode_cpu.py", "--quick", "--json", str(tmp_path / "r.json"))
    _ok(r)
    assert "ratio lmforge/HF" in r.stdout and "machine:" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["dtype"] == "torch.float32" and len(res["results"]) == 2
    for row in res["results"].values():  # float32: token-for-token identical to HF, or the script exits 1
        assert row["strict"] is True and row["rows_differing_from_hf"] == 0


def test_eval_generation_quick(tmp_path):
    """bench/eval_generation.py --quick: lmforge's generation engine and lm-eval's HF backend (at the
    same batch size and at batch size 1) give the same text for every request before any timing."""
    pytest.importorskip("lm_eval")
    r = _bench("eval_generation.py", "--quick", "--json", str(tmp_path / "r.json"))
    _ok(r)
    assert "ratio lmforge/lm-eval" in r.stdout and "machine:" in r.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    agree = res["agreement"]
    assert agree["ok"] is True and agree["mismatches"] == [] and agree["requests"] == res["examples"] == 8
    assert agree["identical"] == {"lm-eval": 8, "lm-eval-bs1": 8}
    assert set(res["examples_per_s"]) == {"lmforge", "lm-eval", "lm-eval-bs1"} and res["ratio"] > 0


def test_eval_generation_gate_fails(tmp_path):
    """One lmforge text off by a character: the script reports it, writes its JSON and exits 1."""
    pytest.importorskip("lm_eval")
    fault = """
import dataclasses
import lmforge.eval.generation as generation
_generate_all = generation.generate_all
def generate_all(*a, **kw):
    out = _generate_all(*a, **kw)
    return [dataclasses.replace(out[0], text=out[0].text + "!"), *out[1:]]
generation.generate_all = generate_all
"""
    r = _bench("eval_generation.py", "--quick", "--train-steps", "0", "--no-bs1", "--json", str(tmp_path / "r.json"), prelude=fault)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "MISMATCH" in r.stdout and "ratio" not in r.stdout
    agree = json.loads((tmp_path / "r.json").read_text())["agreement"]
    assert agree["ok"] is False and agree["identical"] == {"lm-eval": 7} and len(agree["mismatches"]) == 1


def test_gpu_training_benchmark_tiny(tmp_path):
    """bench/train_speed_gpu.py --tiny on the CPU: lmforge's real trainer path runs, reports, and its
    first step's cross-entropy is the one plain logits give."""
    _ok(_bench("train_speed_gpu.py", "--tiny", "--only", "lmforge", "--out", str(tmp_path)))
    res = json.loads((tmp_path / "train_speed_gpu.json").read_text())["lmforge"]
    assert res["tokens_per_s"] > 0 and res["loss_last"] > 0
    assert res["mfu_lmforge_convention"] > res["mfu_olmo_core_convention"]
    agree = res["agreement"]
    assert agree["ok"] is True and agree["losses_finite"] is True and agree["rtol"] == 1e-4
    assert agree["first_step_ce"] == pytest.approx(agree["plain_ce"], rel=1e-4) and agree["rel_diff"] <= 1e-4
    assert abs(agree["plain_ce"] - math.log(512)) < 0.5  # a random init: about ln(vocabulary)


def test_decode_gpu_tiny(tmp_path):
    """bench/decode_gpu.py --tiny on the CPU: compiled tokens = plain tokens = HF generate()'s."""
    _ok(_bench("decode_gpu.py", "--tiny", "--out", str(tmp_path)))
    res = json.loads((tmp_path / "decode_gpu.json").read_text())
    agree = res["hf_agreement"]
    assert agree["ok"] is True and agree["dtype"] == "float32" and agree["rows"] >= 4 and agree["new_tokens"] == 24
    assert agree["identical_rows"] == agree["rows"] and agree["divergences"] == []  # float32 on the CPU: exact
    batches = [k for k in res if k.startswith("batch")]
    assert batches == ["batch1", "batch4"]
    for k in batches:
        assert res[k]["compiled_equals_plain"] is True and res[k]["hf_equals_plain"] is True, k


def test_checkpoint_stall_tiny(tmp_path):
    """bench/checkpoint_stall.py --tiny: every save (the peer's DCP, lmforge's synchronous and
    background) loads back equal to the live model and optimizer state."""
    _ok(_bench("checkpoint_stall.py", "--tiny", "--reps", "2", "--out", str(tmp_path)))
    res = json.loads((tmp_path / "checkpoint_stall.json").read_text())
    agree = res["agreement"]
    assert agree["ok"] is True and agree["problems"] == {}
    assert agree["checked"] == ["lmforge_background", "lmforge_sync", "peer_dcp"]
    assert agree["tensors"] > 2 * 10  # model tensors and the optimizer's moments
    assert res["lmforge_background_blocked_s"] > 0 and res["peer_dcp_save_s"] > 0


def test_fast_vs_plain_tiny(tmp_path):
    _ok(_bench("fast_vs_plain.py", "--tiny", "--out", str(tmp_path)))
    res = json.loads((tmp_path / "fast_vs_plain.json").read_text())
    assert res["ok"] is True and res["steps"] == 20 and res["rtol"] == 1e-5
    assert res["max_rel_loss_diff"] <= res["rtol"]


# --- the gates fail: a fault put into lmforge before the script runs --------------------------------
_FAULTS = {
    # the background save writes a state that is not the live one (a parameter off by 1)
    "checkpoint_stall.py": ("""
import torch
import lmforge.checkpoint.sharded as sharded
_save = sharded.save_checkpoint_background
def save(run_dir, step, *, model, optimizer, **kw):
    p = next(model.parameters())
    live = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    try:
        return _save(run_dir, step, model=model, optimizer=optimizer, **kw)
    finally:
        with torch.no_grad():
            p.copy_(live)
sharded.save_checkpoint_background = save
""", ["--tiny", "--reps", "1"], lambda res: res["agreement"]["problems"].keys() == {"lmforge_background"}),
    # the trainer's fused loss reports a cross-entropy 1% too high
    "train_speed_gpu.py": ("""
import lmforge.models.olmo as olmo
_ce = olmo.linear_cross_entropy
def ce(*a, **kw):
    out = _ce(*a, **kw)
    return out._replace(ce=out.ce * 1.01)
olmo.linear_cross_entropy = ce
""", ["--tiny", "--only", "lmforge"], lambda res: res["lmforge"]["agreement"]["ok"] is False),
    # the logits (cached and compiled decoding alike) favour one token a little
    "decode_gpu.py": ("""
import lmforge.models.olmo as olmo
_output = olmo.OLMo.output
def output(self, hidden):
    out = _output(self, hidden).clone()
    out[..., 7] += 0.3
    return out
olmo.OLMo.output = output
""", ["--tiny"], lambda res: res["hf_agreement"]["ok"] is False and res["hf_agreement"]["divergences"]),
}


@pytest.mark.parametrize("script", sorted(_FAULTS))
def test_a_failed_agreement_check_exits_1(script, tmp_path):
    prelude, args, failed = _FAULTS[script]
    r = _bench(script, *args, "--out", str(tmp_path), prelude=prelude)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(next(tmp_path.glob("*.json")).read_text())  # written before exiting
    assert failed(res), res


def test_data_dedup_scaling_tiny(tmp_path):
    """Partitioned and Bloom paths agree, every task's memory is measured, at two tiny sizes."""
    r = _bench("data_dedup_scaling.py", "--sizes", "1", "2", "--shard-mb", "0.5", "--bucket-mb", "0.5", "--base-mb", "1", "--reps", "1",
               "--root", str(tmp_path / "c"), "--json", str(tmp_path / "r.json"))
    _ok(r)
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [row["buckets"] for row in rows] == [2, 4] and all(row["bloom_extra_spans"] == 0 for row in rows)
    assert set(rows[1]["memory_partitioned_mb"]) == {"keys", "buckets", "attributes"} and "Bloom filter" in rows[1]["memory_bloom_mb"]


def test_data_executors_tiny(tmp_path):
    """The local pool and Ray write the same bytes (the script's exit status)."""
    pytest.importorskip("ray")
    r = _bench("data_executors.py", "--mb", "1", "--shards", "3", "--reps", "1", "--root", str(tmp_path / "c"), "--json", str(tmp_path / "r.json"))
    _ok(r)
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert len(results) == 2 and all(v["identical"] for v in results.values())
