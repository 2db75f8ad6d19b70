"""``lmforge <command>``: thin wrappers over library functions.

    lmforge quickstart [--out DIR] [--minutes M] [--recipe YAML] [--workers N] [--tiny]   the main job (see README)
    lmforge model list | info PRESET [--model.KEY=VALUE ...]
    lmforge tokenizer fetch olmo | train FILES_OR_DIRS... --vocab-size N --out PATH | info PATH_OR_NAME
    lmforge export --model CKPT --out DIR      lmforge checkpoint -> HF directory
    lmforge import --model HF_DIR --out CKPT   HF directory -> lmforge checkpoint
    lmforge import --from olmo-core|olmo DIR --out CKPT   an OLMo-core / OLMo training checkpoint, AdamW state included
    lmforge checkpoint average CKPT... --out DIR [--weights W,...]   a weighted mean of checkpoints
    lmforge release RUN --repo DIR [--eval DIR] [--manifest FILE] [--push REPO_ID [--force]]
    lmforge generate --model PATH [--prompt TEXT ...] [--max-new-tokens N --temperature T ...]
    lmforge train CONFIG [--resume [CKPT]] [--SECTION.KEY=VALUE ...]   (torchrun -m lmforge train ... for N processes)
    lmforge data inspect --run RUN --step N [--jsonl | --out FILE]   (or --release REPO --revision R)
    lmforge data index TOKENS... --out IDX  |  lmforge data count IDX "text"
    lmforge trace --index IDX (--model M --prompt P | --text T) [--json]
    lmforge eval downstream MODEL --tasks arc_easy,hellaswag [--formulation rc_0shot] [--limit N] [--out FILE]
    lmforge eval perplexity MODEL DOMAINS... --out FILE
    lmforge eval checkpoints RUN/checkpoints/step* --out DIR [--tasks ...] [--data DOMAINS...]
    lmforge eval compare A.json B.json

Every error that a user can cause is printed as one line (``lmforge: error: ...``), exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lmforge.config import parse_overrides


def build_parser() -> argparse.ArgumentParser:
    from lmforge.cli import data, eval, generate, release, tokenizer, trace, train

    p = argparse.ArgumentParser(prog="lmforge", description="A truly open language-model framework.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, data, eval, tokenizer, release, generate, trace):
        module.add_commands(sub)
    return p


_USER_ERRORS = [
    ("lmforge.config", "ConfigError"),
    ("lmforge.checkpoint.unsharded", "CheckpointError"),
    ("lmforge.tokenizer.core", "TokenizerError"),
    ("lmforge.data.documents", "DataError"),
    ("lmforge.train.module", "TrainingError"),
    ("lmforge.storage", "OutputLockedError"),
]


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user causes (printed as one line). Looked up among modules already imported: the
    module that raised one is loaded, and ``lmforge data ...`` never has to import torch."""
    found = tuple(getattr(sys.modules[m], n) for m, n in _USER_ERRORS if m in sys.modules)
    return found + (FileNotFoundError,)


def _disk_full(e: BaseException) -> bool:
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    dotted = [a for a in rest if a.startswith("--") and "=" in a]
    unknown = [a for a in rest if a not in dotted]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        overrides = parse_overrides(dotted)
        return int(args.func(args, overrides) or 0)
    except Exception as e:
        if _disk_full(e):  # outputs are written atomically: what was published before is whole
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"lmforge: error: {where}{e.strerror}; free space and rerun the same command (finished work is kept)", file=sys.stderr)
            return 2
        if not isinstance(e, _user_errors()):
            raise
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmforge ... | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
