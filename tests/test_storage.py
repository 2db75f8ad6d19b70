"""``atomic_directory``: a directory appears whole under its final name, or not at all."""

import os
import stat

import pytest

from lmforge.storage import atomic_directory, umask


def test_atomic_directory_publishes_whole(tmp_path):
    out = tmp_path / "sub" / "model"
    with atomic_directory(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".model.tmp-") and not out.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "d").mkdir()
        (tmp / "d" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a" and (out / "d" / "b.txt").read_text() == "b"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~umask()  # not mkdtemp's 0700
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]


def test_atomic_directory_failure_leaves_nothing_and_keeps_the_old(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (out / "old.txt").is_file()
    with pytest.raises(OSError), atomic_directory(out) as tmp:  # not empty, not replace: refused at the rename
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (out / "old.txt").is_file()
    with atomic_directory(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_directory_replaces_an_empty_one(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "x").write_text("x")
    assert (out / "x").read_text() == "x"
