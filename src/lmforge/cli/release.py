"""``lmforge export``, ``lmforge import`` and ``lmforge release``."""

from __future__ import annotations

from lmforge.cli.common import no_overrides, parse_dtype
from lmforge.config import ConfigError

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
    from lmforge.release.revisions import release_run

    r = release_run(
        args.run, args.repo, eval_dir=args.eval, manifest=args.manifest, license=args.license, dtype=parse_dtype(args.dtype),
        token_unit=args.token_unit, push=args.push, private=not args.public, tokenizer=args.tokenizer, name=args.name,
        force=args.force,
    )
    print(f"released {len(r['revisions'])} revisions into {r['repo']} ({len(r['created'])} new); main = {r['main']['revision']}")
    return 0


def cmd_import(args, overrides) -> int:
    no_overrides(overrides, f"'lmforge {args.command}'")
    from lmforge.checkpoint import save_model
    from lmforge.release import import_hf

    model, tokenizer = import_hf(args.model, dtype=parse_dtype(args.dtype))
    out = save_model(args.out, model, tokenizer=tokenizer)
    print(f"imported {args.model} -> {out} ({model.num_params():,} parameters)")
    return 0


def add_commands(sub) -> None:
    e = sub.add_parser("export", help="export an lmforge checkpoint to an HF transformers directory")
    e.add_argument("--model", required=True, help="lmforge checkpoint directory")
    e.add_argument("--out", required=True, help="HF output directory")
    e.add_argument("--tokenizer", default=None, help="tokenizer JSON/dir or name (default: the one saved in the checkpoint)")
    e.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: as saved)")
    e.add_argument("--max-shard-size", default="5GB")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    rl = sub.add_parser("release", help="export every checkpoint of a run as a revision (git branch stepN-tokensM) + model card")
    rl.add_argument("run", help="run directory written by `lmforge train`")
    rl.add_argument("--repo", required=True, help="local model repository (a git repository; created if missing)")
    rl.add_argument("--eval", default=None, help="directory written by `lmforge eval checkpoints` (tables and plots for the card)")
    rl.add_argument("--manifest", default=None, help="data manifest.json (from `lmforge data fetch`) for the card")
    rl.add_argument("--license", default="apache-2.0")
    rl.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: as trained)")
    rl.add_argument("--token-unit", default="auto", choices=["auto", "B", "M", "K"])
    rl.add_argument("--tokenizer", default=None)
    rl.add_argument("--name", default=None, help="model name for the card")
    rl.add_argument("--push", default=None, metavar="REPO_ID", help="also upload every revision to the HF Hub (needs a token)")
    rl.add_argument("--public", action="store_true", help="with --push: create a public repository")
    rl.add_argument("--force", action="store_true", help="with --push: upload even into an existing Hub repository that is not an lmforge release of this repository (its files on main are replaced)")
    rl.set_defaults(func=cmd_release)

    i = sub.add_parser("import", help="import an HF Olmo/Olmo2 directory as an lmforge checkpoint")
    i.add_argument("--model", required=True, help="HF model directory (config.json + safetensors)")
    i.add_argument("--out", required=True, help="lmforge checkpoint directory to write")
    i.add_argument("--dtype", default=None)
    i.set_defaults(func=cmd_import)
