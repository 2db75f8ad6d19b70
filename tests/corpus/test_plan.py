"""A stage run by another scheduler: ``lmforge data plan / run-shard / reduce / status``.

The byte-for-byte comparison with the local and Ray executors for every stage is in
test_executors.py; here: run-shard processes running side by side, a task that keeps failing
(``status`` shows it, ``reduce`` refuses, a fixed rerun finishes), inputs changed after planning,
the locks that keep a plain run out while a plan's tasks run, and the done-markers' JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.corpus.plan import PlanError, PlanStore, decode_result, encode_result
from lmforge.corpus.taggers import tag
from lmforge.data.documents import Accounting, Document, write_documents
from tests.conftest import corpus_lines
from tests.faults._harness import digest_tree

pytestmark = pytest.mark.required_in_ci


@pytest.fixture()
def root(tmp_path):
    lines = corpus_lines(600, seed=3)
    docs = [Document(id=f"d{i}", text="\n".join(lines[i * 4 : i * 4 + 4]), source="web") for i in range(120)]
    docs += [Document(id=f"c{i}", text=docs[i].text, source="web") for i in range(0, 120, 5)]
    for k in range(4):
        write_documents(tmp_path / "c" / "documents" / f"p{k}.jsonl.gz", docs[k::4])
    bad = tmp_path / "c" / "documents" / "p4.jsonl"
    bad.write_text('{"id": "x1", "text": "fine"}\nnot json\n{"id": "x2"}\n', encoding="utf-8")
    return tmp_path / "c"


def _lmforge(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_CRASH")}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_done_markers_hold_results_as_json_and_give_them_back_equal():
    acct = Accounting(read=3, kept=1, dropped=Counter(rule=1), malformed=Counter(bad_json=1), examples={"bad_json": ["a.jsonl:2"]})
    result = {"acct": acct, "n": np.int64(7), "f": np.float32(0.5), "arr": np.arange(6, dtype=np.uint64).reshape(2, 3),
              "pairs": [("a", 1)], 3: "int key", "$odd": None}
    back = decode_result(json.loads(json.dumps(encode_result(result))))
    assert back["acct"] == acct and back["n"] == 7 and back["f"] == 0.5 and back[3] == "int key" and back["$odd"] is None
    assert back["pairs"] == [("a", 1)] and back["arr"].dtype == np.uint64 and (back["arr"] == result["arr"]).all()
    with pytest.raises(TypeError, match="set"):
        encode_result({"x": {1, 2}})
    with pytest.raises(PlanError, match="object array"):  # a crafted marker cannot make numpy unpickle
        decode_result({"$ndarray": {"dtype": "|O", "shape": [1], "data": ""}})


def test_run_shard_processes_side_by_side_equal_a_local_run(root, tmp_path, bpe_tokenizer):
    """Two run-shard processes at a time (like an array job), malformed lines accounted with file:line."""
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    common = ["--documents", str(root / "documents"), "--tokenizer", str(tok), "--max-tokens-per-file", "3000"]
    plan = tmp_path / "plan" / "plan.json"
    assert main(["data", "plan", "--out", str(plan), "tokenize", *common, "--out", str(tmp_path / "by-plan")]) == 0
    from lmforge.storage import lock_output, shared_outputs

    with shared_outputs(), lock_output(tmp_path / "by-plan", "a task"):  # while a plan's task runs, a plain run is refused
        r = subprocess.run([sys.executable, "-m", "lmforge", "data", "tokenize", *common, "--out", str(tmp_path / "by-plan")],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and "in use by another lmforge command (the tasks of a plan" in r.stderr, r.stderr
    procs = [_lmforge("data", "run-shard", str(plan), "--index", str(i), cwd=tmp_path) for i in range(5)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    r = subprocess.run([sys.executable, "-m", "lmforge", "data", "status", str(plan.parent)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "next: lmforge data reduce" in r.stdout, r.stdout + r.stderr
    assert f"{root / 'documents' / 'p4.jsonl'}:2" in r.stdout  # the malformed line, by file:line
    assert main(["data", "reduce", str(plan)]) == 0
    assert main(["data", "tokenize", *common, "--out", str(tmp_path / "local"), "--workers", "2", "--no-progress"]) == 0
    skip = lambda rel: rel == "tokenize_summary.json" or rel.startswith("_done")  # noqa: E731
    assert digest_tree(tmp_path / "by-plan", skip=skip) == digest_tree(tmp_path / "local", skip=skip)
    s = json.loads((tmp_path / "by-plan" / "tokenize_summary.json").read_text())
    assert s["accounting"]["balanced"] and s["accounting"]["malformed"] and s["documents"] == 120 + 24 + 1
    assert json.loads((plan.parent / "reduced.json").read_text())["exit"] == 0 and not (plan.parent / "work").exists()


def test_a_task_that_keeps_failing_is_shown_and_stops_reduce_until_fixed(root, tmp_path, capsys):
    tag(str(root / "documents"), ["gopher_quality"], "q", progress=False)
    missing = root / "attributes" / "q" / "p2.jsonl.gz"
    kept = missing.read_bytes()
    missing.unlink()
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(json.dumps({"documents": [str(root / "documents")], "attributes": ["q"], "output": str(tmp_path / "mixed"),
                               "rules": [{"attribute": "q__gopher_quality__word_count", "reduce": "sum", "op": "<", "value": 3, "action": "drop"}]}))
    plan = tmp_path / "mixplan" / "plan.json"
    assert main(["data", "plan", "mix", str(cfg), "--out", str(plan)]) == 0
    for attempt in (1, 2):
        codes = [main(["data", "run-shard", str(plan), "--index", str(i)]) for i in range(5)]
        assert codes == [0, 0, 1, 0, 0]
    err = capsys.readouterr().err
    assert f"step 0 task 2 ({root / 'documents' / 'p2.jsonl.gz'})" in err and "attribute file missing" in err
    capsys.readouterr()
    assert main(["data", "status", str(plan.parent)]) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "FAILED task 2" in out and "p2.jsonl.gz" in out and "(2 attempt(s)" in out
    assert main(["data", "reduce", str(plan)]) == 2  # one line: the step, the task, its file and error
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not finished" in err and "p2.jsonl.gz" in err and "attribute file missing" in err
    assert not (tmp_path / "mixed" / "mix_summary.json").exists()
    missing.write_bytes(kept)  # fixed: the failed task runs again, the others stay done
    assert main(["data", "run-shard", str(plan), "--index", "2"]) == 0
    assert main(["data", "reduce", str(plan)]) == 0
    s = json.loads((tmp_path / "mixed" / "mix_summary.json").read_text())
    assert s["accounting"]["balanced"] and s["accounting"]["read"] == 120 + 24 + 3


def test_a_plan_refuses_changed_inputs_and_a_second_plan_in_its_directory(root, tmp_path, capsys):
    plan = tmp_path / "p" / "plan.json"
    argv = ["tag", "--documents", str(root / "documents"), "--taggers", "gopher_quality", "--experiment", "q"]
    assert main(["data", "plan", "--out", str(plan), *argv]) == 0
    assert main(["data", "plan", "--out", str(plan), *argv]) == 0  # the same plan again: kept
    assert main(["data", "plan", "--out", str(plan), *argv[:-1], "other"]) == 2
    assert "holds another plan" in capsys.readouterr().err
    assert main(["data", "run-shard", str(plan), "--index", "0"]) == 0
    write_documents(root / "documents" / "p9.jsonl.gz", [Document(id="new", text="a new shard")])
    assert main(["data", "run-shard", str(plan), "--index", "1"]) == 2
    assert "inputs changed since this plan was made" in capsys.readouterr().err
    assert main(["data", "status", str(tmp_path / "nowhere")]) == 2
    assert "no plan here" in capsys.readouterr().err
    with pytest.raises(PlanError, match="not an lmforge plan"):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "plan.json").write_text('{"format": "lmforge-plan", "stage": "rm -rf", "argv": []}')
        PlanStore.open(tmp_path / "bad")
