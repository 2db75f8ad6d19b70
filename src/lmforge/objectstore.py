"""Object-store paths: every data stage's inputs and outputs may be fsspec URLs (``s3://``, ``gs://``,
``hf://``, ``memory://``, or local paths).

    p = as_path("s3://bucket/corpus/documents/part-0.jsonl.gz")   # a RemotePath; local text -> Path
    p.exists(), p.stat().st_size, p.parent / "x", p.open("rb"), sorted(p.parent.glob("*.gz"))

A :class:`RemotePath` has the few ``pathlib.Path`` operations the stages use, so their code is the
same for both. Writes are never partial on an object store: :mod:`lmforge.storage` writes a local
temporary file (fsync'd) and publishes it with one PUT (:func:`upload`), which an object store makes
visible whole or not at all; there are no directories (``mkdir`` does nothing) and no stale
temporaries. Done-markers are published after the objects they vouch for, as on a file system.

Credentials and endpoints come from the usual places (the AWS environment variables and files for
``s3://``, ``gcloud`` for ``gs://``, ``HF_TOKEN`` for ``hf://``) or from fsspec's environment
configuration, e.g. ``FSSPEC_S3_ENDPOINT_URL=http://127.0.0.1:9000`` for a MinIO or moto server.
Output locks (:func:`lmforge.storage.lock_output`) are local ``flock``\\ s and do not apply to URLs: on
an object store, one command (or one plan) per output prefix is the user's to keep.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import re
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["INSTALL", "RemotePath", "as_path", "is_url", "staged_directory", "upload"]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
INSTALL = {"s3": 'pip install "lmforge[s3]"', "gs": 'pip install "lmforge[gcs]"', "gcs": 'pip install "lmforge[gcs]"'}


def is_url(path: Any) -> bool:
    """An fsspec URL other than ``file://`` (those are local paths)."""
    return isinstance(path, RemotePath) or (isinstance(path, str) and bool(_URL.match(path)) and not path.startswith("file://"))


def as_path(path: "str | os.PathLike | RemotePath") -> "Path | RemotePath":
    """A RemotePath for a URL, a ``pathlib.Path`` otherwise (``file://`` stripped)."""
    if isinstance(path, (Path, RemotePath)):
        return path
    text = os.fspath(path)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return RemotePath(text) if is_url(text) else Path(text)


def _filesystem(protocol: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with lmforge
        raise ImportError(f"{protocol}:// paths need fsspec: pip install fsspec") from None
    # no listing cache: other processes (workers, other nodes) add objects while this one runs
    options = {"use_listings_cache": False} if protocol in ("s3", "s3a", "gs", "gcs") else {}
    try:
        return fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as e:
        hint = INSTALL.get(protocol, f"install the fsspec implementation for {protocol}://")
        raise ImportError(f"{protocol}:// paths need their fsspec implementation ({e}); {hint}") from None


class _Stat:
    def __init__(self, info: dict[str, Any]):
        self.st_size = int(info.get("size") or 0)
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
        self.st_mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
        self.st_mtime_ns = int(self.st_mtime * 1e9)
        self.etag = info.get("ETag") or info.get("etag")


class RemotePath:
    """A path in an object store: ``PROTOCOL://BUCKET/KEY`` (picklable; a Ray worker opens its own
    connection)."""

    __slots__ = ("url",)

    def __init__(self, url: str):
        protocol, sep, rest = url.partition("://")
        if not sep or not rest.strip("/"):
            raise ValueError(f"{url!r} is not a URL with a bucket (PROTOCOL://BUCKET/KEY)")
        self.url = f"{protocol}://" + posixpath.normpath(rest).lstrip("/") if rest.strip("/") else url

    # --- names ---
    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def key(self) -> str:
        """The path without the protocol: what fsspec calls it."""
        return self.url.split("://", 1)[1]

    @property
    def fs(self):
        return _filesystem(self.protocol)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __fspath__(self) -> str:  # numpy, open(): only local code paths call it, and they must not
        raise TypeError(f"{self.url} is an object-store path; it cannot be opened as a local file")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: "RemotePath") -> bool:
        return self.url < other.url

    def __truediv__(self, other: str | os.PathLike) -> "RemotePath":
        return RemotePath(self.url.rstrip("/") + "/" + os.fspath(other).lstrip("/"))

    def __reduce__(self):
        return (RemotePath, (self.url,))

    @property
    def parts(self) -> tuple[str, ...]:
        bucket, *rest = self.key.split("/")
        return (f"{self.protocol}://{bucket}", *[p for p in rest if p])

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return Path(self.name).suffixes

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> "RemotePath":
        parts = self.parts
        return self if len(parts) == 1 else RemotePath("/".join(parts[:-1]))

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def relative_to(self, other: "RemotePath") -> Path:
        base = other.url.rstrip("/") + "/"
        if not self.url.startswith(base):
            raise ValueError(f"{self.url} is not under {other.url}")
        return Path(self.url[len(base):])

    def resolve(self) -> "RemotePath":
        return self

    def absolute(self) -> "RemotePath":
        return self

    def as_posix(self) -> str:
        return self.url

    # --- queries ---
    def exists(self) -> bool:
        return bool(self.fs.exists(self.key))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.key))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.key))

    def stat(self) -> _Stat:
        try:
            return _Stat(self.fs.info(self.key))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url}: no such object") from None

    def iterdir(self) -> Iterator["RemotePath"]:
        if not self.is_dir():
            return iter(())
        return iter(sorted(RemotePath(f"{self.protocol}://{k}") for k in self.fs.ls(self.key, detail=False) if k.rstrip("/") != self.key))

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        """Every object under this prefix whose name matches ``pattern`` (objects only: no directories)."""
        keys = self.fs.find(self.key) if self.is_dir() else []
        return iter(sorted(RemotePath(f"{self.protocol}://{k}") for k in keys if fnmatch.fnmatch(posixpath.basename(k), pattern)))

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        return iter(sorted(RemotePath(f"{self.protocol}://{k}") for k in self.fs.glob(self.key.rstrip("/") + "/" + pattern)))

    # --- reading and writing ---
    def open(self, mode: str = "rb", **kw: Any) -> IO:
        if any(c in mode for c in "wax+"):
            raise ValueError(f"{self.url}: object-store files are published whole (lmforge.storage writes them), not opened for writing")
        return self.fs.open(self.key, mode, **kw)

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: the object appears whole."""
        self.fs.pipe_file(self.key, data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no directories: prefixes exist once an object is under them."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self) -> None:
        """Delete every object under this prefix."""
        if self.fs.exists(self.key):
            self.fs.rm(self.key, recursive=True)


def upload(local: str | os.PathLike, dest: RemotePath) -> None:
    """Publish a finished local file as one object (one PUT; multipart for large files, which the
    store also makes visible only when complete)."""
    dest.fs.put_file(os.fspath(local), dest.key)


MARKER_NAMES = ("manifest.json", "analysis.json", "report.md")  # published last: they vouch for the rest


@contextlib.contextmanager
def staged_directory(where: "str | os.PathLike | RemotePath", *, download: bool = True) -> Iterator[Path]:
    """A local directory for a command whose output is a whole directory (fetch, analyze). For a
    local ``where``: itself. For a URL: a local copy (of what is there, when ``download``, so a rerun
    resumes), uploaded when the block ends normally: each new or changed file as one object, the
    files that vouch for the rest (``MARKER_NAMES``, names starting with ``_``) last."""
    target = as_path(where)
    if not isinstance(target, RemotePath):
        yield target
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lmforge-staged-") as tmp:
        local = Path(tmp)
        before: dict[str, tuple[int, int]] = {}
        if download and target.is_dir():
            for obj in target.rglob("*"):
                dest = local / obj.relative_to(target)
                dest.parent.mkdir(parents=True, exist_ok=True)
                target.fs.get_file(obj.key, str(dest))
                st = dest.stat()
                before[str(dest)] = (st.st_size, st.st_mtime_ns)
        yield local
        files = [f for f in sorted(local.rglob("*")) if f.is_file() and not f.name.endswith(".tmp") and not f.name.startswith(".lmforge-lock")]
        changed = [f for f in files if before.get(str(f)) != (f.stat().st_size, f.stat().st_mtime_ns)]
        last = lambda f: f.name in MARKER_NAMES or f.name.startswith("_")  # noqa: E731
        for f in sorted(changed, key=last):
            upload(f, target / f.relative_to(local).as_posix())
