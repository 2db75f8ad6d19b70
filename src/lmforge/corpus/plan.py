"""A stage run by any scheduler: ``plan``, ``run-shard``, ``reduce``, ``status``.

    lmforge data plan dedup --documents data/documents --mode paragraphs --out runs/dedup/plan.json
    lmforge data status runs/dedup            # the current step: its tasks done / failed / remaining
    lmforge data run-shard runs/dedup/plan.json --index 7     # e.g. $SLURM_ARRAY_TASK_ID; idempotent
    lmforge data reduce runs/dedup/plan.json  # the summary; fails unless every task is done and it adds up

How it works. A stage's driver (``tag``, ``dedup``, ...) is deterministic: the same inputs and options
make the same steps (each one call of :func:`lmforge.corpus.executors.run_tasks`) with the same
tasks. A plan directory holds the command (``plan.json``), the names of each reached step's tasks
(``steps/K.json``: their files), one done-marker per finished task with its result as JSON
(``done/K/I.json``), one record per failed task (``failed/K/I.json``), and the scratch space of
stages that need one (``work/``). Every command *replays* the driver with this store active, which
turns each ``run_tasks`` into a lookup: a step whose tasks are all done returns their stored results
and the driver goes on; the first step that is not done stops the replay (:class:`StepPending`),
after ``run-shard`` has run its one task of it. ``reduce`` replays to the end, so the driver itself
merges the accountings and writes the summary: the outputs equal a local run's byte for byte.

Steps that depend on an earlier step's results (dedup: keys, then buckets, then attributes) become
known one at a time: ``status`` names the current step and its number of tasks, so a scheduler runs
one array job per step (docs/data.md has a Slurm script); ``run-shard`` for an index past the
current step's tasks does nothing. While tasks run, they share the stage's output locks
(:func:`lmforge.storage.shared_outputs`): a plain run of the same stage is refused meanwhile, and
``plan``/``reduce`` take the locks alone. Markers are JSON (no pickle: a plan directory may come from
anywhere), written atomically after the task's outputs; a task run twice (a requeued array task)
writes the same outputs and the same marker.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import json
import os
import shutil
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from lmforge.data.documents import Accounting, DataError
from lmforge.objectstore import RemotePath, as_path
from lmforge.storage import atomic_write_text, shared_outputs

__all__ = [
    "PLAN_NAME",
    "STAGES",
    "PlanError",
    "PlanStore",
    "StepPending",
    "StepState",
    "decode_result",
    "encode_result",
    "merged_accounting",
    "replay",
    "replaying",
    "run_step",
    "scratch_directory",
]

PLAN_NAME = "plan.json"
FORMAT = "lmforge-plan"
STAGES = ("fetch", "tag", "dedup", "mix", "tokenize", "analyze", "eval-filter")
Mode = Literal["plan", "probe", "shard", "reduce"]


class PlanError(DataError):
    """A plan cannot go on (a step not finished, inputs changed since planning, a bad plan file)."""


# --- results as JSON ------------------------------------------------------------------------------------
def encode_result(obj: Any) -> Any:
    """A task's result as JSON-able data that :func:`decode_result` turns back into equal objects
    (Accounting, numpy arrays and scalars, tuples, dicts with non-string keys)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Accounting):
        return {"$accounting": obj.to_json()}
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"$ndarray": {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}}
    if isinstance(obj, tuple):
        return {"$tuple": [encode_result(x) for x in obj]}
    if isinstance(obj, list):
        return [encode_result(x) for x in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: encode_result(v) for k, v in obj.items()}
        return {"$items": [[encode_result(k), encode_result(v)] for k, v in obj.items()]}
    raise TypeError(f"a task result of type {type(obj).__name__} cannot be stored in a done-marker")


def decode_result(obj: Any) -> Any:
    if isinstance(obj, list):
        return [decode_result(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (key, value), = obj.items()
        if key == "$accounting":
            return Accounting.from_json(value)
        if key == "$tuple":
            return tuple(decode_result(x) for x in value)
        if key == "$items":
            return {_hashable(decode_result(k)): decode_result(v) for k, v in value}
        if key == "$ndarray":
            dt = np.dtype(value["dtype"])
            if dt.hasobject:
                raise PlanError("a done-marker holds an object array; refused")
            return np.frombuffer(base64.b64decode(value["data"]), dtype=dt).reshape(value["shape"]).copy()
    return {k: decode_result(v) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


def merged_accounting(results: Sequence[Any]) -> Accounting | None:
    """The Accounting of the documents the results account for (an Accounting, or ``accounting``/``acct``
    entries of dict results), merged; None when they hold none."""
    total, found = Accounting(), False
    for r in results:
        a = r if isinstance(r, Accounting) else None
        if isinstance(r, dict):
            a = r.get("acct") if isinstance(r.get("acct"), Accounting) else None
            if a is None and isinstance(r.get("accounting"), dict):
                a = Accounting.from_json(r["accounting"])
        if a is not None:
            total.merge(a)
            found = True
    return total if found else None


# --- the plan directory -----------------------------------------------------------------------------------
@dataclasses.dataclass
class StepState:
    """One step of a plan: its tasks (by name) and which are done or failed."""

    index: int
    desc: str
    unit: str
    tasks: list[str]
    done: set[int]
    failed: dict[int, dict[str, Any]]

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.tasks)

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(len(self.tasks)) if i not in self.done]


class StepPending(BaseException):
    """The replay stopped at a step that is not finished (not an Exception: the stage's own error
    handling lets it through). ``ran``: the task this replay ran, if any. ``finished``: every step
    is done (the stage awaits ``reduce``)."""

    def __init__(self, step: StepState | None, ran: int | None = None, finished: bool = False):
        super().__init__(f"step {step.index if step else '-'} pending")
        self.step, self.ran, self.finished = step, ran, finished


class PlanStore:
    """The files of one plan directory (see the module doc)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def open(cls, where: str | os.PathLike) -> "PlanStore":
        """The plan at ``where``: its ``plan.json`` or the directory holding it."""
        p = Path(where)
        root = p.parent if p.name == PLAN_NAME or p.suffix == ".json" else p
        store = cls(root)
        if not store.plan_path.is_file():
            raise PlanError(f"{store.plan_path}: no plan here; make one with `lmforge data plan STAGE ... --out {store.plan_path}`")
        store.plan  # checks the file
        return store

    @classmethod
    def create(cls, out: str | os.PathLike, stage: str, argv: list[str]) -> "PlanStore":
        """A new plan for ``lmforge data STAGE ARGV...`` at ``out`` (``DIR/plan.json`` or ``DIR``);
        the same plan made again is kept (its finished tasks too), a different one is refused."""
        p = Path(out)
        if p.suffix == ".json" and p.name != PLAN_NAME:
            raise PlanError(f"--out {out}: a plan is DIR/{PLAN_NAME} (one plan per directory)")
        store = cls(p.parent if p.suffix == ".json" else p)
        plan = {"format": FORMAT, "version": 1, "stage": stage, "argv": list(argv), "cwd": os.getcwd()}
        if store.plan_path.exists():
            old = store.plan
            if (old["stage"], old["argv"], old["cwd"]) != (stage, list(argv), plan["cwd"]):
                raise PlanError(f"{store.plan_path} holds another plan (lmforge data {old['stage']} {' '.join(old['argv'])}); "
                                "give another --out, or delete that directory")
            return store
        store.root.mkdir(parents=True, exist_ok=True)
        plan["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(store.plan_path, json.dumps(plan, indent=1) + "\n")
        return store

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_NAME

    @property
    def plan(self) -> dict[str, Any]:
        try:
            plan = json.loads(self.plan_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PlanError(f"{self.plan_path}: unreadable plan ({e}); make it again with `lmforge data plan`") from None
        ok = isinstance(plan, dict) and plan.get("format") == FORMAT and plan.get("stage") in STAGES and isinstance(plan.get("argv"), list)
        if not ok or not all(isinstance(a, str) for a in plan["argv"]):
            raise PlanError(f"{self.plan_path}: not an lmforge plan (format {FORMAT}, a stage of {', '.join(STAGES)}, argv strings)")
        return plan

    @property
    def work(self) -> Path:
        return self.root / "work"

    def _step_file(self, k: int) -> Path:
        return self.root / "steps" / f"{k}.json"

    def _done(self, k: int, i: int) -> Path:
        return self.root / "done" / str(k) / f"{i}.json"

    def _failed(self, k: int, i: int) -> Path:
        return self.root / "failed" / str(k) / f"{i}.json"

    def record_step(self, k: int, desc: str, unit: str, names: list[str]) -> None:
        """Record step ``k`` (its tasks' names); refuse if a replay makes it differently (the inputs changed)."""
        path = self._step_file(k)
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("tasks") != names:
                changed = next((f"task {i}: {a!r} -> {b!r}" for i, (a, b) in enumerate(zip(old.get("tasks", []), names)) if a != b),
                               f"{len(old.get('tasks', []))} -> {len(names)} tasks")
                raise PlanError(f"{self.plan_path}: the inputs changed since this plan was made (step {k}, {desc}: {changed}); "
                                "make a new plan in another directory")
            return
        atomic_write_text(path, json.dumps({"step": k, "desc": desc, "unit": unit, "tasks": names}, indent=1) + "\n")

    def steps(self) -> list[StepState]:
        out, k = [], 0
        while self._step_file(k).exists():
            out.append(self.step(k))
            k += 1
        return out

    def step(self, k: int) -> StepState:
        rec = json.loads(self._step_file(k).read_text(encoding="utf-8"))
        n = len(rec["tasks"])
        done = {i for i in range(n) if self._done(k, i).exists()}
        failed = {}
        for i in range(n):
            f = self._failed(k, i)
            if i not in done and f.exists():
                failed[i] = json.loads(f.read_text(encoding="utf-8"))
        return StepState(k, rec["desc"], rec["unit"], rec["tasks"], done, failed)

    def result(self, k: int, i: int) -> Any:
        path = self._done(k, i)
        try:
            return decode_result(json.loads(path.read_text(encoding="utf-8"))["result"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PlanError(f"{path}: a damaged done-marker ({e}); delete it and run that task again") from None

    def write_done(self, k: int, i: int, name: str, result: Any, seconds: float) -> None:
        rec = {"task": name, "seconds": round(seconds, 3), "host": socket.gethostname(), "result": encode_result(result)}
        atomic_write_text(self._done(k, i), json.dumps(rec) + "\n")
        self._failed(k, i).unlink(missing_ok=True)

    def write_failed(self, k: int, i: int, name: str, error: BaseException) -> None:
        path = self._failed(k, i)
        attempts = 1
        if path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                attempts = int(json.loads(path.read_text(encoding="utf-8"))["attempts"]) + 1
        first = (str(error).strip().splitlines() or [""])[0]
        rec = {"task": name, "error": f"{type(error).__name__}: {first}", "attempts": attempts, "host": socket.gethostname(),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(path, json.dumps(rec) + "\n")

    def results(self, k: int) -> list[Any]:
        state = self.step(k)
        return [self.result(k, i) for i in sorted(state.done)]


# --- replaying a driver -----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Replay:
    store: PlanStore
    mode: Mode
    index: int | None = None
    next_step: int = 0


_ACTIVE: contextvars.ContextVar[_Replay | None] = contextvars.ContextVar("lmforge_plan_replay", default=None)


def replaying() -> bool:
    """Whether a plan's replay is running (then ``run_tasks`` goes through :func:`run_step`)."""
    return _ACTIVE.get() is not None


def run_step(fn: Callable[[Any], Any], tasks: Sequence[Any], *, desc: str, unit: str, describe: Callable[[Any], str],
             on_result: Callable[[int, Any], None] | None, more_steps: bool) -> list[Any]:
    """``run_tasks`` during a replay: stored results, or this replay's one task and a stop."""
    rp = _ACTIVE.get()
    assert rp is not None
    k = rp.next_step
    rp.next_step += 1
    names = [str(describe(t)) for t in tasks]
    rp.store.record_step(k, desc, unit, names)
    state = rp.store.step(k)
    if not state.complete:
        if rp.mode == "reduce":
            raise PlanError(_unfinished(rp.store, state))
        ran = None
        if rp.mode == "shard" and rp.index is not None and rp.index < len(tasks) and rp.index not in state.done:
            ran = rp.index
            t0 = time.perf_counter()
            try:
                result = fn(tasks[ran])
            except BaseException as e:
                rp.store.write_failed(k, ran, names[ran], e)
                with contextlib.suppress(AttributeError, TypeError):
                    e.plan_task = (k, ran, names[ran])  # type: ignore[attr-defined] # run-shard names it
                raise
            rp.store.write_done(k, ran, names[ran], result, time.perf_counter() - t0)
            state = rp.store.step(k)
        raise StepPending(state, ran=ran)
    results = [rp.store.result(k, i) for i in range(len(tasks))]
    if rp.mode in ("probe", "shard", "plan") and not more_steps:
        raise StepPending(state, finished=True)  # the rest (merging, the summary) is reduce's
    if on_result is not None:
        for i, r in enumerate(results):
            on_result(i, r)
    return results


def _unfinished(store: PlanStore, state: StepState) -> str:
    msg = (f"{store.plan_path}: step {state.index} ({state.desc}) is not finished: {len(state.remaining)} of {len(state.tasks)} "
           f"task(s) remaining")
    if state.failed:
        i, rec = sorted(state.failed.items())[0]
        msg += f", {len(state.failed)} failed (task {i}, {rec['task']}: {rec['error']})"
    return msg + f"; run them (lmforge data run-shard {store.plan_path} --index I) and see `lmforge data status {store.root}`"


def replay(store: PlanStore, mode: Mode, driver: Callable[[], Any], *, index: int | None = None) -> StepPending | Any:
    """Run ``driver`` (the stage's command) with ``store`` active. ``plan`` and ``reduce`` hold the
    stage's outputs alone; ``probe`` (status) and ``shard`` share them with the other tasks. Returns
    the StepPending that stopped it, or (reduce) the driver's own return value."""
    token = _ACTIVE.set(_Replay(store, mode, index))
    try:
        with shared_outputs() if mode in ("probe", "shard") else contextlib.nullcontext():
            try:
                value = driver()
            except StepPending as stop:
                if mode == "reduce":  # cannot happen: reduce raises PlanError for unfinished steps
                    raise PlanError(_unfinished(store, stop.step)) from None
                return stop
    finally:
        _ACTIVE.reset(token)
    if mode != "reduce":
        raise PlanError(f"{store.plan_path}: the stage ran no steps (nothing to plan)")
    return value


@contextlib.contextmanager
def scratch_directory(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """Scratch space for a stage's steps: a new directory in ``parent``, removed afterwards; during a
    plan's replay, the plan's ``work/`` (shared by its tasks, kept until ``reduce`` has finished)."""
    import tempfile

    rp = _ACTIVE.get()
    if rp is not None:
        rp.store.work.mkdir(parents=True, exist_ok=True)
        yield rp.store.work
        return
    parent = as_path(parent)
    if isinstance(parent, RemotePath):  # the tasks may run anywhere: the scratch lives beside the outputs
        import uuid

        work = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            yield work  # type: ignore[misc]
        finally:
            work.remove_tree()
        return
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def counts(state: StepState) -> Counter:
    return Counter(done=len(state.done), failed=len(state.failed), remaining=len(state.remaining) - len(state.failed))
