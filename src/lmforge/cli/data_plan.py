"""``lmforge data plan | run-shard | reduce | status``: a data stage run by any scheduler
(Slurm array jobs, Kubernetes indexed Jobs, a shell loop); see :mod:`lmforge.corpus.plan`.

    lmforge data plan [--out DIR/plan.json] STAGE STAGE_ARGS...   (--out may also follow the stage's
                                                                   arguments when the stage has no --out)
    lmforge data run-shard DIR/plan.json --index I
    lmforge data status DIR [--count | --json]
    lmforge data reduce DIR/plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from lmforge.config import ConfigError, parse_overrides

OWN_OUT = ("tokenize", "analyze", "fetch", "eval-filter")  # stages with an --out of their own


def _split_out(stage: str, rest: list[str]) -> tuple[str | None, list[str]]:
    """The plan's ``--out`` among the stage's arguments (only for stages without one of their own)."""
    if stage in OWN_OUT:
        return None, rest
    out, kept, i = None, [], 0
    while i < len(rest):
        a = rest[i]
        if a == "--out" and i + 1 < len(rest):
            out, i = rest[i + 1], i + 2
            continue
        if a.startswith("--out="):
            out = a.split("=", 1)[1]
        else:
            kept.append(a)
        i += 1
    return out, kept


def _stage_call(stage: str, argv: list[str]):
    """The stage's command, parsed as ``lmforge data STAGE ARGV...``, ready to run."""
    from lmforge.cli import build_parser

    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(["data", stage, *argv])
    except SystemExit:
        raise ConfigError(f"the arguments of `lmforge data {stage}` do not parse (see the message above)") from None
    dotted = [a for a in rest if a.startswith("--") and "=" in a]
    unknown = [a for a in rest if a not in dotted]
    if unknown:
        raise ConfigError(f"lmforge data {stage}: unrecognized arguments: {' '.join(unknown)}")
    overrides = parse_overrides(dotted)
    return lambda: args.func(args, overrides)


def _open(where: str):
    from lmforge.corpus.plan import PlanStore

    store = PlanStore.open(where)
    store.root = store.root.resolve()
    return store


def _in_plan_cwd(store):
    """Run the stage where it was planned (its relative paths are relative to that directory)."""
    cwd = store.plan["cwd"]
    if not os.path.isdir(cwd):
        raise ConfigError(f"{store.plan_path}: the plan was made in {cwd}, which does not exist here; "
                          "run it where that directory is (a shared file system), or make the plan with absolute paths there")
    os.chdir(cwd)


def cmd_plan(args) -> int:
    from lmforge.corpus.plan import PLAN_NAME, PlanStore, replay

    out, rest = args.out, list(args.stage_args)
    found, rest = _split_out(args.stage, rest)
    out = out or found
    if not out:
        raise ConfigError(f"lmforge data plan: give --out DIR/{PLAN_NAME} (before the stage's name for {', '.join(OWN_OUT)})")
    driver = _stage_call(args.stage, rest)  # the arguments parse, before anything is written
    store = PlanStore.create(out, args.stage, rest)
    store.root = store.root.resolve()
    stop = replay(store, "plan", driver)
    _print_state(store, stop)
    return 0


def cmd_run_shard(args) -> int:
    from lmforge.corpus.plan import replay

    store = _open(args.plan)
    if args.index < 0:
        raise ConfigError(f"--index must be >= 0, not {args.index}")
    _in_plan_cwd(store)
    t0 = time.perf_counter()
    try:
        stop = replay(store, "shard", _stage_call(store.plan["stage"], store.plan["argv"]), index=args.index)
    except Exception as e:
        if not hasattr(e, "plan_task"):  # not the task's own failure (a changed input, a bad plan): one line, status 2
            raise
        k, i, name = e.plan_task
        where = f"step {k} task {i} ({name})"
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"lmforge: error: {where}: {type(e).__name__}: {first}; recorded (lmforge data status {store.root})", file=sys.stderr)
        return 1
    st = stop.step
    if stop.finished:
        print(f"every step is done: run `lmforge data reduce {store.plan_path}`")
    elif stop.ran is not None:
        print(f"step {st.index} ({st.desc}) task {stop.ran} ({st.tasks[stop.ran]}) done in {time.perf_counter() - t0:.1f}s; "
              f"{len(st.done)} of {len(st.tasks)} done")
    elif args.index < len(st.tasks):
        print(f"step {st.index} task {args.index} ({st.tasks[args.index]}) was already done")
    else:
        print(f"step {st.index} ({st.desc}) has {len(st.tasks)} task(s): nothing to do for index {args.index}")
    return 0


def cmd_reduce(args) -> int:
    from lmforge.corpus.plan import PlanError, merged_accounting, replay
    from lmforge.storage import atomic_write_text

    store = _open(args.plan)
    _in_plan_cwd(store)
    steps = store.steps()
    acct = merged_accounting(store.results(0)) if steps else None
    if acct is not None and not acct.balanced:
        raise PlanError(f"{store.plan_path}: the accounting does not add up: {acct.summary_line()}")
    code = replay(store, "reduce", _stage_call(store.plan["stage"], store.plan["argv"]))
    atomic_write_text(store.root / "reduced.json", json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "exit": code,
                                                                "steps": len(store.steps())}) + "\n")
    import shutil

    shutil.rmtree(store.work, ignore_errors=True)
    return int(code or 0)


def status(store) -> dict[str, Any]:
    """The plan's state: every reached step (done / failed / remaining), the current one, the
    accounting of the tasks done so far, malformed lines (file:line) and failures."""
    from lmforge.corpus.plan import merged_accounting, replay

    reduced = (store.root / "reduced.json").exists()
    current = None
    if not reduced:  # replay to the first unfinished step (it may not be recorded yet)
        cwd = os.getcwd()
        try:
            _in_plan_cwd(store)
            stop = replay(store, "probe", _stage_call(store.plan["stage"], store.plan["argv"]))
            current = None if stop.finished else stop.step.index
        finally:
            os.chdir(cwd)
    steps = store.steps()
    acct = merged_accounting(store.results(0)) if steps else None
    out = {
        "plan": str(store.plan_path), "command": "lmforge data " + " ".join([store.plan["stage"], *store.plan["argv"]]),
        "state": "reduced" if reduced else ("ready to reduce" if current is None else "running"),
        "current_step": current,
        "current_tasks": 0 if current is None else len(steps[current].tasks),
        "steps": [{"step": s.index, "desc": s.desc, "tasks": len(s.tasks), "done": len(s.done), "failed": len(s.failed),
                   "remaining": len(s.remaining) - len(s.failed),
                   "failures": [{"index": i, **rec} for i, rec in sorted(s.failed.items())]} for s in steps],
        "accounting": acct.to_json() if acct is not None else None,
    }
    return out


def cmd_status(args) -> int:
    store = _open(args.dir)
    s = status(store)
    if args.count:
        print(s["current_tasks"])
        return 0
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"plan: {s['plan']}\n  {s['command']}")
    for st in s["steps"]:
        print(f"step {st['step']}  {st['desc']}: {st['tasks']} task(s): {st['done']} done, {st['failed']} failed, {st['remaining']} remaining")
        for f in st["failures"]:
            print(f"  FAILED task {f['index']} ({f['task']}): {f['error']} ({f['attempts']} attempt(s), on {f['host']})")
    if s["accounting"]:
        from lmforge.data.documents import Accounting

        a = Accounting.from_json(s["accounting"])
        print(f"accounting so far: {a.summary_line()}" + ("" if a.balanced else "  (DOES NOT ADD UP)"))
        for reason, where in sorted(a.examples.items()):
            print(f"  malformed ({reason}): {', '.join(where)}")
        for e in a.errors:
            print(f"  damaged: {e}")
    if s["state"] == "running":
        print(f"next: lmforge data run-shard {s['plan']} --index I   for I in 0..{s['current_tasks'] - 1} (step {s['current_step']})")
    elif s["state"] == "ready to reduce":
        print(f"next: lmforge data reduce {s['plan']}")
    else:
        print("reduced: the stage's outputs and summary are written")
    return 1 if any(st["failed"] for st in s["steps"]) else 0


def _print_state(store, stop) -> None:
    st = stop.step
    if stop.finished:
        print(f"plan {store.plan_path}: every step is done; next: lmforge data reduce {store.plan_path}")
        return
    print(f"plan {store.plan_path}: step {st.index} ({st.desc}) has {len(st.tasks)} task(s), {len(st.done)} done")
    print(f"next: lmforge data run-shard {store.plan_path} --index I   for I in 0..{len(st.tasks) - 1}; "
          f"then `lmforge data status {store.root}` for the next step")


def add_commands(dsub) -> None:
    from lmforge.corpus.plan import STAGES

    pp = dsub.add_parser("plan", help="plan a stage for another scheduler (Slurm, Kubernetes): run-shard, status, reduce then run it")
    pp.add_argument("--out", default=None, help="the plan: DIR/plan.json (a directory of its own)")
    pp.add_argument("stage", choices=STAGES, help="the stage")
    pp.add_argument("stage_args", nargs=argparse.REMAINDER, help="the stage's arguments, as for `lmforge data STAGE`")
    pr = dsub.add_parser("run-shard", help="run task I of a plan's current step (idempotent)")
    pr.add_argument("plan", help="DIR/plan.json")
    pr.add_argument("--index", type=int, required=True, help="the task, e.g. $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX")
    pd = dsub.add_parser("reduce", help="finish a plan: merge the tasks' results, write the summary (fails unless all done and it adds up)")
    pd.add_argument("plan", help="DIR/plan.json")
    ps = dsub.add_parser("status", help="a plan's steps: done / failed / remaining tasks, malformed lines, accounting")
    ps.add_argument("dir", help="the plan's directory (or its plan.json)")
    g = ps.add_mutually_exclusive_group()
    g.add_argument("--count", action="store_true", help="print only the number of tasks to run now (0: reduce next)")
    g.add_argument("--json", action="store_true", help="print the state as JSON")


COMMANDS = {"plan": cmd_plan, "run-shard": cmd_run_shard, "reduce": cmd_reduce, "status": cmd_status}
