"""Documents in Dolma's format, attribute files, and the accounting every data stage keeps.

A *document shard* is a JSONL file (plain, ``.gz`` or ``.zst``), one document a line::

    {"id": "...", "text": "...", "source": "...", "added": "...", "created": "...", "metadata": {...}}

*Attributes* live in parallel files: for ``ROOT/documents/a/b.jsonl.gz`` the attributes named
``NAME`` are in ``ROOT/attributes/NAME/a/b.jsonl.gz``, one line per document in the same order::

    {"id": "...", "attributes": {"NAME__tagger__key": [[start, end, score], ...]}}

Spans are character offsets into ``text`` (end exclusive), as in Dolma.

Nothing read is lost silently: every line of input ends up in an :class:`Accounting` as kept,
dropped (with the rule that dropped it) or malformed (with the reason and ``file:line``).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmforge.objectstore import RemotePath, as_path
from lmforge.storage import commit_file, temp_path_beside

DOC_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".json")
MAX_EXAMPLES = 20  # malformed examples kept per reason (the counts are always complete)


class DataError(ValueError):
    """A data problem that stops work on one file, described in one line naming the file."""


class TruncatedFileError(DataError):
    """A compressed file ended early; the documents before the damage were read."""


@dataclasses.dataclass
class Document:
    id: str
    text: str
    source: str = ""
    added: str | None = None
    created: str | None = None
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "source": self.source}
        for key in ("added", "created", "metadata"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


# --- accounting -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Accounting:
    """Where every input document went. ``read == kept + dropped + malformed`` always holds."""

    read: int = 0
    kept: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)  # rule -> count
    malformed: Counter = dataclasses.field(default_factory=Counter)  # reason -> count
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # reason -> ["file:line", ...]
    errors: list[str] = dataclasses.field(default_factory=list)  # file-level problems (truncated files)

    def keep(self, n: int = 1) -> None:
        self.kept += n

    def drop(self, rule: str, n: int = 1) -> None:
        self.dropped[rule] += n

    def bad(self, reason: str, where: str) -> None:
        """Record a malformed line (it was read, so it counts in ``read``)."""
        self.read += 1
        self.malformed[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(where)

    def merge(self, other: "Accounting") -> "Accounting":
        self.read += other.read
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.malformed.update(other.malformed)
        for reason, ex in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[: max(0, MAX_EXAMPLES - len(mine))])
        self.errors.extend(other.errors)
        return self

    @property
    def balanced(self) -> bool:
        return self.read == self.kept + sum(self.dropped.values()) + sum(self.malformed.values())

    def check(self) -> None:
        if not self.balanced:
            raise AssertionError(
                f"accounting does not add up: read {self.read} != kept {self.kept} + dropped "
                f"{sum(self.dropped.values())} + malformed {sum(self.malformed.values())}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "malformed_examples": self.examples,
            "errors": self.errors,
            "balanced": self.balanced,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Accounting":
        return cls(d["read"], d["kept"], Counter(d["dropped"]), Counter(d["malformed"]), dict(d.get("malformed_examples", {})), list(d.get("errors", [])))

    def summary_line(self) -> str:
        parts = [f"read {self.read:,}", f"kept {self.kept:,}"]
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.dropped.items())))
        if self.malformed:
            parts.append("malformed " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.malformed.items())))
        return "; ".join(parts)


# --- files ------------------------------------------------------------------------------------------
def is_document_file(path: str | os.PathLike) -> bool:
    return str(path).endswith(DOC_SUFFIXES)


def list_shards(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Expand files, directories (recursively) and globs into a sorted list of document files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[Path] = set()
    for p in paths:
        p = as_path(p)
        if isinstance(p, RemotePath):  # an object-store prefix, object or glob
            if any(c in p.key for c in "*?["):
                found.update(f for f in p.parent.glob(p.name) if is_document_file(f))
            elif p.is_file():
                found.add(p)
            elif p.is_dir():
                found.update(f for f in p.rglob("*") if is_document_file(f))
            else:
                raise DataError(f"{p}: no such object or prefix")
            continue
        if p.is_dir():
            found.update(f for f in p.rglob("*") if f.is_file() and is_document_file(f))
        elif p.is_file():
            found.add(p)
        elif any(c in str(p) for c in "*?["):
            anchor = Path(p.anchor or ".")
            found.update(f for f in anchor.glob(str(p.relative_to(anchor)) if p.is_absolute() else str(p)) if f.is_file())
        else:
            raise DataError(f"{p}: no such file or directory")
    return sorted(found, key=str)


try:  # ISA-L's inflate: the same bytes as zlib's, ~3x faster (most of a data stage's reading time)
    from isal import igzip as _gzip_impl
    from isal.isal_zlib import error as _inflate_error
except ImportError:  # pragma: no cover - a platform without isal wheels: the standard library
    _gzip_impl, _inflate_error = gzip, zlib.error

GZIP_READ_ERRORS = (EOFError, zlib.error, _inflate_error, gzip.BadGzipFile, OSError)


def gzip_fast(data: bytes) -> bytes:
    """``data`` as one gzip member, compressed fast (ISA-L level 1: 3x zlib level 1's speed, a
    smaller file), with mtime 0 and no file name in the header: equal data, equal bytes."""
    if _gzip_impl is gzip:  # pragma: no cover - without isal
        return gzip.compress(data, compresslevel=1, mtime=0)
    return _gzip_impl.compress(data, compresslevel=1, mtime=0)


def _gzip_reader(raw):
    """A line-iterable reader of the gzip stream in the binary file ``raw`` (closed with it)."""
    reader = _gzip_impl.GzipFile(fileobj=raw, mode="rb")
    close = reader.close

    def close_both() -> None:
        try:
            close()
        finally:
            raw.close()

    reader.close = close_both
    return reader


def _open_for_reading(path):
    name = str(path)
    raw = path.open("rb") if isinstance(path, RemotePath) else open(path, "rb")
    if name.endswith(".gz"):
        return _gzip_reader(raw)
    if name.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, 1 << 20)  # adds line iteration
    return raw


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of a possibly compressed file; a damaged stream raises TruncatedFileError
    after every intact line before it has been yielded."""
    path = as_path(path)
    n = 0
    try:
        with _open_for_reading(path) as raw:
            for n, line in enumerate(raw, 1):
                yield n, line
    except GZIP_READ_ERRORS as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise TruncatedFileError(
            f"{path}: compressed stream is truncated or corrupt after line {n} ({type(e).__name__}); the {n} lines before it were read"
        ) from None
    except Exception as e:  # zstandard raises its own ZstdError
        if type(e).__name__ == "ZstdError":
            raise TruncatedFileError(f"{path}: zstd stream is truncated or corrupt after line {n}; the {n} lines before it were read") from None
        raise


def parse_document(raw: bytes, where: str, acct: Accounting) -> Document | None:
    """One JSONL line -> Document, or None after recording why it is malformed."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        acct.bad("invalid UTF-8", where)
        return None
    if not line.strip():
        acct.bad("blank line", where)
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        acct.bad("bad JSON", where)
        return None
    if not isinstance(obj, dict):
        acct.bad("not a JSON object", where)
        return None
    text, doc_id = obj.get("text"), obj.get("id")
    if not isinstance(text, str):
        acct.bad("missing text", where)
        return None
    if doc_id is None or isinstance(doc_id, (dict, list)):
        acct.bad("missing id", where)
        return None
    if not text.strip():
        acct.bad("empty document", where)
        return None
    acct.read += 1
    meta = obj.get("metadata")
    return Document(
        id=str(doc_id),
        text=text,
        source=str(obj.get("source") or ""),
        added=obj.get("added"),
        created=obj.get("created"),
        metadata=meta if isinstance(meta, dict) else None,
    )


def read_documents(path: str | os.PathLike, acct: Accounting | None = None) -> Iterator[Document]:
    """Documents of one shard. Malformed lines are recorded in ``acct`` and skipped; valid documents
    count as read (the caller then records each as kept or dropped)."""
    acct = acct if acct is not None else Accounting()
    for n, raw in iter_lines(path):
        doc = parse_document(raw, f"{path}:{n}", acct)
        if doc is not None:
            yield doc


class AtomicWriter:
    """Write a (possibly compressed) JSONL file under a temporary name; rename on success only."""

    def __init__(self, path: str | os.PathLike, *, level: int = 6):
        self.path = as_path(path)
        self._tmp = temp_path_beside(self.path)
        self._fh = _open_for_writing(self.path, self._tmp, level)  # compression follows the final name
        self.count = 0

    def write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def close(self) -> Path:
        self._fh.close()
        commit_file(self._tmp, self.path)  # fsync, rename, fsync the directory
        return self.path

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _ReproducibleGzip:
    """gzip with no file name and mtime 0 in its header, so equal content gives equal bytes."""

    def __init__(self, path: str, level: int):
        self._raw = open(path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=level, mtime=0)

    def write(self, data: bytes) -> int:
        return self._gz.write(data)

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            self._raw.close()


def _open_for_writing(final: Path, tmp: str, level: int):
    name = str(final)
    if name.endswith(".gz"):
        return _ReproducibleGzip(tmp, level)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor(level=min(level, 19)).stream_writer(open(tmp, "wb"), closefd=True)
    return open(tmp, "wb")


def write_documents(path: str | os.PathLike, docs: Iterable[Document | dict[str, Any]]) -> int:
    """Write documents atomically; returns how many were written."""
    with AtomicWriter(path) as w:
        for d in docs:
            w.write(d.to_json() if isinstance(d, Document) else d)
    return w.count


# --- attributes -------------------------------------------------------------------------------------
def _split_at_documents(doc_path: str | os.PathLike) -> tuple[Any, tuple[str, ...], int]:
    """(the path, its parts, the index of its last ``documents`` part); a DataError outside the layout."""
    p = as_path(doc_path)
    parts = p.parts
    if "documents" not in (parts[1:] if isinstance(p, RemotePath) else parts):
        raise DataError(f"{p}: document files must live under a 'documents' directory (Dolma layout) to have attributes")
    return p, parts, len(parts) - 1 - parts[::-1].index("documents")


def _joined(p: Any, parts: tuple[str, ...]) -> Path:
    return RemotePath("/".join(parts)) if isinstance(p, RemotePath) else Path(*parts)  # type: ignore[return-value]


def attributes_path(doc_path: str | os.PathLike, name: str) -> Path:
    """``ROOT/documents/x/y.jsonl.gz`` -> ``ROOT/attributes/NAME/x/y.jsonl.gz`` (Dolma's layout)."""
    p, parts, i = _split_at_documents(doc_path)
    return _joined(p, (*parts[:i], "attributes", name, *parts[i + 1 :]))


def attribute_dir(doc_path: str | os.PathLike, name: str) -> Path:
    """``ROOT/attributes/NAME`` for a document file under ``ROOT/documents/``."""
    p, parts, i = _split_at_documents(doc_path)
    return _joined(p, (*parts[:i], "attributes", name))


def write_attributes(path: str | os.PathLike, rows: Iterable[tuple[str, dict[str, list]]]) -> int:
    """rows: (document id, {attribute name: [[start, end, score], ...]}) in document order.
    Attribute files are written often and read once by the mixer: fast compression (level 1)."""
    with AtomicWriter(path, level=1) as w:
        for doc_id, attrs in rows:
            w.write({"id": doc_id, "attributes": attrs})
    return w.count


def read_attributes(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Attribute rows of one file, in document order; a bad line is an error (we wrote these files)."""
    for n, raw in iter_lines(path):
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path}:{n}: attribute line is not valid JSON; delete the file and rerun the tagger") from None
        yield row
