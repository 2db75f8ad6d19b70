"""What the fault tests share: running ``lmforge`` in a child process (optionally killed at a crash
point), digests of output directories that ignore what legitimately differs between runs
(timings, counts of skipped work), and holding an output directory from another process."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

from lmforge.storage import LOCK_NAME

VOLATILE = {"seconds", "seconds_serial", "shards_skipped", "created", "resumed", "downloads_reused", "workers"}


def lmforge(*args: str, crash_at: int | None = None, crash_log: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_CRASH")}
    env.setdefault("PYTHONHASHSEED", "0")
    if crash_at is not None:
        env["LMFORGE_CRASH_AT"] = str(crash_at)
    if crash_log is not None:
        env["LMFORGE_CRASH_LOG"] = str(crash_log)
    return subprocess.run([sys.executable, "-m", "lmforge", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def _scrub(obj):
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def digest_tree(root: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """rel path -> sha256 of every file under ``root`` (JSON/YAML files compared without volatile keys).
    Temporary files fail the comparison on purpose: a rerun must leave none behind."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or p.name == LOCK_NAME or skip(rel):
            continue
        data = p.read_bytes()
        if p.suffix == ".safetensors":  # the header's metadata order varies between processes (a Rust HashMap)
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                h = hashlib.sha256(json.dumps(f.metadata(), sort_keys=True).encode())
                for k in sorted(f.keys()):
                    t = f.get_tensor(k)
                    h.update(f"{k}{t.dtype}{tuple(t.shape)}".encode() + t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            out[rel] = h.hexdigest()
            continue
        if p.suffix == ".json":
            data = json.dumps(_scrub(json.loads(data)), sort_keys=True).encode()
        elif p.name.endswith(".json.gz"):
            data = json.dumps(_scrub(json.loads(gzip.decompress(data))), sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def crash_points(log: Path) -> list[str]:
    """The labels of the crash points one run passed, in order (``lmforge.storage.crash_point``)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln.split(" ", 2)[2] if ln.count(" ") >= 2 else "" for ln in lines]


def pick(n: int, k: int, seed: int) -> list[int]:
    """``k`` crash points out of ``1..n`` (seeded: the same points every run), always the last one."""
    rng = random.Random(seed)
    chosen = set(rng.sample(range(1, n), min(k - 1, n - 1))) if n > 1 else set()
    return sorted(chosen | {n})


def check_crash_and_rerun(
    tmp: Path,
    run: Callable[..., subprocess.CompletedProcess],
    outputs: Callable[[], dict[str, str]],
    reset: Callable[[], None],
    *,
    k: int,
    seed: int,
    rerun: Callable[[], subprocess.CompletedProcess] | None = None,
) -> dict[str, object]:
    """Run undisturbed (recording the crash points), then for ``k`` of them: reset, run killed at
    that point, rerun to the end, and compare the outputs with the undisturbed run's."""
    log = tmp / "crash.log"
    r = run(crash_log=log)
    assert r.returncode == 0, r.stderr[-3000:]
    reference = outputs()
    labels = crash_points(log)
    assert labels, "the command passed no crash point"
    tried = []
    for n in pick(len(labels), k, seed):
        reset()
        killed = run(crash_at=n)
        assert killed.returncode == -9, f"crash point {n} ({labels[n - 1]}): exit {killed.returncode}\n{killed.stderr[-2000:]}"
        again = (rerun or run)()
        assert again.returncode == 0, f"rerun after a kill at {n} ({labels[n - 1]}):\n{again.stderr[-3000:]}"
        got = outputs()
        assert got == reference, f"after a kill at crash point {n} ({labels[n - 1]}) and a rerun, outputs differ: {_diff(got, reference)}"
        tried.append(labels[n - 1])
    return {"points": len(labels), "tried": tried}


def _diff(a, b, where: str = "") -> list[str]:
    """Where two digests differ (keys of nested dicts, items of lists), at most 8 places."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += [f"{where}/{k}: only in the rerun" if k not in b else f"{where}/{k}: missing after the rerun"] if k not in a or k not in b \
                else _diff(a[k], b[k], f"{where}/{k}")
        return out[:8]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]")][:8]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"[:300]]


@contextlib.contextmanager
def held_elsewhere(directory: Path) -> Iterator[subprocess.Popen]:
    """``directory`` locked by another process (the same lock a running lmforge command takes)."""
    code = (
        "import sys, time\nfrom lmforge.storage import lock_output\n"
        "with lock_output(sys.argv[1], 'lmforge (another run)'):\n    print('held', flush=True)\n    time.sleep(300)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p
    finally:
        p.kill()
        p.wait()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and directory under ``root`` except the lock file."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.name != LOCK_NAME}


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def slow_task(task: dict) -> int:
    """A shard function for the interrupt tests: writes a temporary file, works for a while, then
    publishes it; an interruption deletes the temporary (as every stage's writers do)."""
    import time as _time

    out = Path(task["out"])
    tmp = out / f".{task['i']}.partial"
    tmp.write_text("working")
    try:
        _time.sleep(task["seconds"])
        tmp.rename(out / f"{task['i']}.done")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return task["i"]
