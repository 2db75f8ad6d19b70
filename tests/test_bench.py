"""The side-by-side benchmarks run (in --quick mode) and check their own correctness gates.

No timing is asserted here: speed figures come from running the scripts (docs/benchmarks.md).
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", ["train_step_cpu.py", "decode_cpu.py"])
def test_benchmark_quick_mode(script):
    r = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ratio lmforge/HF" in r.stdout and "machine:" in r.stdout


def test_gpu_training_benchmark_tiny(tmp_path):
    """bench/train_speed_gpu.py --tiny on the CPU: lmforge's real trainer path runs and reports."""
    import json

    r = subprocess.run(
        [sys.executable, str(BENCH / "train_speed_gpu.py"), "--tiny", "--only", "lmforge", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "train_speed_gpu.json").read_text())
    assert res["lmforge"]["tokens_per_s"] > 0 and res["lmforge"]["loss_last"] > 0
    assert res["lmforge"]["mfu_lmforge_convention"] > res["lmforge"]["mfu_olmo_core_convention"]


@pytest.mark.parametrize("script", ["decode_gpu.py", "checkpoint_stall.py", "fast_vs_plain.py"])
def test_gpu_benchmarks_run_tiny_on_the_cpu(script, tmp_path):
    """The issue-8 device scripts, --tiny on the CPU: they run, and their correctness gates pass
    (decode: compiled tokens = plain tokens; fast_vs_plain: the same losses)."""
    r = subprocess.run([sys.executable, str(BENCH / script), "--tiny", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert list(tmp_path.glob("*.json"))
