"""Resumable stages: run a fixed list of named steps in order, record each, skip what is done.

    runner = StageRunner("runs/x/stages", ["fetch", "train"])
    corpus = runner.run("fetch", "the corpus", fetch, settings={"recipe": r}, outputs=[out / "corpus"],
                        describe=lambda s: f"{s.documents} documents", summary_type=FetchSummary)
    model = runner.run("train", "the model", train, settings=train_settings, deps=("fetch",), outputs=[run_dir],
                       summary_type=TrainSummary)

A finished stage leaves a marker ``DIR/NN-name.json`` (written atomically after the stage returned):
its status, a key (a hash of the stage's name, its settings and the ids of the stages it reads from),
a fresh id, the seconds it took and its summary. On the next run a stage is

* **skipped** when its marker says done with the same key and its outputs are intact (the summary is
  read back from the marker, into ``summary_type`` when one is given);
* **redone from scratch** when its settings or inputs changed or it has no marker: its ``outputs``
  are deleted first, and every stage that reads from it gets a new key too (its id changed);
* **resumed** when its marker says running with the same key (an interrupted run): the outputs are
  kept, and the stage's own building blocks continue where they can.

A summary is a JSON-able dict or a dataclass (written with ``dataclasses.asdict``, or its
``to_json()`` when it has one; read back with the type's ``from_json(dict)`` when it has one, else
``summary_type(**fields)``). A marker whose summary no longer fits the type is treated as missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from lmforge.config import atomic_write_text
from lmforge.formatting import format_seconds

__all__ = ["StageRunner", "remove_path", "settings_hash"]

S = TypeVar("S")


def settings_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able value (keys sorted; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def remove_path(path: Path) -> None:
    """Delete a file, a link or a directory tree; nothing when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def summary_to_json(summary: Any) -> Any:
    if hasattr(summary, "to_json"):
        return summary.to_json()
    if dataclasses.is_dataclass(summary) and not isinstance(summary, type):
        return dataclasses.asdict(summary)
    return summary


def summary_from_json(data: Any, summary_type: type[S] | None) -> S:
    """``data`` (a marker's summary) as ``summary_type``; TypeError/KeyError/ValueError when it does not fit."""
    if summary_type is None:
        return data
    if hasattr(summary_type, "from_json"):
        return summary_type.from_json(data)
    if not isinstance(data, dict):
        raise TypeError(f"a {summary_type.__name__} summary must be a mapping")
    return summary_type(**data)


class StageRunner:
    """Runs named stages in the order of ``names``, one marker file each under ``directory``.

    ``say``: where the stage log goes (default: print, flushed). ``verbose``: also say when an
    interrupted stage is resumed. After a run, ``ids``, ``markers``, ``summaries`` (as returned)
    and ``ran`` (False: skipped this time) hold what happened, by stage name."""

    def __init__(self, directory: str | Path, names: Sequence[str], *, say: Callable[[str], None] | None = None, verbose: bool = True):
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {list(names)}")
        self.dir = Path(directory)
        self.names = tuple(names)
        self.verbose = verbose
        self._say = say
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, str] = {}
        self.markers: dict[str, dict[str, Any]] = {}
        self.summaries: dict[str, Any] = {}
        self.ran: dict[str, bool] = {}

    def say(self, msg: str) -> None:
        if self._say is not None:
            self._say(msg)
        else:
            print(msg, flush=True)

    def index(self, name: str) -> int:
        """1-based position of stage ``name``."""
        if name not in self.names:
            raise KeyError(f"unknown stage {name!r} (stages: {', '.join(self.names)})")
        return self.names.index(name) + 1

    def marker_path(self, name: str) -> Path:
        return self.dir / f"{self.index(name):02d}-{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        """The marker of stage ``name``, or None (none, or unreadable)."""
        p = self.marker_path(name)
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def key(self, name: str, settings: Any, deps: Sequence[str]) -> str:
        missing = [d for d in deps if d not in self.ids]
        if missing:
            raise RuntimeError(f"stage {name!r} reads from {', '.join(missing)}, which did not run before it")
        return settings_hash({"stage": name, "settings": settings, "inputs": {d: self.ids[d] for d in deps}})

    def run(
        self,
        name: str,
        title: str,
        fn: Callable[[], S],
        *,
        settings: Any = None,
        deps: Sequence[str] = (),
        outputs: Sequence[Path] = (),
        describe: Callable[[S], str] = str,
        intact: Callable[[], bool] | None = None,
        summary_type: type[S] | None = None,
    ) -> S:
        """Run stage ``name`` (``fn()``, which returns its summary) unless it finished with the same
        ``settings`` and inputs (the stages ``deps``) and ``intact()`` (default: every path of
        ``outputs`` exists); return its summary. ``outputs`` are deleted before a fresh (not
        resumed) run. ``describe(summary)``: the one line logged after it."""
        i = self.index(name)
        key = self.key(name, settings, deps)
        old = self.read(name)
        self.say(f"[{i}/{len(self.names)}] {name}: {title}")
        check = intact or (lambda: all(Path(p).exists() for p in outputs))
        if old and old.get("status") == "done" and old.get("key") == key and check():
            try:
                summary = summary_from_json(old["summary"], summary_type)
            except (TypeError, KeyError, ValueError):
                summary = None  # recorded by another version of the stage: redo it
            if summary is not None:
                self.ids[name], self.markers[name], self.summaries[name], self.ran[name] = old["id"], old, summary, False
                self.say(f"      finished earlier ({format_seconds(old['seconds'])}), skipped: {describe(summary)}")
                return summary
        if not (old and old.get("status") == "running" and old.get("key") == key):
            for p in outputs:  # changed settings or inputs (or no record of them): start clean
                remove_path(Path(p))
        elif self.verbose:
            self.say("      resuming an interrupted run of this stage")
        path = self.marker_path(name)
        atomic_write_text(path, json.dumps({"stage": name, "status": "running", "key": key, "settings": settings}, indent=1, default=str))
        t0 = time.perf_counter()
        summary = fn()
        seconds = time.perf_counter() - t0
        marker = {
            "stage": name, "status": "done", "key": key, "id": uuid.uuid4().hex, "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "inputs": {d: self.ids[d] for d in deps},
            "summary": summary_to_json(summary),
        }
        atomic_write_text(path, json.dumps(marker, indent=1, ensure_ascii=False, default=str) + "\n")
        self.ids[name], self.markers[name], self.summaries[name], self.ran[name] = marker["id"], marker, summary, True
        self.say(f"      done in {format_seconds(seconds)}: {describe(summary)}")
        return summary

    def seconds(self, name: str) -> float:
        """Seconds stage ``name`` took when it finished (0 when it has not run)."""
        return float(self.markers[name]["seconds"]) if name in self.markers else 0.0

    def total_seconds(self, names: Sequence[str] | None = None) -> float:
        return sum(self.seconds(n) for n in (self.names if names is None else names))
