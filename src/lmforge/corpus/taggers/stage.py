"""The tagging stage: run several taggers over each document shard in one pass.

Output follows Dolma: for ``ROOT/documents/x.jsonl.gz`` and experiment ``EXP`` the attributes go to
``ROOT/attributes/EXP/x.jsonl.gz``, one line per document::

    {"id": "...", "attributes": {"EXP__tagger__key": [[start, end, score], ...]}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from lmforge.config import atomic_write_text
from lmforge.data.documents import (
    Accounting,
    DataError,
    TruncatedFileError,
    attribute_dir,
    attributes_path,
    list_shards,
    read_documents,
    write_attributes,
)
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.corpus.taggers.base import Tagger, get_tagger, tagger_class
from lmforge.storage import lock_output, remove_stale_temporaries

SUMMARY_NAME = "_summary.json"


@dataclasses.dataclass(frozen=True)
class TagTask:
    """One shard's work (picklable: it crosses to worker processes)."""

    doc_path: str
    taggers: tuple[str, ...]
    experiment: str
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # tagger -> options
    overwrite: bool = False


def _check_experiment(name: str) -> None:
    if not name or "/" in name or "__" in name or name.startswith((".", "_")):
        raise DataError(f"experiment name {name!r} must be non-empty, without '/' or '__', not starting with '.' or '_'")


def make_taggers(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> dict[str, Tagger]:
    options = options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise DataError(f"options given for taggers not run: {', '.join(sorted(unknown))}")
    if len(set(names)) != len(names):
        raise DataError(f"a tagger is named twice in {list(names)}")
    return {name: get_tagger(name, **options.get(name, {})) for name in names}


def tag_shard(task: TagTask) -> Accounting:
    """Tag one shard with every tagger in ``task.taggers``, reading it once.

    Writes one attribute file (atomically) at ``attributes_path(doc_path, experiment)`` with keys
    ``f"{experiment}__{tagger}__{key}"``, one line per *valid* document, in document order. Malformed
    lines (bad JSON, no text or id, empty text, invalid UTF-8) get no attribute line; they are
    recorded in the returned Accounting (``malformed``, with ``file:line`` examples). Dolma 1.2.1
    instead fails the whole shard on such a line, so on clean input the two layouts are identical;
    a reader aligning attributes with documents must skip the same lines (``read_documents`` does).

    Every valid document tagged counts as ``kept``. A compressed shard damaged part-way is tagged up
    to the damage (the documents any reader can get) and the problem is recorded in ``errors``.

    If the attribute file already exists the shard is skipped (a rerun resumes) and an empty
    Accounting is returned, unless ``task.overwrite``.
    """
    out_path = attributes_path(task.doc_path, task.experiment)
    acct = Accounting()
    if out_path.exists() and not task.overwrite:
        return acct
    taggers = make_taggers(task.taggers, task.options)
    prefixes = {name: f"{task.experiment}__{name}__" for name in taggers}

    def rows() -> Iterable[tuple[str, dict[str, list]]]:
        try:
            for doc in read_documents(task.doc_path, acct):
                attrs: dict[str, list] = {}
                for name, tagger in taggers.items():
                    try:
                        result = tagger.tag(doc)
                    except DataError:
                        raise
                    except Exception as e:
                        raise DataError(f"{task.doc_path}: tagger {name!r} failed on document {doc.id!r}: {type(e).__name__}: {e}") from e
                    prefix = prefixes[name]
                    for key, spans in result.items():
                        attrs[prefix + key] = spans
                acct.keep()
                yield doc.id, attrs
        except TruncatedFileError as e:
            acct.errors.append(str(e))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_attributes(out_path, rows())
    acct.check()
    return acct


def tag(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    taggers: Sequence[str],
    experiment: str,
    *,
    workers: int = 1,
    overwrite: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    executor: ExecutorConfig | None = None,
) -> Accounting:
    """Tag every shard under ``paths`` (files, directories, globs) with ``taggers``; shards whose
    attribute file exists are skipped unless ``overwrite``. Writes a summary to
    ``ROOT/attributes/<experiment>/_summary.json`` (ROOT of the first shard, in sorted order) and returns the merged
    Accounting of the shards tagged in this run."""
    _check_experiment(experiment)
    taggers = tuple(taggers)
    if not taggers:
        raise DataError("no taggers given")
    options = {k: dict(v) for k, v in (options or {}).items()}
    for name in taggers:
        tagger_class(name)  # unknown names fail here, before any work
    make_taggers(taggers, options)  # option errors too (taggers load models lazily, so this is cheap)
    shards = list_shards(paths)
    if not shards:
        raise DataError(f"no document files found in {paths}")
    for s in shards:
        attributes_path(s, experiment)  # every shard must be in the Dolma layout, before any work
    with contextlib.ExitStack() as locks:  # one tag run at a time writes an experiment's attributes
        for d in sorted({_experiment_dir(s, experiment) for s in shards}):
            locks.enter_context(lock_output(d, f"lmforge data tag --experiment {experiment}"))
            remove_stale_temporaries(d, recursive=True)  # left by killed runs (we hold the lock: no live run's)
        return _tag_locked(shards, taggers, experiment, options, overwrite, workers, progress, executor)


def _tag_locked(shards: list[Path], taggers: tuple[str, ...], experiment: str, options: dict, overwrite: bool, workers: int, progress: bool,
                executor: ExecutorConfig | None) -> Accounting:
    tasks = [TagTask(str(s), taggers, experiment, options, overwrite) for s in shards]
    skipped = sum(1 for t in tasks if not overwrite and attributes_path(t.doc_path, experiment).exists())
    t0 = time.perf_counter()
    results = run_tasks(tag_shard, tasks, workers=workers, executor=executor, desc=f"tag {experiment}", progress=progress,
                        describe=lambda t: t.doc_path)
    seconds = time.perf_counter() - t0
    total = Accounting()
    for r in results:
        total.merge(r)
    total.check()
    summary_dir = _experiment_dir(shards[0], experiment)
    summary = {
        "experiment": experiment,
        "taggers": list(taggers),
        "options": options,
        "shards": len(shards),
        "shards_skipped": skipped,
        "seconds": round(seconds, 3),
        "accounting": total.to_json(),
    }
    summary_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(summary_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return total


def _experiment_dir(doc_path: str | os.PathLike, experiment: str) -> Path:
    """``ROOT/attributes/<experiment>`` for a shard under ``ROOT/documents/``."""
    return attribute_dir(doc_path, experiment)
