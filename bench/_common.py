"""Shared pieces of the side-by-side benchmarks: machine description, contention check, model pair."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time

# No torch import at module level: data benchmarks import this file, and their spawned worker
# processes re-import the benchmark script (and so this module) at start-up.


class Contention:
    """CPU time other processes used while we timed (from /proc/stat minus our own rusage).

    On a shared box this says whether the figures can be trusted: a few % is noise, tens of % means
    rerun when the machine is quiet.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
            busy = (sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            busy = None
        # our own CPU time includes finished child processes (worker pools, the peer's CLI)
        own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
        return busy, own, time.perf_counter()

    def report(self) -> str:
        busy0, own0, t0 = self.start
        busy1, own1, t1 = self._sample()
        if busy0 is None or busy1 is None:
            return "other processes' CPU use: unknown (no /proc/stat)"
        other = max(0.0, (busy1 - busy0) - (own1 - own0))
        share = other / ((t1 - t0) * (os.cpu_count() or 1))
        warn = "  << WARNING: the box was busy, figures are unreliable; rerun when idle" if share > 0.05 else ""
        return f"other processes used {other:.1f} CPU-s during the run ({share:.0%} of the machine){warn}"


def time_interleaved(sides: dict, reps: int, warmup: int) -> tuple[dict[str, list[float]], str]:
    """``warmup - 1`` more untimed calls of every side (the first call, the correctness check, was
    the caller's), then ``reps`` timed rounds, the order of the sides reversed every other round;
    returns (seconds per side, the contention report)."""
    import time

    for _ in range(warmup - 1):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    contention = Contention()
    order = list(sides)
    for r in range(reps):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t0)
    return times, contention.report()


def machine_line() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import transformers

    return (
        f"machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
        f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    )


def report(args, busy: str, **record) -> None:
    """The last lines of every CPU benchmark: the machine and the contention; with ``--json FILE``,
    ``record`` plus both (and the command line) as JSON."""
    import json

    print(machine_line())
    print(busy)
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump({**record, "machine": machine_line(), "contention": busy, "argv": sys.argv}, f, indent=2)


def model_pair(cfg, dtype, seed: int, *, eos_token_id, pad_token_id):
    """lmforge's model and stock HF ``Olmo2ForCausalLM`` (sdpa) holding the same initial weights."""
    import torch
    import transformers

    from lmforge.models.hf import to_hf_config, to_hf_state_dict

    torch.manual_seed(seed)
    ours = cfg.build().to(dtype)
    d = to_hf_config(cfg, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    hf_cfg = transformers.AutoConfig.for_model(**d)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa", dtype=dtype)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=False)
    # Buffers (rotary inv_freq) are not in our state dict; a tied lm_head shares the embedding.
    missing = [k for k in missing if "rotary" not in k and not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"weight copy failed: missing {missing}, unexpected {unexpected}")
    assert type(hf).__name__ == "Olmo2ForCausalLM", type(hf).__name__
    assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
    return ours, hf


def add_common_args(p, *, reps: int, warmup_help: str, reps_help: str, quick_help: str, profile_help: str | None,
                    warmup: int = 2, dtype: bool = True) -> None:
    """Options every benchmark takes (the rest are its own); ``profile_help=None``: no --profile,
    ``dtype=False``: no --dtype (float32 only)."""
    if dtype:
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    p.add_argument("--reps", type=int, default=reps, help=reps_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    if profile_help is not None:
        p.add_argument("--profile", action="store_true", help=profile_help)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def python_source_docs(budget_bytes: int, *, suffixes: tuple[str, ...] = (".py",), cycle: bool = False):
    """Documents ``{"id", "text", "source"}`` from this Python's own sources: the standard library
    first, then installed packages (site-packages), sorted, until ``budget_bytes`` of UTF-8 text.
    ``cycle`` goes through the files again (ids stay unique) when they hold less than the budget."""
    import sysconfig
    from pathlib import Path

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in stdlib.rglob("*") if f.suffix in suffixes and f.is_file() and "site-packages" not in f.parts)
    files += sorted(f for f in stdlib.rglob("*") if f.suffix in suffixes and f.is_file() and "site-packages" in f.parts)
    docs, total, rounds = [], 0, 0
    while files and total < budget_bytes and (rounds == 0 or cycle):
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if not text.strip():
                continue
            rel = str(f.relative_to(stdlib))
            docs.append({"id": rel if rounds == 0 else f"{rel}#{rounds}", "text": text, "source": "python-stdlib"})
            total += len(text.encode("utf-8"))
            if total >= budget_bytes:
                break
        rounds += 1
    return docs
