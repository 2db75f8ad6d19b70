"""One source of ``lmforge data fetch``: its package fetched (:func:`fetch_archives`), its files
selected and unpacked in order (:class:`lmforge.corpus.archives.PackageFiles`), their text extracted
into documents (:func:`process_source` of a :class:`SourceTask`, picklable so that sources run in
worker processes).

The clients get ``--`` before the package, whose name and version the recipe checked
(:meth:`lmforge.corpus.fetch.SourceConfig.validate`); ``pip_sdist`` reads the package index itself
(:mod:`lmforge.corpus.pypi_index`): no code of a package runs. Everything recorded (the source's
``sources/<name>.json``, ``downloads/<name>/request.json``) has its credentials masked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmforge.config import sha256_file
from lmforge.corpus.archives import FetchError, PackageFiles, safe_relative_path
from lmforge.corpus.fetch_config import ClientsConfig, SourceConfig
from lmforge.data.documents import AtomicWriter, DataError
from lmforge.corpus.extractors import Piece, SkipFile, get_extractor
from lmforge.redact import redact_secrets, redact_text
from lmforge.storage import atomic_write_text, commit_file, fsync_dir, fsync_file

__all__ = ["SourceTask", "fetch_archives", "glob_regex", "holdout", "process_source"]

SPLIT_DIRS = {"train": "documents", "validation": "validation", "heldout": "heldout"}
ROUND_MIN_BYTES = 1 << 20  # a capped source unpacks max(4 x its cap, this) bytes of files at a time (more each round)


# --- globs ------------------------------------------------------------------------------------------
def glob_regex(pattern: str) -> re.Pattern:
    """A glob on ``/``-separated paths: ``*`` and ``?`` stay within a directory, ``**`` crosses them
    (``**/`` also matches no directory), ``[...]`` is a character class (``[!...]`` negated)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            body = ("^" + body[1:]) if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class _Matcher:
    def __init__(self, patterns: list[str]):
        self.rx = [glob_regex(p.lstrip("/")) for p in patterns]

    def __call__(self, rel: str) -> bool:
        return any(r.match(rel) for r in self.rx)


def _walk_dir(root: Path, strip: int = 0) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the regular files under ``root`` (symlinks skipped), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            p = Path(dirpath) / fn
            if p.is_symlink() or not p.is_file():
                continue
            rel = safe_relative_path(p.relative_to(root).as_posix(), strip)
            if rel is not None:
                out.append((rel, p))
    yield from sorted(out)


# --- clients ----------------------------------------------------------------------------------------
def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    errors = [ln for ln in lines if re.search(r"\berror\b|^E:|ERR!|not found|No matching|Unable to", ln, re.IGNORECASE)]
    pick = errors[-1] if errors else (lines[-1] if lines else "no output")
    return pick[:300]


def _run_client(cmd: list[str], cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", NPM_CONFIG_UPDATE_NOTIFIER="false", NO_UPDATE_NOTIFIER="1",
               NPM_CONFIG_FUND="false", NPM_CONFIG_AUDIT="false")
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FetchError(f"client missing: {cmd[0]!r} not found (install it, or point clients.* in the recipe at it)") from None
    except PermissionError:
        raise FetchError(f"client not runnable: {cmd[0]!r} (permission denied)") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what} timed out after {timeout:.0f}s (clients.timeout_s)") from None
    if r.returncode != 0:
        raise FetchError(f"{what} failed (exit {r.returncode}): {_last_error(redact_text(r.stderr + chr(10) + r.stdout))}")
    return r


_SDIST = re.compile(r"^(?P<name>.+)-(?P<version>\d[^-]*?)\.(?:tar\.gz|tar\.bz2|tar\.xz|zip|tgz)$")


def _pip_version(filename: str) -> str | None:
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 else None
    m = _SDIST.match(filename)
    return m.group("version") if m else None


def _download(src: SourceConfig, clients: ClientsConfig, tmp: Path) -> tuple[list[Path], dict[str, Any]]:
    """Fetch ``src``'s archives into ``tmp``; (the archives, what is known about them). Package and
    version were validated (:meth:`SourceConfig.validate`) and follow ``--``: never an option."""
    info: dict[str, Any] = {}
    pip = clients.pip or [sys.executable, "-m", "pip"]
    if src.kind == "pip_sdist":  # the index's file list: pip download would build the sdist to read its metadata
        from lmforge.corpus.pypi_index import fetch_sdist

        path, info = fetch_sdist(src.package, src.version, tmp, pip=pip, pip_args=clients.pip_args,
                                 timeout=clients.timeout_s, max_bytes=clients.max_download_bytes)
        return [path], info
    if src.kind == "pip_wheel":
        # Left to pip: with --only-binary :all: and --no-deps it resolves one wheel and copies it, and a
        # wheel is unpacked, never built, so no code of the package runs; pip brings all of its own
        # configuration (find-links, constraints, platform tags, keyring) that a reimplementation would not.
        spec = f"{src.package}=={src.version}" if src.version else src.package
        cmd = [*pip, "download", "--no-deps", "--only-binary", ":all:", *clients.pip_args, "-d", str(tmp), "--", spec]
        _run_client(cmd, tmp, clients.timeout_s, f"pip download {spec}")
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        if files:
            info["version"] = _pip_version(files[0].name)
        info["client"] = f"pip download --no-deps --only-binary :all: -- {spec}"
    elif src.kind == "deb":
        spec = f"{src.package}={src.version}" if src.version else src.package
        cmd = [clients.apt_get, "download", "--", spec]
        _run_client(cmd, tmp, clients.timeout_s, f"apt-get download {spec}")
        files = sorted(tmp.glob("*.deb"))
        info["client"] = f"apt-get download -- {spec}"
    elif src.kind == "npm":
        spec = f"{src.package}@{src.version}" if src.version else src.package
        r = _run_client([clients.npm, "pack", "--json", "--ignore-scripts", "--", spec], tmp, clients.timeout_s, f"npm pack {spec}")
        files = sorted(tmp.glob("*.tgz"))
        try:
            packed = json.loads(r.stdout)
            if isinstance(packed, list) and packed and isinstance(packed[0], dict):
                info["version"] = packed[0].get("version")
                info["integrity"] = packed[0].get("integrity")
        except json.JSONDecodeError:
            pass
        info["client"] = f"npm pack --json --ignore-scripts -- {spec}"
    else:
        raise AssertionError(src.kind)
    if not files:
        raise FetchError(f"{info.get('client', src.kind)} succeeded but wrote no archive")
    return files, info


def fetch_archives(src: SourceConfig, clients: ClientsConfig, out: Path, work: Path, keep: bool) -> tuple[list[Path], dict[str, Any], bool]:
    """The source's archives: reused from OUT/downloads/<name>/ when the same request fetched them
    before (and they still have the sha256 recorded, where one was), else downloaded. Returns (files,
    info, reused)."""
    request = redact_secrets({"kind": src.kind, "package": src.package, "version": src.version, "pip_args": clients.pip_args,
                              **({"via": "simple index"} if src.kind == "pip_sdist" else {})})
    ddir = out / "downloads" / src.name
    record = ddir / "request.json"
    if keep and record.is_file():
        try:
            prev = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prev = {}
        files = [ddir / f for f in prev.get("files", [])]
        sums = prev.get("sha256", {})
        if prev.get("request") == request and files and all(f.is_file() and sums.get(f.name, "-") in ("-", sha256_file(f)) for f in files):
            return files, prev.get("info", {}), True
    tmp = Path(tempfile.mkdtemp(dir=work, prefix="download-"))
    files, info = _download(src, clients, tmp)
    if not keep:
        return files, info, False
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    moved = [commit_file(f, ddir / f.name) for f in files]  # on disk before the record that vouches for them
    rec = {"request": request, "files": [f.name for f in moved], "sha256": {f.name: sha256_file(f) for f in moved}, "info": info}
    atomic_write_text(record, json.dumps(redact_secrets(rec), indent=1))
    return moved, info, False


# --- one source -------------------------------------------------------------------------------------
def holdout(doc_id: str, fraction: float, salt: str = "") -> bool:
    """Whether ``doc_id`` is in the held-out ``fraction``: the first 8 bytes of sha256(salt + id) as a
    number in [0, 1) below ``fraction``. Deterministic, independent of order and of the other documents.
    (``sample`` uses the salt ``"sample:"``, so sampling and holding out are independent.)"""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256((salt + doc_id).encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < fraction


def _file_order(rel: str, order: str) -> tuple:
    return (hashlib.sha256(rel.encode("utf-8")).hexdigest(), rel) if order == "hash" else (rel,)


def _output_path(out: Path, split: str, domain: str, name: str) -> Path:
    return out / SPLIT_DIRS[split] / domain / f"{name}.jsonl.gz"


def _remove_outputs(out: Path, entry: dict[str, Any] | None, keep: set[str] = frozenset()) -> None:
    for o in (entry or {}).get("outputs", []):
        if o["path"] not in keep:
            p = out / o["path"]
            if p.is_file():
                p.unlink()


class _Docs:
    """The output files of one source, written atomically, with what went into each."""

    def __init__(self, out: Path, src: SourceConfig):
        self.out, self.src = out, src
        self.writers: dict[str, AtomicWriter] = {}
        self.counts: dict[str, list[int]] = {}  # split -> [documents, text bytes]

    def write(self, split: str, doc: dict[str, Any], nbytes: int) -> None:
        if split not in self.writers:
            self.writers[split] = AtomicWriter(_output_path(self.out, split, self.src.domain, self.src.name))
            self.counts[split] = [0, 0]
        self.writers[split].write(doc)
        self.counts[split][0] += 1
        self.counts[split][1] += nbytes

    def close(self) -> list[dict[str, Any]]:
        outputs = []
        for split, w in self.writers.items():
            path = w.close()
            fsync_file(path)  # on disk before sources/<name>.json vouches for it
            fsync_dir(path.parent)
            outputs.append({"split": split, "path": path.relative_to(self.out).as_posix(), "documents": self.counts[split][0],
                            "text_bytes": self.counts[split][1], "file_bytes": path.stat().st_size, "sha256": sha256_file(path)})
        return outputs

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def _environment_error(e: BaseException) -> bool:
    """A problem of this machine, not of the file: out of memory, or an OSError with an errno (no
    space, I/O error, a file gone). Format errors (``gzip.BadGzipFile``...) have no errno."""
    return isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno is not None)


def _pieces(ex, files: Iterable[tuple[str, Path | str]], opts: dict, group_bytes: int, skipped: Counter) -> Iterator[tuple[str, str, dict | None, str]]:
    """(rel, key, meta, text) of every (grouped) piece of every file; a file given as a reason (str)
    is counted in ``skipped``."""
    for rel, path in files:
        if isinstance(path, str):
            skipped[path] += 1
            continue
        try:
            buf: list[Piece] = []
            size = 0
            for piece in ex.fn(path, rel, opts):
                text = piece.text
                if not text or not text.strip():
                    skipped["empty piece"] += 1
                    continue
                if group_bytes <= 0:
                    yield rel, piece.key, piece.meta, text
                    continue
                buf.append(piece)
                size += len(text.encode("utf-8"))
                if size >= group_bytes:
                    yield rel, buf[0].key, (buf[0].meta if len(buf) == 1 else {"pieces": len(buf)}), "\n\n".join(p.text for p in buf)
                    buf, size = [], 0
            if buf:
                yield rel, buf[0].key, (buf[0].meta if len(buf) == 1 else {"pieces": len(buf)}), "\n\n".join(p.text for p in buf)
        except SkipFile as e:
            skipped[str(e)] += 1
        except Exception as e:  # one malformed file does not cost the whole source; it is counted by reason
            if _environment_error(e):  # ... but a failing machine fails the source, so that a rerun redoes it
                raise FetchError(f"{rel}: {type(e).__name__}: {e} (a problem of this machine, not of the file; the next run redoes the source)") from None
            skipped[f"unreadable ({type(e).__name__}: {str(e)[:80]})"] += 1


@dataclasses.dataclass(frozen=True)
class SourceTask:
    """One source's work (picklable: it crosses to worker processes). The driver fills ``spec_hash``
    from the settings a finished source's output depends on (:mod:`lmforge.corpus.fetch` keeps it
    in the source's record: a rerun with the same hash resumes)."""

    source: dict[str, Any]  # SourceConfig.to_dict()
    clients: dict[str, Any]  # ClientsConfig.to_dict()
    imports: tuple[str, ...]  # modules that register more extractors
    out: str
    max_bytes: int | None
    document_source: str  # "domain" or "source": what a document's top-level "source" holds
    heldout_fraction: float
    local_path: str | None
    keep_downloads: bool
    format: int
    previous: dict[str, Any] | None  # the source's record from an earlier run
    work: str
    spec_hash: str


def process_source(task: SourceTask) -> dict[str, Any]:
    """Fetch, unpack and extract one source (a picklable task, so sources can run in worker
    processes); returns its manifest entry (credentials masked). Never raises for a problem with the
    source itself."""
    for mod in task.imports:
        importlib.import_module(mod)
    src = SourceConfig.from_dict(task.source)
    clients = ClientsConfig.from_dict(task.clients)
    out = Path(task.out)
    previous = task.previous
    t0 = time.perf_counter()
    entry = _new_entry(src, task)
    work = Path(tempfile.mkdtemp(dir=task.work, prefix=f"{src.name}-"))
    docs = _Docs(out, src)
    try:
        ex = get_extractor(src.extractor)
        opts = ex.resolve_options(src.options, f"source '{src.name}'")
        t = time.perf_counter()
        local, archives = _package(src, clients, task, out, work, entry)
        entry["seconds"]["fetch"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        files, pkg = _select_files(src, task, ex, local, archives, work, entry)
        skipped = _extract(src, task, ex, opts, files, docs, entry)
        if pkg is not None:
            entry["unpacked_bytes"] = pkg.tally.bytes
        if not docs.writers:
            reasons = ", ".join(f"{k} {v}" for k, v in skipped.most_common(3))
            raise FetchError(f"no text extracted from {entry['files_matched']} matching files" + (f" ({reasons})" if reasons else ""))
        _record_outputs(entry, docs.close())
        _remove_outputs(out, previous, {o["path"] for o in entry["outputs"]})  # e.g. the domain changed
        entry["status"] = "ok"
        entry["seconds"]["extract"] = round(time.perf_counter() - t, 2)
    except Exception as e:  # a bad source never stops the others: it is recorded with its reason
        docs.abort()
        _remove_outputs(out, previous)
        entry["outputs"] = []
        entry["reason"] = str(e) if isinstance(e, (FetchError, DataError)) else f"{type(e).__name__}: {e}"
    except BaseException:  # interrupted: no half-written file is left behind; the rerun redoes this source
        docs.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    entry["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    entry = redact_secrets(entry)
    atomic_write_text(out / "sources" / f"{src.name}.json", json.dumps(entry, indent=1, ensure_ascii=False))
    return entry


def _new_entry(src: SourceConfig, task: SourceTask) -> dict[str, Any]:
    """The source's manifest entry before anything is done (its keys in the order they are written)."""
    return {
        "name": src.name, "kind": src.kind, "package": src.package or ("python" if src.kind == "stdlib" else ""),
        "version_requested": src.version, "version": src.version, "license": src.license, "domain": src.domain,
        "split": src.split, "extractor": src.extractor, "status": "skipped", "reason": None, "spec_hash": task.spec_hash,
        "downloads": [], "documents": 0, "bytes": 0, "validation_documents": 0, "validation_bytes": 0,
        "files_matched": 0, "skipped": {}, "truncated": False, "outputs": [], "seconds": {},
    }


def _package(src: SourceConfig, clients: ClientsConfig, task: SourceTask, out: Path, work: Path,
             entry: dict[str, Any]) -> tuple[Path | None, list[Path]]:
    """Step 1, the package: ``(local directory or None, archives to unpack)``; what the client
    reports (version, URL, sha256...) goes into ``entry``."""
    local = Path(task.local_path) if task.local_path else None
    if src.kind == "stdlib" and local is None:
        local = Path(sysconfig.get_paths()["stdlib"])
        entry["version"] = platform.python_version()
        entry["python"] = sys.version
    archives: list[Path] = []
    if local is not None:
        if not local.exists():
            raise FetchError(f"local: {local} does not exist")
        if local.is_file():
            archives = [local]
        entry["local"] = str(local)
    else:
        archives, info, reused = fetch_archives(src, clients, out, work, task.keep_downloads)
        entry["client"] = info.get("client")
        entry["downloads_reused"] = reused
        for k in ("version", "url", "sha256", "index", "yanked"):
            if info.get(k):
                entry[k] = info[k]
        if info.get("integrity"):
            entry["npm_integrity"] = info["integrity"]
    return local, archives


def _select_files(src: SourceConfig, task: SourceTask, ex, local: Path | None, archives: list[Path], work: Path,
                  entry: dict[str, Any]) -> tuple[Iterable[tuple[str, Path | str]], PackageFiles | None]:
    """Step 2, the files the recipe selects, in order: ``(files, the PackageFiles of archives or None)``.
    From archives they are unpacked as the text is taken (a cap stops unpacking early)."""
    include, exclude, companions = _Matcher(src.files), _Matcher(src.exclude), _Matcher(list(ex.companions))

    def selected(rel: str) -> bool:
        return include(rel) and not exclude(rel)

    cap = task.max_bytes
    files: Iterable[tuple[str, Path | str]]
    pkg = None
    if archives:
        for a in archives:
            entry["downloads"].append({"file": a.name, "bytes": a.stat().st_size, "sha256": sha256_file(a)})
        pkg = PackageFiles(archives, work / "unpacked", selected, companions, strip=src.strip, key=lambda r: _file_order(r, src.order),
                           limits=src.limits, round_bytes=None if cap is None else max(4 * cap, ROUND_MIN_BYTES))
        members = sum(i["members"] for i in pkg.infos)
        sample = [s for i in pkg.infos for s in i["sample"]]
        entry["links_skipped"] = sum(i["links"] for i in pkg.infos)
        for a, i in zip(archives, pkg.infos, strict=True):
            ctl = i.get("control")
            if ctl:
                entry["version"] = ctl.get("Version", entry["version"])
                if ctl.get("Package") and ctl["Package"] != src.package and src.kind == "deb":
                    raise FetchError(f"{a.name} holds package {ctl['Package']!r}, not {src.package!r}")
        if src.kind in ("pip_sdist", "pip_wheel") and entry["version"] is None:
            entry["version"] = _pip_version(archives[0].name)
        files, matched = pkg, len(pkg.files)
    else:
        tree = hashlib.sha256()
        listed, members, sample = [], 0, []
        for rel, p in _walk_dir(local, 0 if src.kind == "stdlib" else (src.strip_components or 0)):
            members += 1
            if len(sample) < 5:
                sample.append(rel)
            if selected(rel):
                listed.append((rel, p))
                tree.update(rel.encode() + b"\0" + bytes.fromhex(sha256_file(p)))
        entry["tree_sha256"] = tree.hexdigest()
        listed.sort(key=lambda f: _file_order(f[0], src.order))
        files, matched = listed, len(listed)
    entry["files_matched"] = matched
    if not matched:
        raise FetchError(
            f"no file matches files {src.files}" + (f" minus exclude {src.exclude}" if src.exclude else "")
            + f" among the package's {members} files (e.g. {', '.join(sample[:3]) or 'none'})"
        )
    return files, pkg


def _extract(src: SourceConfig, task: SourceTask, ex, opts: dict, files: Iterable[tuple[str, Path | str]], docs: _Docs,
             entry: dict[str, Any]) -> Counter:
    """Step 3, text -> documents: sampled, capped at ``max_bytes``, split into train, validation and
    held out, written to ``docs``. Returns (and records) what was skipped, by reason."""
    cap = task.max_bytes
    frac = task.heldout_fraction if src.split == "train" else 0.0
    skipped: Counter = Counter()
    total = 0
    meta_base = {"source": src.name, "package": entry["package"], "version": entry["version"], "license": src.license, "domain": src.domain}
    top_source = src.domain if task.document_source == "domain" else src.name
    for rel, key, meta, text in _pieces(ex, files, opts, src.group_bytes, skipped):
        doc_id = f"{src.name}:{rel}" + (f"#{key}" if key is not None else "")
        if src.sample is not None and src.sample < 1 and not holdout(doc_id, src.sample, "sample:"):
            entry["sampled_out"] = entry.get("sampled_out", 0) + 1
            continue
        nbytes = len(text.encode("utf-8"))
        if cap is not None and total + nbytes > cap:
            entry["truncated"] = True
            break
        total += nbytes
        md = {**meta_base, "path": rel}
        if meta:
            md.update({k: v for k, v in meta.items() if k not in md})
        split = "heldout" if src.split == "heldout" else ("validation" if holdout(doc_id, frac) else "train")
        docs.write(split, {"id": doc_id, "text": text, "source": top_source, "metadata": md}, nbytes)
    entry["skipped"] = dict(sorted(skipped.items()))  # files and pieces left out, by reason
    return skipped


def _record_outputs(entry: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
    """The written files and the documents and bytes of the training and validation splits."""
    entry["outputs"] = outputs
    for o in outputs:
        if o["split"] == "validation":
            entry["validation_documents"], entry["validation_bytes"] = o["documents"], o["text_bytes"]
        else:
            entry["documents"], entry["bytes"] = o["documents"], o["text_bytes"]
