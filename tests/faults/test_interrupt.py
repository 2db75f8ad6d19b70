"""Ctrl-C stops a parallel stage at once: queued shards are cancelled, running ones interrupted
(their temporaries deleted), no worker process outlives the command, and a rerun finishes the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import corpus_lines


def _start(args: list[str], **kw) -> subprocess.Popen:
    """A command in its own process group, as a shell runs it (Ctrl-C signals the whole group)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _interrupt_when(p: subprocess.Popen, ready, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while not ready():
        assert p.poll() is None, p.communicate()[1][-3000:]
        assert time.time() < deadline, "never got going"
        time.sleep(0.05)
    t0 = time.time()
    os.killpg(p.pid, signal.SIGINT)
    p.wait(timeout=60)
    return time.time() - t0


def _group_gone(pgid: int, wait_s: float = 3.0) -> bool:
    """No process of the group is left (multiprocessing's resource tracker may take a moment to see
    its parent's pipe close)."""
    deadline = time.time() + wait_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.time() > deadline:
            left = subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(pgid)], capture_output=True, text=True).stdout
            print(left)
            return False
        time.sleep(0.1)


def test_worker_pool_stops_at_once(tmp_path):
    """20 shards of 2 s on 2 workers: 20 s of work, interrupted after the first shard."""
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from lmforge.corpus.parallel import run_parallel
        from tests.faults._harness import slow_task
        tasks = [{{"out": {str(out)!r}, "i": i, "seconds": 2.0}} for i in range(20)]
        try:
            run_parallel(slow_task, tasks, workers=2, progress=False)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    p = _start([sys.executable, "-c", script])
    took = _interrupt_when(p, lambda: any(out.glob("*.done")))
    assert p.returncode == 130
    assert took < 4.0, f"took {took:.1f}s to stop"
    done = list(out.glob("*.done"))
    assert 1 <= len(done) <= 4
    assert not list(out.glob(".*.partial")), "an interrupted shard left its temporary file"
    assert _group_gone(p.pid), "a worker outlived the command"


@pytest.mark.slow
def test_tokenize_ctrl_c_stops_at_once_and_reruns(tmp_path, bpe_tokenizer):
    docs = tmp_path / "documents"
    docs.mkdir()
    lines = corpus_lines(3000, seed=4)
    for s in range(16):  # ~3 MB per shard: a few seconds of work in all after the interrupt
        with open(docs / f"s{s:02d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(900):
                f.write(json.dumps({"id": f"{s}-{i}", "text": "\n".join(lines[(i * 7 + s) % 2900 : (i * 7 + s) % 2900 + 40])}) + "\n")
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    out = tmp_path / "tokens"
    args = [sys.executable, "-m", "lmforge", "data", "tokenize", "--documents", str(docs), "--tokenizer", str(tok), "--out", str(out), "--workers", "2"]
    p = _start(args)
    took = _interrupt_when(p, lambda: len(list((out / "_done").glob("*.json"))) >= 1 if (out / "_done").is_dir() else False)
    err = p.stderr.read()
    assert p.returncode == 130, err[-2000:]
    assert "lmforge: interrupted" in err
    assert took < 4.0, f"took {took:.1f}s to stop"
    assert len(list((out / "_done").glob("*.json"))) < 16
    assert not [q for q in out.rglob(".*.tmp")], "temporaries left behind"
    assert _group_gone(p.pid)
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "tokenize_summary.json").read_text())
    assert summary["documents"] == 16 * 900 and summary["shards_skipped"] >= 1
