"""How long a checkpoint stops training: lmforge's background save vs a synchronous save, same state.

The model of ``bench/train_speed_gpu.py`` (OLMo-2-1B on a GPU; ``--tiny`` on the CPU) is built
through the trainer and trained for a few steps, so the optimizer state is full. Then, side by side:

* peer: ``torch.distributed.checkpoint.save`` of the same sharded state (PyTorch's synchronous DCP
  save, what a trainer without background saving blocks on), and lmforge's synchronous save
  (``checkpoint.background: false``: DCP shards + unsharded safetensors + marker + rename);
* lmforge ``checkpoint.background: true``: the time ``Trainer.save_checkpoint`` blocks (copying the
  state to host memory), and how long the background write then takes while training goes on.

Prints seconds blocked per save and the ratio synchronous / background.

Agreement (after the timing, untimed): every save holds the state it was given. The model and
optimizer state do not change between the saves, so the last round's three saves must load back
equal to the live state, tensor for tensor: the peer's DCP directory (``dcp.load``), and both of
lmforge's checkpoints, through ``Trainer.load_checkpoint`` (sharded model + optimizer, after the
live state was overwritten) and ``load_model`` (the unsharded safetensors). A mismatch is printed,
recorded in the JSON (``agreement``) and makes the script exit 1.

    python bench/checkpoint_stall.py [--tiny] [--reps 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _flat(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict, by dotted path (on the CPU, for comparing)."""
    out: dict[str, torch.Tensor] = {}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[key] = (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().clone()
        else:
            out.update(_flat(v, key + "."))
    return out


def _differences(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> list[str]:
    """What differs between two flat states (missing or extra keys, dtypes, shapes, values)."""
    bad = [f"missing {k}" for k in want.keys() - got.keys()] + [f"unexpected {k}" for k in got.keys() - want.keys()]
    for k in sorted(want.keys() & got.keys()):
        a, b = want[k], got[k]
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            bad.append(f"{k}: differs ({a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)})")
    return bad


def check_saves(trainer, peer_dir: str, sync_dir: Path, background_dir: Path) -> dict:
    """The three saves of one round hold the live state (see the module docstring)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from lmforge.checkpoint.unsharded import load_model

    model, opt = trainer.module.model, trainer.module.optimizer
    want_model = _flat(get_model_state_dict(model))
    want_optim = _flat(get_optimizer_state_dict(model, opt)["state"])
    problems: dict[str, list[str]] = {}
    # the peer: a DCP directory, loaded into a zeroed copy of the state
    template = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    template = {"model": {k: torch.zeros_like(v) for k, v in template["model"].items()},
                "optim": {"state": {p: {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                                    for p, st in template["optim"]["state"].items()}, "param_groups": template["optim"]["param_groups"]}}  # fmt: skip
    dcp.load(template, storage_reader=dcp.FileSystemReader(peer_dir), no_dist=True)
    problems["peer_dcp"] = _differences(want_model, _flat(template["model"])) + _differences(want_optim, _flat(template["optim"]["state"]))
    for name, path in (("lmforge_sync", sync_dir), ("lmforge_background", background_dir)):
        # unsharded weights
        loaded = load_model(path)
        bad = _differences(want_model, _flat(loaded.state_dict()))
        # sharded model + optimizer, into the live objects after overwriting them
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            for st in opt.state.values():
                for v in st.values():
                    if isinstance(v, torch.Tensor):
                        v.zero_()
        trainer.load_checkpoint(path)
        bad += _differences(want_model, _flat(get_model_state_dict(model)))
        bad += _differences(want_optim, _flat(get_optimizer_state_dict(model, opt)["state"]))
        problems[name] = bad
    ok = all(not v for v in problems.values())
    return {"ok": ok, "checked": sorted(problems), "tensors": len(want_model) + len(want_optim),
            "problems": {k: v[:10] for k, v in problems.items() if v}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args()
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from train_speed_gpu import lmforge_trainer

    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    ns = argparse.Namespace(tiny=a.tiny, seq=128 if a.tiny else 4096, micro_batch=2 if a.tiny else 4, lmforge_micro_batch=None, lmforge=[])

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = lmforge_trainer(ns, Path(tmp), dev)
        for i in range(2):  # optimizer state exists after a step
            trainer.module.train_batch(trainer.micro_batches(i), i)
        trainer.step = 2
        model, opt = trainer.module.model, trainer.module.optimizer
        params = sum(p.numel() for p in model.parameters())
        res: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "parameters": params,
                     "command": "python bench/checkpoint_stall.py " + " ".join(sys.argv[1:])}  # fmt: skip
        peer, sync_save, blocked, background_total = [], [], [], []
        for r in range(a.reps):
            sync()
            t = time.perf_counter()
            state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
            dcp.save(state, storage_writer=dcp.FileSystemWriter(f"{tmp}/peer{r}"), no_dist=True)
            peer.append(time.perf_counter() - t)
            trainer.step = 10 + r
            sync()
            t = time.perf_counter()
            trainer.save_checkpoint(background=False)
            sync_save.append(time.perf_counter() - t)
            trainer.step = 100 + r
            sync()
            t = time.perf_counter()
            trainer.save_checkpoint(background=True)
            sync()
            blocked.append(time.perf_counter() - t)
            trainer.finish_checkpoint()
            background_total.append(time.perf_counter() - t)
        med = statistics.median
        res.update(peer_dcp_save_s=med(peer), lmforge_sync_s=med(sync_save), lmforge_background_blocked_s=med(blocked),
                   lmforge_background_total_s=med(background_total))  # fmt: skip
        res["ratio_peer_over_background_blocked"] = res["peer_dcp_save_s"] / res["lmforge_background_blocked_s"]
        last = a.reps - 1
        ckpts = Path(tmp) / "run" / "checkpoints"
        res["agreement"] = check_saves(trainer, f"{tmp}/peer{last}", ckpts / f"step{10 + last:07d}", ckpts / f"step{100 + last:07d}")
    print(f"{params / 1e6:.1f}M parameters on {res['device']}: training blocked per save: torch DCP save {res['peer_dcp_save_s']:.3f}s, "
          f"lmforge synchronous {res['lmforge_sync_s']:.3f}s, lmforge background {res['lmforge_background_blocked_s']:.3f}s "
          f"(written in {res['lmforge_background_total_s']:.3f}s while training goes on); "
          f"ratio DCP save / background blocked {res['ratio_peer_over_background_blocked']:.1f}x", flush=True)  # fmt: skip
    agree = res["agreement"]
    print(f"agreement: {', '.join(agree['checked'])} hold the live state ({agree['tensors']} tensors)" if agree["ok"]
          else f"agreement FAILED: a save does not hold the live state: {agree['problems']}", flush=True)  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint_stall.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0 if agree["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
