"""What every revision carries so that anyone with the corpus can rebuild any batch it trained on.

Each revision branch of a release holds, besides the model, ``training/``:

    training/config.yaml       the run's config (data mixture, seed, batch size, sequence length)
    training/data_order.json   the data order's fingerprint, as the trainer recorded it at the start
                               (mix sha256, every token file's size, instances per source)
    training/token_files.json  the token-file manifest: every token file of the mixture and its
                               metadata file, with size and sha256

and ``lmforge data inspect --release REPO --revision stepN-tokensM --step K`` reads them from the
repository (no checkout needed), checks the local corpus against the manifest (size and sha256 of
every file: a changed corpus is a one-line error naming the file) and prints batch K as
``lmforge data inspect --run`` does. Checksums are computed once per release (and per file: every
revision shares them) and cached in the repository's git directory, keyed by path, size and mtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

from lmforge.config import atomic_write_text, sha256_file
from lmforge.release.errors import ReleaseError

__all__ = ["TRAINING_DIR", "TrainingFiles", "inspect_revision", "token_file_manifest"]

TRAINING_DIR = "training"
CONFIG, DATA_ORDER, TOKEN_FILES = "config.yaml", "data_order.json", "token_files.json"
_CACHE = "lmforge-sha256-cache.json"


def _metadata_of(path: str) -> str | None:
    return path[: -len(".npy")] + ".csv.gz" if path.endswith(".npy") and os.path.isfile(path[: -len(".npy")] + ".csv.gz") else None


class _Checksums:
    """sha256 of files, cached by (path, size, mtime) in a JSON file (best effort)."""

    def __init__(self, cache_path: Path | None):
        self.path = cache_path
        self.known: dict[str, str] = {}
        if cache_path is not None and cache_path.is_file():
            try:
                self.known = json.loads(cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.known = {}
        self.dirty = False

    def __call__(self, path: str) -> tuple[int, str]:
        st = os.stat(path)
        key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self.known:
            self.known[key] = sha256_file(path)
            self.dirty = True
        return st.st_size, self.known[key]

    def save(self) -> None:
        if self.path is not None and self.dirty:
            try:
                atomic_write_text(self.path, json.dumps(self.known, indent=0) + "\n")
            except OSError:
                pass


def _locate(path: str, bases: list[Path]) -> str | None:
    """``path`` as recorded (relative: to the directory training ran in), else under one of ``bases``."""
    if os.path.isfile(path):
        return path
    if not os.path.isabs(path):
        for base in bases:
            if (base / path).is_file():
                return str(base / path)
    return None


def token_file_manifest(order: dict[str, Any], checksums: Any = None, *, bases: list[Path] | None = None,
                        warn: Any = None) -> dict[str, Any]:
    """``{"files": [{"source", "path", "bytes", "sha256", "metadata": {"path", "bytes", "sha256"} | None}]}``
    for the token files a data order (``data_order.json``) names; ``path`` as the order records it.
    A file not found (here or under ``bases``) is listed with its recorded size and ``sha256: null``,
    and ``warn`` is told."""
    checksums = checksums or _Checksums(None)
    files = []
    for f in order.get("files", []):
        path = f["path"]
        found = _locate(path, bases or [])
        entry: dict[str, Any] = {"source": f.get("source"), "path": path, "bytes": f.get("bytes"), "sha256": None, "metadata": None}
        if found is None:
            if warn is not None:
                warn(f"release: token file {path} not found here; its sha256 is not recorded (release from where the run was trained)")
        else:
            entry["bytes"], entry["sha256"] = checksums(found)
            meta = _metadata_of(found)
            if meta is not None:
                msize, mdigest = checksums(meta)
                entry["metadata"] = {"path": path[: -len(".npy")] + ".csv.gz", "bytes": msize, "sha256": mdigest}
        files.append(entry)
    return {"format": "lmforge.token_files/1", "files": files}


class TrainingFiles:
    """The ``training/`` files of a run, computed once per release and written into each revision."""

    def __init__(self, run: Path, git_dir: Path | None = None, warn: Any = None):
        self.run, self.warn = run, warn
        self.config = run / CONFIG
        order_path = run / DATA_ORDER
        self.order = json.loads(order_path.read_text(encoding="utf-8")) if order_path.is_file() else None
        self._manifest: dict[str, Any] | None = None
        self._checksums = _Checksums(git_dir / _CACHE if git_dir is not None else None)

    def manifest(self) -> dict[str, Any] | None:
        if self.order is None:
            return None
        if self._manifest is None:
            bases = list(self.run.resolve().parents)  # a relative path was relative to where training ran
            self._manifest = token_file_manifest(self.order, self._checksums, bases=bases, warn=self.warn)
            self._checksums.save()
        return self._manifest

    def write(self, out: Path) -> list[str]:
        """Write into ``out/training/``; returns the names written."""
        d = out / TRAINING_DIR
        d.mkdir(parents=True, exist_ok=True)
        written = []
        if self.config.is_file():
            atomic_write_text(d / CONFIG, self.config.read_text(encoding="utf-8"))
            written.append(CONFIG)
        if self.order is not None:
            atomic_write_text(d / DATA_ORDER, json.dumps(self.order, indent=1) + "\n")
            atomic_write_text(d / TOKEN_FILES, json.dumps(self.manifest(), indent=1) + "\n")
            written += [DATA_ORDER, TOKEN_FILES]
        return written


def _git_show(repo: Path, revision: str, name: str) -> str | None:
    r = subprocess.run(["git", "-C", str(repo), "show", f"{revision}:{TRAINING_DIR}/{name}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def inspect_revision(repo: str | os.PathLike, revision: str, step: int, *, world_size: int = 1) -> Iterator[dict[str, Any]]:
    """Batch ``step`` as the run of ``revision`` trained on it, rebuilt from the revision's
    ``training/`` files and the local corpus (checked against the manifest first)."""
    from lmforge.data.inspect import inspect_step

    repo = Path(repo)
    if not (repo / ".git").exists():
        raise ReleaseError(f"{repo}: not a model repository (no .git); pass the directory `lmforge release` wrote")
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", revision], capture_output=True).returncode:
        raise ReleaseError(f"{repo}: no revision {revision!r}")
    config, order, manifest = (_git_show(repo, revision, n) for n in (CONFIG, DATA_ORDER, TOKEN_FILES))
    if config is None or order is None or manifest is None:
        raise ReleaseError(f"{repo}@{revision}: has no {TRAINING_DIR}/{{{CONFIG}, {DATA_ORDER}, {TOKEN_FILES}}} "
                           "(released before lmforge recorded them, or a run without a data order)")
    for f in json.loads(manifest)["files"]:
        for entry in (f, f.get("metadata")):
            if entry is None:
                continue
            path = entry["path"]
            if not os.path.isfile(path):
                raise ReleaseError(f"{path}: not found; the corpus of {revision} must be at the paths its {TOKEN_FILES} names "
                                   "(run from where it was trained, or place the files there)")
            if os.path.getsize(path) != entry["bytes"] or (entry["sha256"] is not None and sha256_file(path) != entry["sha256"]):
                raise ReleaseError(f"{path}: differs from the file {revision} was trained on (size or sha256 in {TOKEN_FILES}); "
                                   "the batch rebuilt from it would not be the one trained on")
    with tempfile.TemporaryDirectory(prefix="lmforge-inspect-") as tmp:
        run = Path(tmp)
        (run / CONFIG).write_text(config, encoding="utf-8")
        (run / DATA_ORDER).write_text(order, encoding="utf-8")
        yield from inspect_step(run, step, world_size=world_size)
