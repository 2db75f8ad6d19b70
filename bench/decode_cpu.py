#!/usr/bin/env python
"""Side-by-side CPU benchmark: greedy decoding, lmforge ``generate_ids`` vs HF ``model.generate``.

Same OLMo-2 config, same weights (lmforge's, copied into HF ``Olmo2ForCausalLM`` with
``lmforge.models.hf.to_hf_state_dict``, attn_implementation="sdpa"), same prompts, greedy, no EOS
stopping on either side (lmforge: ``stop_at_eos=False``; HF: the model's eos id is None), so both
always produce exactly ``--new-tokens`` tokens per row. Before timing, the script checks that both
sides produce the same tokens, token for token (float32; in bfloat16 a mismatch is only reported).

Two cases: batch 1 (one prompt of ``--prompt-len`` tokens) and batch 4 with different prompt
lengths (``--prompt-len`` x 1, 3/4, 1/2, 1/4), left padded. Each call includes the prefill.
Both sides run in this one process, interleaved (A B, then B A, ...) after a warmup; the figure is
the median call time -> new tokens/s (batch x new tokens / time).
``ratio = lmforge tokens/s / HF tokens/s``: above 1 means lmforge is faster.

    python bench/decode_cpu.py            # olmo2-20m, prompt 32, 128 new tokens, float32 (~1-2 min on 2 cores)
    python bench/decode_cpu.py --quick    # tiny smoke run (< 20 s)
    python bench/decode_cpu.py --profile  # also print where each side spends its time (batch 1)
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

# Token ids of the random-weight models: prompts avoid PAD; EOS is given but never stops decoding
# (stop_at_eos=False on our side, eos None on HF's), so both sides produce exactly max_new_tokens.
PAD_ID = 1
EOS_ID = 0


def build_models(args):
    from lmforge.models import get_preset

    cfg = get_preset(args.preset)
    if cfg.max_seq_len < args.prompt_len + args.new_tokens:
        cfg = get_preset(args.preset, {"max_seq_len": args.prompt_len + args.new_tokens})
    # eos None: HF's generate then has no EOS to stop on (nor to suppress), like stop_at_eos=False.
    ours, hf = model_pair(cfg, args.dtype, args.seed, eos_token_id=None, pad_token_id=PAD_ID)
    ours.eval()
    hf.eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = PAD_ID
    return cfg, ours, hf


def make_runners(cfg, ours, hf, new_tokens):
    from lmforge.generate import GenerationConfig, generate_ids

    gen = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, stop_at_eos=False)
    # lmforge never picks ids past the tokenizer's vocabulary (the embedding's padding rows); tell HF the same.
    suppress = list(range(cfg.vocab_size, cfg.padded_vocab_size)) or None

    def run_ours(prompts):
        return generate_ids(ours, prompts, gen, pad_token_id=PAD_ID, eos_token_id=EOS_ID)

    @torch.inference_mode()
    def run_hf(prompts):
        L = max(map(len, prompts))
        ids = torch.full((len(prompts), L), PAD_ID, dtype=torch.long)
        mask = torch.zeros(len(prompts), L, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, L - len(p) :] = torch.tensor(p)
            mask[i, L - len(p) :] = 1
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=PAD_ID,
            suppress_tokens=suppress,
        )
        return out[:, L:].tolist()

    return {"lmforge": run_ours, "HF": run_hf}


def bench_case(runners, prompts, new_tokens, warmup, reps, strict=True):
    outs = {k: f(prompts) for k, f in runners.items()}  # also the first warmup call
    differing = 0
    for row, (a, b) in enumerate(zip(outs["lmforge"], outs["HF"])):
        if len(a) != new_tokens or len(b) != new_tokens:
            raise SystemExit(f"row {row}: expected {new_tokens} new tokens, got {len(a)} (lmforge) / {len(b)} (HF)")
        if a != b:
            first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            msg = (
                f"greedy outputs differ (row {row}, prompt length {len(prompts[row])}) at new token {first}: "
                f"lmforge {a[first:first + 8]} vs HF {b[first:first + 8]}"
            )
            if strict:
                raise SystemExit(msg)
            # bf16: rounding differences flip near-ties; same amount of work is still done on both sides.
            differing += 1
            print(f"  note: {msg} (expected in low precision; timing continues)")
    for _ in range(warmup - 1):
        for f in runners.values():
            f(prompts)
    times = {k: [] for k in runners}
    order = list(runners)
    for r in range(reps):
        for name in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            runners[name](prompts)
            times[name].append(time.perf_counter() - t0)
    n = len(prompts) * new_tokens
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: n / v for k, v in med.items()}
    return times, med, tps, tps["lmforge"] / tps["HF"], differing


def profile_side(name, fn, prompts):
    from torch.profiler import ProfilerActivity, profile

    fn(prompts)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(prompts)
    print(f"\n=== profile: {name}, batch {len(prompts)} (one generate call, self CPU time) ===")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="olmo2-20m", help="lmforge model preset (OLMo-2 family)")
    p.add_argument("--prompt-len", type=int, default=32, help="longest prompt, in tokens")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes; rows get lengths L, 3L/4, L/2, L/4, ...")
    add_common_args(
        p,
        reps=7,
        warmup_help="untimed calls per side (the first also checks equality)",
        reps_help="timed calls per side and batch size (interleaved)",
        quick_help="tiny run for smoke tests: olmo2-1m, prompt 16, 16 new tokens",
        profile_help="after timing, profile one batch-1 call of each side",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.prompt_len, args.new_tokens, args.warmup, args.reps = "olmo2-1m", 16, 16, 1, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = getattr(torch, args.dtype)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    cfg, ours, hf = build_models(args)
    if cfg.arch != "olmo2":
        raise SystemExit(f"--preset must be an OLMo-2 preset, got {args.preset} ({cfg.arch})")
    runners = make_runners(cfg, ours, hf, args.new_tokens)
    g = torch.Generator().manual_seed(args.seed + 1)
    lo = 2  # keep ids 0 (pad) and 1 (eos) out of the prompts
    print(
        f"greedy decode, {args.preset} ({ours.num_params() / 1e6:.1f}M params), {str(args.dtype).replace('torch.', '')}, "
        f"{args.new_tokens} new tokens/row, no EOS stopping, {args.warmup} warmup + {args.reps} interleaved timed calls per side"
    )
    results = {}
    contention = Contention()
    for B in batches:
        fracs = [1.0, 0.75, 0.5, 0.25]
        lengths = [max(1, int(args.prompt_len * fracs[i % 4])) for i in range(B)]
        prompts = [torch.randint(lo, cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
        strict = args.dtype == torch.float32
        times, med, tps, ratio, differing = bench_case(runners, prompts, args.new_tokens, args.warmup, args.reps, strict)
        # in float32 (strict) bench_case stops the script (exit 1) on any difference; in bf16 it counts them
        results[B] = dict(prompt_lengths=lengths, median_s=med, tokens_per_s=tps, ratio=ratio, strict=strict, rows_differing_from_hf=differing)
        same = "outputs identical" if strict else "outputs compared (see notes)"
        print(f"batch {B}, prompt lengths {lengths} ({'left padded' if len(set(lengths)) > 1 else 'no padding'}); {same}")
        for k in runners:
            spread = f"min {min(times[k]) * 1e3:.0f} / max {max(times[k]) * 1e3:.0f} ms"
            print(f"  {k:8s} median call {med[k] * 1e3:8.1f} ms  ({spread})  {tps[k]:8.1f} new tokens/s")
        print(f"  ratio lmforge/HF (tokens/s), batch {B}: {ratio:.3f}")
    busy = contention.report()
    report(
        args, busy,
        benchmark="decode_cpu", preset=args.preset, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        dtype=str(args.dtype), reps=args.reps, warmup=args.warmup, results=results,
    )  # fmt: skip
    if args.profile:
        prompts = [torch.randint(lo, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()]
        for name, fn in runners.items():
            profile_side(name, fn, prompts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
