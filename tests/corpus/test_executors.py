"""Every data stage on every executor gives the same bytes: the local pool with 1 and 2 workers and a
real Ray cluster of two simulated nodes (``ray.cluster_utils.Cluster``, bound to 127.0.0.1) write
byte-identical outputs for tag, dedup (each mode, exact and through a Bloom filter), mix and
tokenize, and the accounting adds up; a Ray worker killed in the middle of a shard is retried and
changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.corpus.dedup import DedupConfig, dedup
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.corpus.mixer import MixerConfig, mix
from lmforge.corpus.taggers import tag
from lmforge.corpus.tokenize import TokenizeConfig, tokenize
from lmforge.data.documents import Document, write_documents
from tests.conftest import corpus_lines
from tests.faults._harness import digest_tree

ray = pytest.importorskip("ray", reason="the Ray executor needs Ray (pip install 'lmforge[ray]')")
pytestmark = [pytest.mark.required_in_ci, pytest.mark.slow]


def _start_cluster(env: dict[str, str] | None = None):
    """Two simulated nodes on 127.0.0.1, one CPU each; ``env`` goes to their worker processes."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return cluster


@pytest.fixture(scope="module")
def cluster():
    c = _start_cluster()
    try:
        ray.init(address=c.address, log_to_driver=False, include_dashboard=False)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        ray.shutdown()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("exec_corpus")
    lines = corpus_lines(1200, seed=8)
    docs = [Document(id=f"d{i}", text="\n".join(lines[i * 5 : i * 5 + 5]), source="web" if i % 3 else "books") for i in range(200)]
    docs += [Document(id=f"copy{i}", text=docs[i].text, source="web") for i in range(0, 200, 9)]
    docs += [Document(id=f"near{i}", text=docs[i].text + "\nand one more line", source="web") for i in range(0, 200, 13)]
    for k in range(4):
        write_documents(root / "documents" / f"part{k}.jsonl.gz", docs[k::4])
    tok = root / "tokenizer.json"
    bpe_tokenizer.save(tok)
    return {"root": root, "tokenizer": tok}


EXECUTORS = {
    "local-1": (1, None),
    "local-2": (2, None),
    "ray": (2, "ray"),
}


def _executor(kind: str, cluster) -> tuple[int, ExecutorConfig | None]:
    workers, which = EXECUTORS[kind]
    if which is None:
        return workers, None
    return workers, ExecutorConfig(executor="ray", ray_address=cluster.address)


def _copy_documents(corpus, dst: Path) -> Path:
    import shutil

    shutil.copytree(corpus["root"] / "documents", dst / "documents")
    return dst


def _mixer(root: Path, workers: int) -> MixerConfig:
    return MixerConfig.from_dict({
        "documents": [str(root / "documents")], "attributes": ["q", "dd_documents", "dd_paragraphs"], "output": str(root / "mixed"),
        "rules": [{"attribute": "dd_documents", "reduce": "count", "op": ">", "value": 0, "action": "drop"}],
        "span_edits": [{"attribute": "dd_paragraphs", "replacement": ""}], "sampling": {"books": 0.5}, "workers": workers,
    })  # fmt: skip


DEDUP_RUNS = [(mode, ["--mode", mode, "--name", f"dd_{mode}", "--buckets", "3"]) for mode in ("documents", "paragraphs", "ngrams", "minhash")]


def _all_stages(root: Path, corpus, workers: int, ex: ExecutorConfig | None) -> None:
    """tag, dedup (every mode, exact and through a Bloom filter), mix, tokenize: the Python API."""
    acct = tag(str(root / "documents"), ["gopher_quality", "pii"], "q", workers=workers, progress=False, executor=ex)
    assert acct.balanced and acct.read == acct.kept
    for mode in ("documents", "paragraphs", "ngrams", "minhash"):
        cfg = DedupConfig(documents=[str(root / "documents")], mode=mode, name=f"dd_{mode}", workers=workers, buckets=3)
        acct = dedup(cfg, progress=False, executor=ex)
        assert acct.balanced
    bloom = DedupConfig(documents=[str(root / "documents")], mode="paragraphs", name="dd_bloom", workers=workers,
                        bloom_path=str(root / "filter.bin"), expected_items=50_000)
    dedup(bloom, progress=False, executor=ex)
    summary = mix(_mixer(root, workers), progress=False, executor=ex)
    assert summary["accounting"]["balanced"] and summary["accounting"]["dropped"]
    t = tokenize(TokenizeConfig(documents=[str(root / "mixed" / "documents")], tokenizer=str(corpus["tokenizer"]),
                                out=str(root / "tokens"), workers=workers), progress=False, executor=ex)
    assert t["accounting"]["balanced"]


def run_plan(plan: Path, stage_argv: list[str], *, reverse: bool = False) -> int:
    """``lmforge data plan``, then every step's tasks with ``run-shard`` (as an array job would: in
    any order), then ``reduce``; returns how many tasks ran."""
    from lmforge.cli import main

    assert main(["data", "plan", "--out", str(plan), *stage_argv]) == 0
    ran = 0
    for _ in range(10):
        from lmforge.cli.data_plan import status
        from lmforge.corpus.plan import PlanStore

        n = status(PlanStore.open(plan))["current_tasks"]
        if n == 0:
            break
        for i in sorted(range(n), reverse=reverse):
            assert main(["data", "run-shard", str(plan), "--index", str(i)]) == 0
            ran += 1
    assert main(["data", "reduce", str(plan)]) == 0
    return ran


def _all_stages_by_plans(root: Path, corpus, plans: Path) -> None:
    """The same stages, each planned and run task by task (``lmforge data plan / run-shard / reduce``)."""
    docs = str(root / "documents")
    run_plan(plans / "tag" / "plan.json", ["tag", "--documents", docs, "--taggers", "gopher_quality", "pii", "--experiment", "q"], reverse=True)
    for mode, argv in DEDUP_RUNS:
        run_plan(plans / f"dedup-{mode}" / "plan.json", ["dedup", "--documents", docs, *argv], reverse=True)
    run_plan(plans / "bloom" / "plan.json", ["dedup", "--documents", docs, "--mode", "paragraphs", "--name", "dd_bloom",
                                             "--bloom-path", str(root / "filter.bin"), "--expected-items", "50000"])
    cfg = plans / "mix.yaml"
    _mixer(root, 1).save(cfg)
    run_plan(plans / "mix" / "plan.json", ["mix", str(cfg)])
    run_plan(plans / "tokenize" / "plan.json", ["tokenize", "--documents", str(root / "mixed" / "documents"),
                                                                          "--tokenizer", str(corpus["tokenizer"]), "--out", str(root / "tokens")])


def test_every_stage_gives_the_same_bytes_on_every_executor(tmp_path, corpus, cluster):
    """The same directory each time (outputs name their own paths), emptied between executors:
    local with 1 and 2 workers, Ray on two nodes, and plans run task by task."""
    import shutil

    digests = {}
    root = tmp_path / "work"
    for kind in [*EXECUTORS, "run-shard"]:
        shutil.rmtree(root, ignore_errors=True)
        _copy_documents(corpus, root)
        if kind == "run-shard":
            shutil.rmtree(tmp_path / "plans", ignore_errors=True)
            _all_stages_by_plans(root, corpus, tmp_path / "plans")
        else:
            _all_stages(root, corpus, *_executor(kind, cluster))
        # (done-markers record their inputs' modification times, which every run makes anew; the mixer's
        # saved config records the number of workers)
        digests[kind] = digest_tree(root, skip=lambda rel: "/_shards/" in rel or "/_done/" in rel or rel.endswith("mix_config.yaml"))
    assert digests["local-1"] == digests["local-2"] == digests["ray"] == digests["run-shard"]
    assert any(k.startswith("attributes/dd_minhash/") for k in digests["ray"]) and "filter.bin" in digests["ray"]


def test_exact_dedup_is_the_same_for_any_number_of_buckets(tmp_path, corpus):
    """And equal to the Bloom filter's marks (at this size its false-positive rate is ~1e-9)."""
    root = _copy_documents(corpus, tmp_path)
    found = {}
    for mode in ("documents", "paragraphs", "ngrams"):
        for buckets in (1, 2, 7, "bloom"):
            name = f"{mode}-{buckets}"
            extra = {"bloom_path": str(tmp_path / f"{name}.bin"), "fp_rate": 1e-9} if buckets == "bloom" else {"buckets": buckets}
            dedup(DedupConfig(documents=[str(root / "documents")], mode=mode, name=name, attribute_name="dup", **extra), progress=False)
            found[buckets] = digest_tree(root / "attributes" / name, skip=lambda r: r.endswith("_summary.json"))
        assert found[1] == found[2] == found[7] == found["bloom"], mode
        assert any(v for v in found[1].values())


def test_a_ray_worker_killed_in_a_shard_is_retried_and_changes_nothing(tmp_path, corpus):
    """A cluster whose workers die at their first publishing step, once (the first worker to get there
    is SIGKILLed, the retry is not): tokenize on it equals tokenize on the local pool."""
    token = tmp_path / "killed-once"
    c = _start_cluster({"LMFORGE_CRASH_AT": "1", "LMFORGE_CRASH_ONCE": str(token)})
    try:
        docs = str(corpus["root"] / "documents")
        out_ray, out_local = tmp_path / "ray", tmp_path / "local"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_CRASH")}
        cmd = [sys.executable, "-m", "lmforge", "data", "tokenize", "--documents", docs, "--tokenizer", str(corpus["tokenizer"]), "--no-progress"]
        r = subprocess.run([*cmd, "--out", str(out_ray), "--executor", "ray", "--ray-address", c.address], capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert token.exists(), "no worker was killed"
        r = subprocess.run([*cmd, "--out", str(out_local)], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        skip = lambda rel: rel == "tokenize_summary.json" or rel.startswith("_done")  # noqa: E731 - they name their directory
        assert digest_tree(out_ray, skip=skip) == digest_tree(out_local, skip=skip)
        assert not list(out_ray.rglob(".*.tmp"))
    finally:
        c.shutdown()


def test_a_driver_killed_mid_stage_resumes_from_the_done_markers(tmp_path, corpus, cluster):
    """``lmforge data tokenize --executor ray`` SIGKILLed once two shards are done: the rerun keeps
    those two (their markers and files untouched), does the rest, and equals an undisturbed run."""
    docs = str(corpus["root"] / "documents")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_CRASH")}
    cmd = [sys.executable, "-m", "lmforge", "data", "tokenize", "--documents", docs, "--tokenizer", str(corpus["tokenizer"]), "--no-progress",
           "--executor", "ray", "--ray-address", cluster.address]
    out = tmp_path / "killed"
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env={**env, "LMFORGE_KILL_DRIVER_AFTER": "2"}, timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]
    markers = sorted((out / "_done").glob("*.json"))
    assert len(markers) >= 2 and not (out / "tokenize_summary.json").exists()
    before = {m.name: m.stat().st_mtime_ns for m in markers}
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = __import__("json").loads((out / "tokenize_summary.json").read_text())
    assert s["shards_skipped"] >= 2 and s["accounting"]["balanced"]
    assert all((out / "_done" / name).stat().st_mtime_ns == t for name, t in before.items())  # not redone
    r = subprocess.run([*cmd, "--out", str(tmp_path / "whole")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    skip = lambda rel: rel == "tokenize_summary.json" or rel.startswith("_done")  # noqa: E731
    assert digest_tree(out, skip=skip) == digest_tree(tmp_path / "whole", skip=skip)


def test_a_task_that_raises_ends_the_stage_naming_its_file(tmp_path, cluster):
    bad = tmp_path / "documents" / "bad.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"id": "a", "text": "hello"}\n')
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.raises(Exception) as e:
        run_tasks(_raises, [str(bad)], executor=ExecutorConfig(executor="ray", ray_address=cluster.address), progress=False,
                  describe=lambda t: t)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def _raises(path: str):  # pickled by value: the workers do not import the tests
    from lmforge.data.documents import DataError

    raise DataError(f"{path}: cannot be processed")


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    from lmforge.config import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install \"lmforge\[ray\]\""):
        run_tasks(str, ["x"], executor=ExecutorConfig(executor="ray"), progress=False)
