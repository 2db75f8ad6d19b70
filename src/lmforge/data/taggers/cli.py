"""``lmforge data tag``: the command-line face of :func:`lmforge.data.taggers.tag` (kept thin)."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

from lmforge.data.documents import DataError
from lmforge.data.taggers.base import list_taggers


def parse_options(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["language.top_k=1", "stats.tokenizer_path=tok.json"]`` -> ``{"language": {"top_k": 1}, ...}``
    (values are read as JSON when they parse, else kept as strings)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        tagger, dot, opt = key.partition(".")
        if not sep or not dot or not tagger or not opt:
            raise DataError(f"tagger option {item!r} must look like TAGGER.OPTION=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(tagger, {})[opt] = value
    return out


def cmd_tag(
    documents: Sequence[str],
    taggers: Sequence[str],
    experiment: str,
    workers: int = 1,
    overwrite: bool = False,
    options: Sequence[str] | None = None,
    progress: bool = True,
) -> int:
    """Run the taggers; print the accounting. Returns the exit status (0 ok, 1 a data error, with a
    one-line message on stderr; 1 too when a shard was damaged, after tagging what could be read)."""
    from lmforge.data.taggers import tag

    if not taggers:
        print(f"error: no taggers given; known taggers: {', '.join(list_taggers())}", file=sys.stderr)
        return 1
    try:
        acct = tag(documents, taggers, experiment, workers=workers, overwrite=overwrite, options=parse_options(options), progress=progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"tagged ({', '.join(taggers)}) as {experiment!r}: {acct.summary_line()}")
    for err in acct.errors:
        print(f"warning: {err}", file=sys.stderr)
    return 1 if acct.errors else 0
