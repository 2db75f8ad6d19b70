"""Durability, read off the system calls: every file published under its final name was fsynced
before the rename and its directory after it, so a completion marker (published the same way,
later) never vouches for data that a power loss could take back. And the markers check content:
a token file changed in place (same size) is redone on rerun.

The traces come from ``strace -f`` around real commands (skipped where strace is missing)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.documents import Document, write_documents
from tests.conftest import corpus_lines, run_tokenize

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed")

_OPEN = re.compile(r'^(\d+)\s+openat\(AT_FDCWD, "([^"]+)", ([^)]*)\) = (\d+)')
_FSYNC = re.compile(r"^(\d+)\s+f(?:data)?sync\((\d+)\)\s+= 0")
_CLOSE = re.compile(r"^(\d+)\s+close\((\d+)\)")
_RENAME = re.compile(r'^(\d+)\s+rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"')


def _traced(args: list[str], log: Path, cwd: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [STRACE, "-f", "-qq", "-s", "4096", "-e", "trace=openat,close,fsync,fdatasync,rename,renameat,renameat2", "-o", str(log), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _check_publishes(log: Path, cwd: Path, final: re.Pattern) -> list[str]:
    """For every rename whose target matches ``final``: the source file was fsynced (through a
    descriptor opened on it) before the rename, and the target's directory was fsynced after it,
    before the next publish. Returns the targets checked."""
    fds: dict[tuple[str, str], str] = {}
    synced_files: set[str] = set()
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if m := _OPEN.match(line):
            pid, path, _, fd = m.groups()
            fds[(pid, fd)] = os.path.normpath(os.path.join(cwd, path))
        elif m := _FSYNC.match(line):
            pid, fd = m.groups()
            path = fds.get((pid, fd))
            if path:
                synced_files.add(path)
                events.append(("fsync", path))
        elif m := _CLOSE.match(line):
            fds.pop(m.groups(), None)
        elif m := _RENAME.match(line):
            src, dst = (os.path.normpath(os.path.join(cwd, p)) for p in m.groups()[1:])
            events.append(("rename", src, dst, src in synced_files))
    checked = []
    for i, ev in enumerate(events):
        if ev[0] != "rename" or not final.search(ev[2]) or os.path.basename(ev[2]).startswith("."):
            continue  # (a rename to a hidden name is a step inside a writer, e.g. safetensors' own temp file)
        _, src, dst, src_synced = ev
        assert src_synced, f"{dst}: renamed into place from {src} without an fsync of the file first"
        parent = os.path.dirname(dst)
        later = [e for e in events[i + 1 :] if e[0] == "fsync" and e[1] == parent]
        assert later, f"{dst}: its directory {parent} was never fsynced after the rename"
        checked.append(os.path.basename(dst))
    return checked


def _docs(root: Path) -> Path:
    lines = corpus_lines(300, seed=9)
    for name in ("a", "b"):
        write_documents(root / "documents" / f"{name}.jsonl.gz",
                        [Document(id=f"{name}{i}", text="\n".join(lines[i * 3 : i * 3 + 3]), source="s") for i in range(50)])
    return root / "documents"


@needs_strace
def test_token_files_and_markers_are_durable_before_they_count(tmp_path, bpe_tokenizer):
    docs = _docs(tmp_path)
    bpe_tokenizer.save(tmp_path / "tok.json")
    log = tmp_path / "trace"
    _traced([sys.executable, "-m", "lmforge", "data", "tokenize", "--documents", str(docs), "--tokenizer", "tok.json", "--out", "out"], log, tmp_path)
    checked = _check_publishes(log, tmp_path, re.compile(r"/out/"))
    assert {"part-00000-00000.npy", "part-00000-00000.csv.gz", "part-00000.json", "part-00001-00000.npy", "tokenize_summary.json"} <= set(checked)


@needs_strace
def test_attribute_files_are_durable(tmp_path):
    docs = _docs(tmp_path)
    log = tmp_path / "trace"
    _traced([sys.executable, "-m", "lmforge", "data", "dedup", "--documents", str(docs), "--mode", "paragraphs", "--name", "dups"], log, tmp_path)
    checked = _check_publishes(log, tmp_path, re.compile(r"/attributes/dups/"))
    assert {"a.jsonl.gz", "b.jsonl.gz", "_summary.json"} <= set(checked)


@needs_strace
def test_checkpoint_files_are_durable_before_complete(tmp_path, token_dirs):
    from tests.train.conftest import write_run_config

    cfg = write_run_config(token_dirs, tmp_path / "run", trainer={"max_steps": 2}, schedule={"total_steps": 2}, checkpoint={"every": 2})
    log = tmp_path / "trace"
    _traced([sys.executable, "-m", "lmforge", "train", str(cfg)], log, tmp_path)
    checked = _check_publishes(log, tmp_path, re.compile(r"/checkpoints/"))
    # every file of the checkpoint, then the checkpoint directory itself (its parent fsynced after)
    assert {"model.safetensors", "extra.safetensors", "extra.json", "optim_groups.json", "COMPLETE", "step0000002"} <= set(checked)


def test_tokenize_rerun_checks_content_not_just_sizes(tmp_path, bpe_tokenizer):
    docs = _docs(tmp_path)
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    out = tmp_path / "out"
    first = run_tokenize([str(docs)], str(tok), str(out))
    npy = out / "part-00001-00000.npy"
    good = npy.read_bytes()
    damaged = bytearray(good)
    damaged[10] ^= 0xFF  # same size, other content (what a lost write can look like)
    npy.write_bytes(bytes(damaged))
    again = run_tokenize([str(docs)], str(tok), str(out))
    assert again["shards_skipped"] == 1  # shard 0 is intact; shard 1 is redone
    assert npy.read_bytes() == good
    assert [f["npy_sha256"] for f in again["files"]] == [f["npy_sha256"] for f in first["files"]]
    assert np.array_equal(np.fromfile(npy, dtype=np.uint16), np.frombuffer(good, dtype=np.uint16))
