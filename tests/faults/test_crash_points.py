"""SIGKILL at the points where a crash could lose or corrupt data, then a rerun: the same outputs as
an undisturbed run, and no temporary file left behind.

Each command runs once undisturbed with ``LMFORGE_CRASH_LOG`` (every publishing step of
``lmforge.storage`` and of checkpoints and releases is a crash point: before and after each rename);
then, for a seeded sample of those points, it runs again and kills itself there with SIGKILL
(``LMFORGE_CRASH_AT=N``), and a plain rerun must give outputs equal to the undisturbed run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.data.documents import Document, write_documents
from tests.conftest import corpus_lines
from tests.faults._harness import check_crash_and_rerun, digest_tree, fresh, lmforge, write_yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bpe_tokenizer):
    """ROOT/documents/{a,b,c}.jsonl.gz with repeated documents and paragraphs, and a tokenizer."""
    root = tmp_path_factory.mktemp("fault_corpus")
    lines = corpus_lines(900, seed=5)
    docs = [Document(id=f"d{i}", text="\n".join(lines[i * 6 : i * 6 + 6]), source="web" if i % 2 else "books") for i in range(150)]
    docs += [Document(id=f"copy{i}", text=docs[i].text, source="web") for i in range(0, 150, 7)]  # exact duplicates
    for name, part in (("a", docs[:60]), ("b", docs[60:120]), ("c", docs[120:])):
        write_documents(root / "documents" / f"{name}.jsonl.gz", part)
    tok = root / "tokenizer.json"
    bpe_tokenizer.save(tok)
    return {"root": root, "tokenizer": tok}


def test_tokenize_killed_anywhere_reruns_to_the_same_files(tmp_path, corpus):
    out = tmp_path / "tokens"

    def run(**kw):
        return lmforge("data", "tokenize", "--documents", corpus["root"] / "documents", "--tokenizer", corpus["tokenizer"],
                       "--out", out, "--workers", "1", "--max-document-chars", "400", **kw)

    r = check_crash_and_rerun(tmp_path, run, lambda: digest_tree(out), lambda: fresh(out), k=2, seed=1)
    assert r["points"] >= 10
    summary = json.loads((out / "tokenize_summary.json").read_text())
    acct = summary["accounting"]
    assert acct["balanced"] and acct["dropped"]  # the document-size limit counts what it drops


def test_dedup_killed_anywhere_reruns_to_the_same_attributes(tmp_path, corpus):
    attrs = corpus["root"] / "attributes" / "fault_dup"

    def run(**kw):
        return lmforge("data", "dedup", "--documents", corpus["root"] / "documents", "--mode", "paragraphs", "--name", "fault_dup", **kw)

    check_crash_and_rerun(tmp_path, run, lambda: digest_tree(attrs), lambda: fresh(attrs), k=2, seed=2)


def test_mix_killed_anywhere_reruns_to_the_same_documents(tmp_path, corpus):
    r = lmforge("data", "dedup", "--documents", corpus["root"] / "documents", "--mode", "documents", "--name", "fault_docdup")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "mixed"
    cfg = write_yaml(tmp_path / "mix.yaml", {
        "documents": [str(corpus["root"] / "documents")],
        "attributes": ["fault_docdup"],
        "output": str(out),
        "rules": [{"attribute": "fault_docdup", "reduce": "count", "op": ">", "value": 0, "action": "drop", "name": "duplicate"}],
        "sampling": {"web": 0.5},
        "max_shard_bytes": 20000,
        "workers": 1,
    })  # fmt: skip

    def run(**kw):
        return lmforge("data", "mix", cfg, **kw)

    r = check_crash_and_rerun(tmp_path, run, lambda: digest_tree(out), lambda: fresh(out), k=2, seed=3)
    assert r["points"] >= 8
    summary = json.loads((out / "mix_summary.json").read_text())
    assert summary["accounting"]["balanced"] and summary["accounting"]["dropped"]


# --- training and release -------------------------------------------------------------------------
def _train_outputs(run: Path) -> dict[str, object]:
    """What a run must reproduce: every checkpoint's files (weights, optimizer shards, state) and the
    per-step losses and grad norms."""
    ckpts = digest_tree(run / "checkpoints", skip=lambda rel: rel.endswith(".metadata"))  # DCP's metadata pickles a fresh uuid
    metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [(m["step"], m["loss"], m["grad_norm"]) for m in metrics if "loss" in m]
    return {"checkpoints": ckpts, "curve": curve}


def test_train_killed_at_any_checkpoint_step_resumes_to_the_same_run(tmp_path, token_dirs):
    from tests.train.conftest import write_run_config

    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run, trainer={"max_steps": 6}, schedule={"total_steps": 6}, checkpoint={"every": 2, "keep_last": 2})

    def start(**kw):
        return lmforge("train", cfg, **kw)

    r = check_crash_and_rerun(tmp_path, start, lambda: _train_outputs(run), lambda: fresh(run), k=2, seed=4,
                              rerun=lambda: lmforge("train", cfg, "--resume"))
    assert any("checkpoint" in t or "safetensors" in t or "COMPLETE" in t for t in r["tried"]) or r["points"] > 0


def test_release_killed_anywhere_reruns_to_the_same_revisions(tmp_path, token_dirs):
    import subprocess

    from tests.train.conftest import write_run_config

    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run, trainer={"max_steps": 4}, schedule={"total_steps": 4}, checkpoint={"every": 2, "keep_last": 3})
    assert lmforge("train", cfg).returncode == 0
    repo = tmp_path / "release"

    def trees() -> dict[str, str]:
        refs = subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads"],
                              capture_output=True, text=True, check=True).stdout.split("\n")
        out = {}
        for line in filter(None, refs):
            name, commit = line.split()
            out[name] = subprocess.run(["git", "-C", str(repo), "rev-parse", f"{commit}^{{tree}}"], capture_output=True, text=True,
                                       check=True).stdout.strip()
        return out

    def release(**kw):
        return lmforge("release", run, "--repo", repo, **kw)

    r = check_crash_and_rerun(tmp_path, release, trees, lambda: fresh(repo), k=2, seed=5)
    assert r["points"] >= 3
    assert set(trees()) == {"main", "step2-tokens1024", "step4-tokens2048"}
