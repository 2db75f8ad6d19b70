"""``lmforge export``, ``lmforge import`` and ``lmforge release``."""

from __future__ import annotations

from lmforge.cli.args import add_config_arguments, config_from_args
from lmforge.cli.common import no_overrides
from lmforge.config import ConfigError, parse_dtype
from lmforge.release.config import ReleaseConfig

def cmd_export(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.release import export_hf, load_pretrained

    model, tokenizer = load_pretrained(args.model)
    if args.tokenizer is not None:
        from lmforge.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer is None:
        raise ConfigError(f"{args.model}: holds no tokenizer.json; pass --tokenizer PATH (an HF export needs the tokenizer)")
    out = export_hf(model, tokenizer, args.out, dtype=parse_dtype(args.dtype), max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    print(f"exported {args.model} -> {out} (transformers loads it with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_release(args, overrides) -> int:
    no_overrides(overrides, "'lmforge release'")
    from lmforge.release.revisions import release

    cfg = config_from_args(ReleaseConfig, args)
    parse_dtype(cfg.dtype)  # an unknown --dtype is refused with the CLI's message, before anything is read
    r = release(cfg)
    print(f"released {len(r['revisions'])} revisions into {r['repo']} ({len(r['created'])} new); main = {r['main']['revision']}")
    return 0


def cmd_import(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    if (args.source is None) == (args.model is None):
        raise ConfigError("lmforge import: give the source directory once (positional, or --model for an HF directory)")
    source = args.source or args.model
    if args.source_format != "hf":
        return _import_foreign(args, source)
    from lmforge.checkpoint import save_model
    from lmforge.release import import_hf

    model, tokenizer = import_hf(source, dtype=parse_dtype(args.dtype))
    out = save_model(args.out, model, tokenizer=tokenizer)
    print(f"imported {source} -> {out} ({model.num_params():,} parameters)")
    return 0


def _import_foreign(args, source: str) -> int:
    from lmforge.checkpoint.imports import read_foreign, write_checkpoint

    if args.dtype is not None:
        raise ConfigError(f"--dtype: a training checkpoint imported --from {args.source_format} keeps float32 weights and moments")
    fc = read_foreign(args.source_format, source, config=args.config)
    tokenizer = None
    if args.tokenizer is not None:
        from lmforge.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    out = write_checkpoint(fc, args.out, tokenizer=tokenizer)
    c = fc.config
    moments = "weights and AdamW state" if fc.state is not None else "weights only (no AdamW state in the source)"
    print(f"imported {fc.source['path']} ({args.source_format}, step {fc.step:,}: {c.arch}, d_model {c.d_model}, {c.n_layers} layers, "
          f"{c.n_heads} heads) -> {out}: {moments}")
    for note in fc.notes:
        print(f"  note: {note}")
    o = fc.optim
    print(f"continue training: lmforge train CONFIG --init-from {out} --keep-optimizer "
          f"(its optimizer groups: --optim.decay_norms={str(o.decay_norms).lower()} --optim.decay_embeddings={str(o.decay_embeddings).lower()})")
    return 0


def cmd_checkpoint_average(args, overrides) -> int:
    no_overrides(overrides, "'lmforge checkpoint average'")
    from lmforge.checkpoint.average import average_checkpoints

    weights = None
    if args.weights is not None:
        try:
            weights = [float(x) for x in args.weights.split(",")]
        except ValueError:
            from lmforge.checkpoint import CheckpointError

            raise CheckpointError(f"--weights {args.weights!r}: give comma-separated numbers, one per checkpoint") from None
    out = average_checkpoints(args.checkpoints, args.out, weights=weights)
    shown = ", ".join(f"{w:g}" for w in (weights or [1] * len(args.checkpoints)))
    print(f"averaged {len(args.checkpoints)} checkpoints (weights {shown}) -> {out}; export it with: lmforge export --model {out} --out DIR")
    return 0


def add_commands(sub) -> None:
    c = sub.add_parser("checkpoint", help="operations on checkpoints")
    csub = c.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)
    a = csub.add_parser("average", help="the weighted mean of checkpoints of one architecture (a model soup), as a new checkpoint")
    a.add_argument("checkpoints", nargs="+", help="lmforge checkpoint or run directories (a run: its latest checkpoint)")
    a.add_argument("--out", required=True, help="new checkpoint directory (must not exist)")
    a.add_argument("--weights", default=None, help="comma-separated weights, one per checkpoint (normalised; default: uniform)")
    a.set_defaults(func=cmd_checkpoint_average)

    e = sub.add_parser("export", help="export an lmforge checkpoint to an HF transformers directory")
    e.add_argument("--model", required=True, help="lmforge checkpoint directory")
    e.add_argument("--out", required=True, help="HF output directory")
    e.add_argument("--tokenizer", default=None, help="tokenizer JSON/dir or name (default: the one saved in the checkpoint)")
    e.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: as saved)")
    e.add_argument("--max-shard-size", default="5GB")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    rl = sub.add_parser("release", help="export every checkpoint of a run as a revision (git branch stepN-tokensM) + model card")
    add_config_arguments(rl, ReleaseConfig)  # the flags are ReleaseConfig's fields
    rl.set_defaults(func=cmd_release)

    i = sub.add_parser("import", help="import an HF Olmo/Olmo2 directory, or an OLMo-core / OLMo training checkpoint with its optimizer state")
    i.add_argument("source", nargs="?", default=None, help="the directory to import (for --from hf also --model)")
    i.add_argument("--from", dest="source_format", choices=("hf", "olmo-core", "olmo"), default="hf",
                   help="hf: a transformers directory (weights); olmo-core: OLMo-core's save folder or stepN checkpoint; "
                        "olmo: the OLMo trainer's stepN-unsharded (model.pt + optim.pt); the last two carry AdamW state")
    i.add_argument("--model", default=None, help="HF model directory (config.json + safetensors)")
    i.add_argument("--out", required=True, help="lmforge checkpoint directory to write (must not exist for olmo-core / olmo)")
    i.add_argument("--config", default=None, help="olmo-core / olmo: the run's config (config.json / config.yaml) when not beside the checkpoint")
    i.add_argument("--tokenizer", default=None, help="olmo-core / olmo: a tokenizer (JSON, directory or name) to save with the checkpoint")
    i.add_argument("--dtype", default=None)
    i.set_defaults(func=cmd_import)
