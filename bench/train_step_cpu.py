#!/usr/bin/env python
"""Side-by-side CPU benchmark: one full training step, lmforge OLMo-2 vs HF transformers Olmo2ForCausalLM.

One step = forward, cross-entropy loss over every position, backward, ``AdamW(foreach=True).step()``,
``zero_grad()``. Both models have the same config and the same initial weights (lmforge's, copied into
the HF model with ``lmforge.models.hf.to_hf_state_dict``); before timing, the script checks that both
give the same initial loss, so the two sides do the same computation.

A third side, ``lmforge-trainer``, is the step exactly as ``lmforge train`` takes it
(``LMTrainModule.train_batch``: LR schedule, token-count normalisation, gradient clipping at 1.0,
the optimizer lmforge builds (fused AdamW with weight-decay groups), the one host sync for the loss
and the stability check). It does more work than the two bare steps, so its ratio is conservative.

Both models live in this one process and are timed interleaved (A B, then B A, ...) after a warmup,
so clock/thermal drift hits both equally; the figure is the median step time -> tokens/s.
``ratio = lmforge tokens/s / HF tokens/s``: above 1 means lmforge is faster.

    python bench/train_step_cpu.py              # olmo2-20m, batch 4 x seq 256, float32 (~1-2 min on 2 cores)
    python bench/train_step_cpu.py --quick      # tiny smoke run (< 20 s)
    python bench/train_step_cpu.py --profile    # also print where each side spends its time
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Contention, add_common_args, model_pair, report  # noqa: E402
import torch.nn.functional as F


def build_models(args):
    from lmforge.models import get_preset

    overrides = {"max_seq_len": max(args.seq, 16)} if args.seq > 1024 else None
    cfg = get_preset(args.preset, overrides)
    ours, hf = model_pair(cfg, args.dtype, args.seed, eos_token_id=0, pad_token_id=0)
    ours.train()
    hf.train()
    return cfg, ours, hf


def make_step(model, loss_fn, opt):
    def step(x, y):
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def trainer_step(model, lr):
    """The trainer's own step (LMTrainModule) on a copy of the lmforge model."""
    import copy

    from lmforge.optim import OptimConfig, ScheduleConfig
    from lmforge.train.config import StabilityConfig
    from lmforge.train.module import LMTrainModule, MicroBatch

    m = copy.deepcopy(model)
    module = LMTrainModule(
        m,
        OptimConfig(lr=lr, weight_decay=0.1).build(m),
        ScheduleConfig(kind="constant", total_steps=10**9),
        peak_lr=lr,
        grad_clip=1.0,
        stability=StabilityConfig(),
    )
    state = {"step": 0}

    def step(x, y):
        metrics = module.train_batch([MicroBatch(x, y)], state["step"])
        state["step"] += 1
        return torch.tensor(metrics["loss"])

    return step


def ours_loss(model, x, y):
    """lmforge's training path: the model scores its labels itself (chunked output projection + CE)."""
    return model(x, labels=y).loss


def hf_loss(model, x, y):
    """HF's path: full logits, upcast, cross-entropy (what ForCausalLMLoss does after its shift)."""
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


def profile_side(name, step, x, y, n=3):
    from torch.profiler import ProfilerActivity, profile

    step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step(x, y)
    print(f"\n=== profile: {name} ({n} steps, self CPU time) ===")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="olmo2-20m", help="lmforge model preset (OLMo-2 family)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256, help="tokens per row fed to the model")
    p.add_argument("--lr", type=float, default=1e-4)
    add_common_args(
        p,
        reps=20,
        warmup_help="untimed steps per side before timing",
        reps_help="timed steps per side (interleaved)",
        quick_help="tiny run for smoke tests: olmo2-1m, batch 2 x seq 64, 3 reps",
        profile_help="after timing, profile a few steps of each side",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.batch, args.seq, args.warmup, args.reps = "olmo2-1m", 2, 64, 1, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype)

    cfg, ours, hf = build_models(args)
    if cfg.arch != "olmo2":
        raise SystemExit(f"--preset must be an OLMo-2 preset, got {args.preset} ({cfg.arch})")
    g = torch.Generator().manual_seed(args.seed + 1)
    data = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=g)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    # Same computation? Initial loss must match before any optimiser step.
    with torch.no_grad():
        l_ours = ours_loss(ours, x, y).item()
        l_hf = hf_loss(hf, x, y).item()
    tol = 1e-4 if args.dtype == torch.float32 else 2e-2
    print(f"initial loss: lmforge {l_ours:.6f}  HF {l_hf:.6f}  |diff| {abs(l_ours - l_hf):.2e}")
    if abs(l_ours - l_hf) > tol:
        raise SystemExit(f"initial losses differ by more than {tol}: not the same computation")

    opt_kw = dict(lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    steps = {
        "lmforge": make_step(ours, ours_loss, torch.optim.AdamW(ours.parameters(), **opt_kw)),
        "HF": make_step(hf, hf_loss, torch.optim.AdamW(hf.parameters(), **opt_kw)),
        "lmforge-trainer": trainer_step(ours, args.lr),
    }
    losses = {k: [] for k in steps}
    for _ in range(args.warmup):
        for name, step in steps.items():
            losses[name].append(step(x, y).item())
    times = {k: [] for k in steps}
    contention = Contention()
    order = list(steps)
    for r in range(args.reps):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            loss = steps[name](x, y)
            times[name].append(time.perf_counter() - t0)
            losses[name].append(loss.item())
    # Both sides trained on the same batch with the same optimiser: trajectories should track closely.
    busy = contention.report()
    drift = max(abs(a - b) for a, b in zip(losses["lmforge"], losses["HF"]))
    drift_tol = 1e-3 if args.dtype == torch.float32 else 0.25
    agreement = dict(initial_loss_diff=abs(l_ours - l_hf), initial_loss_tol=tol, loss_drift=drift, loss_drift_tol=drift_tol,
                     steps=len(losses["HF"]), ok=abs(l_ours - l_hf) <= tol and drift <= drift_tol)  # fmt: skip

    tokens = args.batch * args.seq
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens / v for k, v in med.items()}
    ratio = tps["lmforge"] / tps["HF"]
    ratio_trainer = tps["lmforge-trainer"] / tps["HF"]
    n_params = ours.num_params()
    print(
        f"train step, {args.preset} ({n_params / 1e6:.1f}M params), {str(args.dtype).replace('torch.', '')}, "
        f"batch {args.batch} x seq {args.seq} = {tokens} tokens/step, AdamW(foreach=True), "
        f"{args.warmup} warmup + {args.reps} interleaved timed steps per side"
    )
    for k in steps:
        spread = f"min {min(times[k]) * 1e3:.1f} / max {max(times[k]) * 1e3:.1f} ms"
        print(f"  {k:15s} median step {med[k] * 1e3:8.1f} ms  ({spread})  {tps[k]:9.0f} tokens/s")
    print(f"  max |loss lmforge - loss HF| over {len(losses['HF'])} steps: {drift:.2e} (tolerance {drift_tol:g})"
          + ("" if agreement["ok"] else "  << FAILED: the two sides do not train alike"))
    print(f"ratio lmforge/HF (tokens/s): {ratio:.3f}")
    print(f"ratio lmforge-trainer/HF (tokens/s; the trainer also clips and checks the loss): {ratio_trainer:.3f}")
    report(
        args, busy,
        benchmark="train_step_cpu", preset=args.preset, batch=args.batch, seq=args.seq,
        dtype=str(args.dtype), reps=args.reps, warmup=args.warmup,
        median_step_s=med, tokens_per_s=tps, ratio=ratio, ratio_trainer=ratio_trainer, initial_loss=dict(lmforge=l_ours, HF=l_hf),
        agreement=agreement,
    )  # fmt: skip
    if args.profile:
        for name, step in steps.items():
            profile_side(name, step, x, y)
    return 0 if agreement["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
