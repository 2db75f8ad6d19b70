"""lmforge.stages.StageRunner: markers, skip, redo on changed settings or inputs, resume, typed summaries."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lmforge.formatting import format_seconds
from lmforge.stages import StageRunner, settings_hash


@dataclasses.dataclass
class Count:
    n: int
    where: str


def _pipeline(tmp_path, calls: list[str], settings: dict, log: list[str] | None = None):
    """Two stages: ``make`` writes a file and returns a Count; ``use`` reads it."""
    runner = StageRunner(tmp_path / "stages", ["make", "use"], say=(log.append if log is not None else lambda m: None))
    out = tmp_path / "made"

    def make() -> Count:
        calls.append("make")
        out.mkdir(exist_ok=True)
        (out / "data.txt").write_text("x" * settings["n"])
        return Count(n=settings["n"], where=str(out))

    made = runner.run("make", "write n bytes", make, settings=settings, outputs=[out], describe=lambda c: f"{c.n} bytes", summary_type=Count)

    def use() -> dict:
        calls.append("use")
        return {"read": len((out / "data.txt").read_text()), "from": made.where}

    used = runner.run("use", "read them", use, deps=("make",), describe=lambda d: f"read {d['read']}")
    return runner, made, used


def test_runs_in_order_then_skips_with_typed_summaries(tmp_path):
    calls, log = [], []
    runner, made, used = _pipeline(tmp_path, calls, {"n": 3}, log)
    assert calls == ["make", "use"] and made == Count(3, str(tmp_path / "made")) and used["read"] == 3
    assert log[0] == "[1/2] make: write n bytes" and log[1].startswith("      done in ") and log[1].endswith(": 3 bytes")
    marker = json.loads((tmp_path / "stages" / "01-make.json").read_text())
    assert marker["status"] == "done" and marker["summary"] == {"n": 3, "where": str(tmp_path / "made")} and marker["settings"] == {"n": 3}
    assert json.loads((tmp_path / "stages" / "02-use.json").read_text())["inputs"] == {"make": marker["id"]}
    assert runner.ran == {"make": True, "use": True}

    calls, log = [], []
    runner, made2, used2 = _pipeline(tmp_path, calls, {"n": 3}, log)
    assert calls == [] and made2 == made and isinstance(made2, Count) and used2 == used
    assert runner.ran == {"make": False, "use": False} and "finished earlier" in log[1] and log[1].endswith("skipped: 3 bytes")
    assert runner.seconds("make") == marker["seconds"]


def test_changed_settings_redo_the_stage_and_those_after_it(tmp_path):
    _pipeline(tmp_path, [], {"n": 3})
    (tmp_path / "made" / "stale.txt").write_text("old")
    calls = []
    _, made, used = _pipeline(tmp_path, calls, {"n": 5})
    assert calls == ["make", "use"] and used["read"] == 5
    assert not (tmp_path / "made" / "stale.txt").exists()  # outputs deleted before a fresh run


def test_missing_outputs_or_marker_redo_the_stage(tmp_path):
    _pipeline(tmp_path, [], {"n": 3})
    (tmp_path / "stages" / "02-use.json").unlink()
    calls = []
    _pipeline(tmp_path, calls, {"n": 3})
    assert calls == ["use"]
    (tmp_path / "made" / "data.txt").unlink()
    (tmp_path / "made").rmdir()
    calls = []
    _pipeline(tmp_path, calls, {"n": 3})
    assert calls == ["make", "use"]  # make's output is gone; use reads from a new make (new id)


def test_an_interrupted_stage_resumes_with_its_outputs(tmp_path):
    _pipeline(tmp_path, [], {"n": 3})
    path = tmp_path / "stages" / "01-make.json"
    marker = json.loads(path.read_text())
    path.write_text(json.dumps({"stage": "make", "status": "running", "key": marker["key"], "settings": marker["settings"]}))
    (tmp_path / "made" / "partial.txt").write_text("kept")
    calls, log = [], []
    _pipeline(tmp_path, calls, {"n": 3}, log)
    assert calls == ["make", "use"] and (tmp_path / "made" / "partial.txt").exists()
    assert "      resuming an interrupted run of this stage" in log


def test_a_summary_that_no_longer_fits_its_type_is_redone(tmp_path):
    _pipeline(tmp_path, [], {"n": 3})
    path = tmp_path / "stages" / "01-make.json"
    marker = json.loads(path.read_text())
    marker["summary"] = {"count": 3}  # written by another version
    path.write_text(json.dumps(marker))
    calls = []
    _pipeline(tmp_path, calls, {"n": 3})
    assert calls[0] == "make"


def test_names_and_dependencies_are_checked(tmp_path):
    with pytest.raises(ValueError):
        StageRunner(tmp_path, ["a", "a"])
    runner = StageRunner(tmp_path, ["a", "b"], say=lambda m: None)
    with pytest.raises(KeyError):
        runner.run("c", "", lambda: {})
    with pytest.raises(RuntimeError, match="reads from a"):
        runner.run("b", "", lambda: {}, deps=("a",))


def test_format_seconds_and_settings_hash():
    assert format_seconds(5.04) == "5.0s" and format_seconds(125) == "2m05s"
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1}) != settings_hash({"a": 2, "b": [1, 2]})
