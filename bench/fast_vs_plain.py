"""Same numbers, faster: the trainer's fast path against its plain path, step for step.

Both runs go through ``lmforge.train.run.train`` on the same token file and seed:
plain = eager blocks, synchronous checkpoints; fast = per-block ``torch.compile``, background
checkpoints (plus ``--fast`` overrides). Prints the largest relative loss difference over the run
and both runs' tokens/s. On a GPU (bf16 autocast) the losses must agree within bf16 tolerance
(``--rtol``, default 2e-2) over 50 steps; ``--tiny`` runs 20 float32 steps on the CPU (~1e-6 apart).

    python bench/fast_vs_plain.py [--tiny] [--preset olmo2-150m] [--steps 50] [--fast trainer.micro_batch=8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--preset", default="olmo2-150m")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rtol", type=float, default=None)
    p.add_argument("--fast", action="append", default=[], help="extra override for the fast run")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args()
    from lmforge.models.presets import get_preset
    from lmforge.train.callbacks import read_metrics
    from lmforge.train.config import TrainConfig
    from lmforge.train.run import train

    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    if a.tiny:
        a.preset, a.steps, a.seq, a.batch = "olmo2-1m", 20, 64, 4
    rtol = a.rtol if a.rtol is not None else (2e-2 if dev == "cuda" else 1e-5)
    model = get_preset(a.preset, {"max_seq_len": a.seq, "vocab_size": 512 if a.tiny else 100278}).to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        data = Path(tmp) / "tokens.npy"
        rng.integers(1, model["vocab_size"], size=(a.steps + 2) * a.batch * a.seq, dtype=np.uint32).tofile(data)
        curves, speed = {}, {}
        for name, fast in (("plain", False), ("fast", True)):
            cfg = TrainConfig.from_dict(
                {
                    "run": {"name": name, "dir": f"{tmp}/{name}", "seed": 0, "device": dev},
                    "model": model,
                    "data": {"sources": [{"paths": [str(data)]}], "dtype": "uint32", "eos_id": 0},
                    "optim": {"lr": 1e-3},
                    "schedule": {"kind": "cosine", "warmup_steps": 5, "total_steps": a.steps},
                    "trainer": {"global_batch": a.batch, "micro_batch": a.batch, "compile": fast, "z_loss": 1e-5},
                    "checkpoint": {"every": max(1, a.steps // 2), "keep_last": 1, "background": fast},
                    "logging": {"progress": False, "plot": False},
                }
            )
            if fast and a.fast:
                cfg = cfg.merged(a.fast)
            train(cfg, quiet=True)
            recs = [r for r in read_metrics(f"{tmp}/{name}") if "loss" in r]
            curves[name] = np.array([r["loss"] for r in recs])
            speed[name] = float(np.median([r["tokens_per_s"] for r in recs[len(recs) // 2 :]]))
    rel = np.abs(curves["fast"] - curves["plain"]) / np.abs(curves["plain"])
    ok = bool(rel.max() <= rtol)
    res = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "preset": a.preset, "steps": a.steps,
           "max_rel_loss_diff": float(rel.max()), "rtol": rtol, "ok": ok, "tokens_per_s": speed,
           "speedup": speed["fast"] / speed["plain"], "command": "python bench/fast_vs_plain.py " + " ".join(sys.argv[1:])}  # fmt: skip
    print(f"{a.preset} on {res['device']}, {a.steps} steps: max relative loss difference {rel.max():.2e} (tolerance {rtol:g}) "
          f"-> {'same numbers' if ok else 'DIFFERENT'}; tokens/s plain {speed['plain']:.0f}, fast {speed['fast']:.0f} "
          f"({res['speedup']:.2f}x)", flush=True)  # fmt: skip
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "fast_vs_plain.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
