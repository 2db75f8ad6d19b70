"""Tests that CI must run, not skip: ``@pytest.mark.required_in_ci``, enforced by ``LMFORGE_REQUIRE``
(tests/conftest.py) which ``.ci/run`` sets before the README's test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What CI must run: the lm-eval agreement tests, the 2-process gloo tests, the W&B offline test, the
# language-ID tests, the pyarrow cross-check (node ids; a file alone: all of its tests).
REQUIRED = [
    "tests/eval/test_lm_eval_agreement.py",
    "tests/distributed/test_parallel.py::test_ddp_and_fsdp_match_single_process",
    "tests/train/test_distributed_train.py",
    "tests/train/test_adapt_distributed.py",
    "tests/eval/test_downstream.py::test_in_loop_evaluator_fsdp_two_ranks",
    "tests/checkpoint/test_sharded.py::test_two_process_save_one_process_load",
    "tests/train/test_trainer.py::test_wandb_offline",
    "tests/corpus/test_taggers.py::test_language_id",
    "tests/corpus/test_taggers.py::test_language_langid_backend",
    "tests/eval/test_tasks.py::test_arrow_reader_agrees_with_pyarrow",
    "tests/eval/test_lm_eval_generation.py",
    "tests/eval/test_sandbox.py",
    "tests/eval/test_generative.py::test_two_processes_give_the_one_process_results",
    "tests/eval/test_checkpoints.py::test_two_processes_share_the_checkpoints",
]

_SAMPLE = '''
import pytest

@pytest.mark.required_in_ci
@pytest.mark.skipif(True, reason="needs a package that is not installed")
def test_marked_skipif():
    pass

@pytest.mark.required_in_ci
def test_marked_importorskip():
    pytest.importorskip("a_module_that_does_not_exist_anywhere")

@pytest.mark.skipif(True, reason="optional")
def test_unmarked_skip():
    pass

@pytest.mark.required_in_ci
@pytest.mark.xfail(reason="known", run=True, strict=True)
def test_marked_xfail():
    assert False

@pytest.mark.required_in_ci
def test_marked_passes():
    pass
'''


def _pytest(args: list[str], require: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LMFORGE_REQUIRE"}
    if require is not None:
        env["LMFORGE_REQUIRE"] = require
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_skips_of_marked_tests_fail_only_when_required(tmp_path):
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]  # the project's
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n" + "".join(f"    {m}\n" for m in markers))
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_configure, pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(_SAMPLE)

    plain = _pytest(["-rA", "test_sample.py"], None, tmp_path)
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert re.search(r"\b3 skipped\b", plain.stdout) and "1 xfailed" in plain.stdout, plain.stdout[-1500:]

    ci = _pytest(["-rA", "test_sample.py"], "required_in_ci", tmp_path)
    assert ci.returncode == 1, ci.stdout[-3000:]
    out = ci.stdout
    # the two marked skips fail (the skipif at setup: an error; importorskip in the body: a failure) ...
    assert "ERROR test_sample.py::test_marked_skipif" in out and "FAILED test_sample.py::test_marked_importorskip" in out, out[-3000:]
    assert "needs a package that is not installed" in out and "requires it to run" in out
    # ... the unmarked skip stays a skip, an expected failure stays one, a marked test that runs passes
    assert "SKIPPED [1] test_sample.py" in out and "1 xfailed" in out and "PASSED test_sample.py::test_marked_passes" in out

    typo = _pytest(["test_sample.py"], "required_in_cj", tmp_path)
    assert typo.returncode != 0 and "unregistered markers: required_in_cj" in typo.stdout + typo.stderr


def test_what_ci_requires_is_marked():
    r = _pytest(["--collect-only", "-q", "-m", "required_in_ci", *sorted({n.split("::")[0] for n in REQUIRED})], None, ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    marked = [line for line in r.stdout.splitlines() if "::" in line]
    for want in REQUIRED:
        assert any(n == want or n.startswith(want + "::") or n.startswith(want + "[") for n in marked), want


def test_ci_requires_the_marked_tests_before_the_readme_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme_command = 'pip install -e ".[dev]" && python -m pytest'
    lines = ci.splitlines()
    export = lines.index("export LMFORGE_REQUIRE=required_in_ci")
    assert export < lines.index(readme_command)
