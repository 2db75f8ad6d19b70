"""Dolma documents -> OLMo token files (the format ``dolma tokens`` writes and OLMo's trainer reads).

Output layout, in ``OUT``::

    OUT/part-00000-00000.npy      token ids of input shard 0 (first file)
    OUT/part-00000-00000.csv.gz   one metadata row per document in that file
    OUT/part-00000-00001.npy      ... shard 0 continues when a file reached ``max_tokens_per_file``
    OUT/part-00001-00000.npy      token ids of input shard 1
    OUT/_done/part-00000.json     completion marker of shard 0 (written last; what a rerun checks)
    OUT/tokenize_summary.json     accounting, totals, tokenizer path/sha256/ids, settings, file list

``part-GGGGG-FFFFF``: ``GGGGG`` is the index of the input shard in the *sorted* input list
(:func:`lmforge.data.documents.list_shards`), ``FFFFF`` counts files within that shard. Dolma 1.2.1
names its files ``part-{group}-{file:05d}.npy`` too, a group being the set of (shuffled) shards one
process takes, with as many group digits as the group count needs; here a group is always one
shard with 5+ digits, so the names, and the bytes, do not depend on the number of workers and sort
in input order. A file holds whole documents only; it is closed before a document would take it
past ``max_tokens_per_file`` (a single longer document gets a file of its own).

``.npy`` files are **raw memmaps without a numpy header** (as dolma writes them; ``np.load`` cannot
read them): the token ids of each document, then EOS, document after document, in input order::

    [BOS] ids(doc 1) EOS [BOS] ids(doc 2) EOS ...

BOS only with ``add_bos=True`` and a tokenizer that has one. The dtype is ``uint16`` when every id
fits (vocabulary <= 65536), else ``uint32``; it is recorded in ``tokenize_summary.json``. Read one
with :func:`read_token_file` (``np.memmap(path, dtype=..., mode="r")``).

``.csv.gz`` metadata mirrors dolma 1.2.1: gzip'd CSV (Python ``csv`` module, excel dialect, CRLF
line ends, no header), one row per document::

    start,end,id,src,loc

``start``/``end`` are token offsets into the ``.npy`` file (end exclusive; the slice includes the
trailing EOS and the BOS if any), ``id`` the document id, ``src`` the input shard path as given,
``loc`` the 1-based line number of the document in ``src``. Read with :func:`read_metadata`.

Differences from ``dolma tokens``, on purpose:

* Documents stay in input order (dolma shuffles within a small buffer); shuffling is the trainer's
  job, and ordered output makes files reproducible and checkable.
* Text is tokenized as it is (dolma strips leading/trailing whitespace first): ``decode(ids) ==
  text`` holds for every document. ``strip_whitespace=True`` reproduces dolma's ids exactly.
* EOS is always appended (dolma skips it when the text already ends with the EOS token's string).
* Whitespace-only documents and malformed lines are not tokenized but counted, with reasons, in the
  summary's accounting (``read == kept + dropped + malformed``; ``kept`` = tokenized documents), and
  so are documents longer than ``max_document_chars`` (dropped: memory per document is bounded).

A damaged (truncated) compressed input stops that shard at the damage: every document before it is
tokenized, written and counted, the shard is marked done with the error recorded, the other shards
are processed, and :func:`tokenize` then raises :class:`DataError` with a one-line message naming
the file (``cmd_tokenize`` prints it and returns 1). ``tokenize_summary.json`` is written first, with
the error under ``errors``. A rerun skips that shard while the input file is unchanged (and reports
the error again); replacing the file (new size or mtime) makes the rerun redo it.

Writes are atomic and durable (temporary name, fsync, rename, fsync of the directory), and the
``_done`` marker is written after the files it lists. A shard is complete when its marker exists,
the files it lists have the recorded sizes and sha256 (read back on every rerun: a marker never
vouches for data a crash lost) and its fingerprint (input size/mtime, tokenizer sha256, ids, dtype,
settings) matches; a rerun skips complete shards and redoes the others, after deleting their partial
files. One tokenize at a time writes ``OUT`` (a second is refused at once: ``lmforge.storage``). ``part-*`` files of shard indices beyond the current input list are
removed.

Encoding uses HF ``tokenizers``' ``encode_batch`` on batches of documents (Rust threads); worker
processes (``workers``) take one shard each; each worker's Rust thread count is set so that
``workers * threads`` is about the number of CPUs. No torch import here (fast worker start-up).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from lmforge.config import atomic_write_text, sha256_file, temp_path_beside
from lmforge.storage import commit_file, lock_output, remove_stale_temporaries
from lmforge.data.documents import Accounting, DataError, iter_lines, list_shards, parse_document
from lmforge.data.parallel import run_parallel

__all__ = [
    "DEFAULT_MAX_TOKENS_PER_FILE",
    "SUMMARY_NAME",
    "MetadataRow",
    "choose_dtype",
    "cmd_tokenize",
    "detokenize_check",
    "output_name",
    "read_metadata",
    "read_summary",
    "read_token_file",
    "tokenize",
]

FORMAT = "lmforge.tokenize/1"
SUMMARY_NAME = "tokenize_summary.json"
DONE_DIR = "_done"
#: dolma's default ``max_size`` (which it counts in tokens): 2**30 tokens, 2 GiB as uint16.
DEFAULT_MAX_TOKENS_PER_FILE = 1 << 30
#: characters of text per ``encode_batch`` call
DEFAULT_BATCH_CHARS = 1 << 21
#: longer documents are dropped and counted (``max_document_chars``): HF tokenizers holds ~120 bytes
#: per character of a document while it encodes it (1.5 GB for a 12 MB document), so this bounds a
#: worker's memory at about 1 GB more than its batch (8 MiB characters: rarer than one in a million
#: web documents; raise it for corpora of whole books)
DEFAULT_MAX_DOCUMENT_CHARS = 1 << 23
_PART_RE = re.compile(r"^part-(\d{5,})-(\d{5,})\.(npy|csv\.gz)$")
_DONE_RE = re.compile(r"^part-(\d{5,})\.json$")


class MetadataRow(NamedTuple):
    """One document in a token file: ``tokens[start:end]`` (EOS included), dolma's column order."""

    start: int
    end: int
    id: str
    src: str
    loc: int


# --- small helpers ----------------------------------------------------------------------------------
def choose_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab_size <= 65536), else ``uint32``."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} ids does not fit uint32")


def _resolve_dtype(dtype: Any, vocab_size: int) -> np.dtype:
    if dtype is None:
        return choose_dtype(vocab_size)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DataError(f"dtype {dtype!r} is not a numpy dtype; use uint16 or uint32") from None
    if dt.kind != "u":
        raise DataError(f"dtype {dt} must be an unsigned integer type (uint16 or uint32)")
    if vocab_size - 1 > np.iinfo(dt).max:
        raise DataError(f"dtype {dt} cannot hold ids up to {vocab_size - 1} (vocabulary {vocab_size}); use {choose_dtype(vocab_size)}")
    return dt


def output_name(shard_index: int, file_index: int) -> str:
    """``part-00000-00000`` (no extension): dolma's naming, group = input shard index."""
    return f"part-{shard_index:05d}-{file_index:05d}"




def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _load_tokenizer(path: str, eos_id: int | None, bos_id: int | None, pad_id: int | None):
    from lmforge.tokenizer.core import Tokenizer

    return Tokenizer.from_file(path, eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=bos_id)


_WORKER_TOKENIZER: dict[tuple, Any] = {}


def _worker_tokenizer(task: dict[str, Any]):
    """The tokenizer, loaded once per process (a worker handles many shards; loading GPT-NeoX's
    file takes ~0.1 s). Keyed by sha256, so a changed file is reloaded."""
    key = (task["tokenizer_path"], task["tokenizer_sha256"], task["eos_id"], task["bos_id"], task["pad_id"])
    if key not in _WORKER_TOKENIZER:
        _WORKER_TOKENIZER.clear()
        _WORKER_TOKENIZER[key] = _load_tokenizer(task["tokenizer_path"], task["eos_id"], task["bos_id"], task["pad_id"])
    return _WORKER_TOKENIZER[key]


# --- writing one shard ------------------------------------------------------------------------------
class _HashingFile:
    """A binary file that hashes what is written to it (sha256 of the final bytes, for the marker)."""

    def __init__(self, path: str):
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class _PartWriter:
    """One ``.npy`` + ``.csv.gz`` pair under temporary names; ``close`` makes both durable, then
    renames them, and returns their sizes and sha256 (what the shard's marker vouches for)."""

    def __init__(self, out_dir: Path, name: str, dtype: np.dtype):
        self.npy = out_dir / f"{name}.npy"
        self.csv = out_dir / f"{name}.csv.gz"
        self._npy_tmp = temp_path_beside(self.npy)
        self._csv_tmp = temp_path_beside(self.csv)
        self._npy_fh = _HashingFile(self._npy_tmp)
        self._csv_raw = _HashingFile(self._csv_tmp)
        # mtime=0 and no file name in the header: identical bytes on every run
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._csv_raw, compresslevel=6, mtime=0)
        self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text)  # excel dialect (CRLF), as dolma's MemmapWriter
        self.dtype = dtype
        self.tokens = 0
        self.documents = 0

    def write(self, docs: list[np.ndarray], rows: list[tuple[int, int, str, str, int]]) -> None:
        for a in docs:  # each document's ids as one array (no Python list of every id)
            self._npy_fh.write(memoryview(a))
            self.tokens += len(a)
        self._csv.writerows(rows)
        self.documents += len(rows)

    def close(self) -> dict[str, Any]:
        self._text.close()  # closes the GzipFile, which leaves fileobj open
        self._csv_raw.close()
        self._npy_fh.close()
        commit_file(self._npy_tmp, self.npy)  # fsync, rename, fsync the directory
        commit_file(self._csv_tmp, self.csv)
        return {
            "npy": self.npy.name,
            "metadata": self.csv.name,
            "tokens": self.tokens,
            "documents": self.documents,
            "npy_bytes": self.npy.stat().st_size,
            "metadata_bytes": self.csv.stat().st_size,
            "npy_sha256": self._npy_fh.sha.hexdigest(),
            "metadata_sha256": self._csv_raw.sha.hexdigest(),
        }

    def abort(self) -> None:
        for fh in (self._text, self._csv_raw, self._npy_fh):
            try:
                fh.close()
            except Exception:
                pass
        for tmp in (self._npy_tmp, self._csv_tmp):
            if os.path.exists(tmp):
                os.unlink(tmp)


def _done_path(out_dir: Path, index: int) -> Path:
    return out_dir / DONE_DIR / f"part-{index:05d}.json"


def _fingerprint(task: dict[str, Any]) -> dict[str, Any]:
    st = os.stat(task["shard"])
    keys = ("shard", "index", "tokenizer_sha256", "eos_id", "bos_id", "dtype", "max_tokens_per_file", "strip_whitespace")
    fp = {"format": FORMAT, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **{k: task[k] for k in keys}}
    if task.get("max_document_chars", DEFAULT_MAX_DOCUMENT_CHARS) != DEFAULT_MAX_DOCUMENT_CHARS:
        fp["max_document_chars"] = task["max_document_chars"]
    return fp


def _complete(out_dir: Path, task: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of a finished shard, or None when it must be (re)done."""
    done = _done_path(out_dir, task["index"])
    try:
        marker = json.loads(done.read_text(encoding="utf-8"))
        if marker.get("fingerprint") != _fingerprint(task):
            return None
        for f in marker["result"]["files"]:  # the content, not just the sizes: a marker never vouches for lost data
            for name, size, digest in ((f["npy"], f["npy_bytes"], f["npy_sha256"]), (f["metadata"], f["metadata_bytes"], f["metadata_sha256"])):
                path = out_dir / name
                if path.stat().st_size != size or sha256_file(path) != digest:
                    return None
        return marker["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_shard_outputs(out_dir: Path, index: int) -> None:
    _done_path(out_dir, index).unlink(missing_ok=True)
    prefix = f"part-{index:05d}-"
    for p in out_dir.iterdir():
        name = p.name
        if (name.startswith(prefix) and _PART_RE.match(name)) or (name.startswith("." + prefix) and name.endswith(".tmp")):
            p.unlink(missing_ok=True)


def _tokenize_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Tokenize one input shard into ``part-{index}-*`` files; returns a picklable result."""
    out_dir = Path(task["out_dir"])
    if task.get("threads"):
        # must happen before the first encode in this process (the Rust pool starts then)
        os.environ.setdefault("RAYON_NUM_THREADS", str(task["threads"]))
        os.environ.setdefault("RAYON_RS_NUM_CPUS", str(task["threads"]))
        os.environ["TOKENIZERS_PARALLELISM"] = "true"  # a spawned worker: Rust threads are safe
    stored = _complete(out_dir, task)
    if stored is not None:
        return {**stored, "skipped": True}
    _remove_shard_outputs(out_dir, task["index"])

    tok = _worker_tokenizer(task)
    backend = tok.backend
    encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch  # _fast: no offsets
    dtype = np.dtype(task["dtype"])
    eos, bos = task["eos_id"], task["bos_id"]
    max_tokens = task["max_tokens_per_file"]
    strip = task["strip_whitespace"]
    batch_chars = task.get("batch_chars", DEFAULT_BATCH_CHARS)
    max_chars = task.get("max_document_chars", DEFAULT_MAX_DOCUMENT_CHARS)
    src = str(task["shard"])

    acct = Accounting()
    files: list[dict[str, Any]] = []
    writer: _PartWriter | None = None
    errors: list[str] = []
    total_tokens = 0

    def flush(texts: list[str], meta: list[tuple[str, int]]) -> None:
        nonlocal writer, total_tokens
        if not texts:
            return
        encs = encode(texts, add_special_tokens=False)
        texts.clear()  # the caller's list: the text of this batch is no longer needed
        docs: list[np.ndarray] = []
        rows: list[tuple[int, int, str, str, int]] = []
        start = writer.tokens if writer is not None else 0
        head = 1 if bos is not None else 0
        for i, (doc_id, loc) in enumerate(meta):
            ids = encs[i].ids
            encs[i] = None  # free each encoding as soon as its ids are out
            n = len(ids) + 1 + head
            doc = np.empty(n, dtype=dtype)
            if head:
                doc[0] = bos
            doc[head : n - 1] = ids
            doc[n - 1] = eos
            del ids
            if writer is None or (start + n > max_tokens and start > 0):
                if writer is not None:  # roll over to the next file (a document is never split)
                    if docs:
                        writer.write(docs, rows)
                    files.append(writer.close())
                    docs, rows = [], []
                writer = _PartWriter(out_dir, output_name(task["index"], len(files)), dtype)
                start = 0
            docs.append(doc)
            rows.append((start, start + n, doc_id, src, loc))
            start += n
            total_tokens += n
        writer.write(docs, rows)
        acct.keep(len(meta))

    try:
        texts: list[str] = []
        meta: list[tuple[str, int]] = []
        chars = 0
        try:
            for n, raw in iter_lines(task["shard"]):
                doc = parse_document(raw, f"{src}:{n}", acct)
                if doc is None:
                    continue
                # parse_document already refused whitespace-only texts, so a stripped text is never empty
                text = doc.text.strip() if strip else doc.text
                if len(text) > max_chars:  # bounded memory per document: counted, not a crash
                    acct.drop(f"longer than {max_chars:,} characters (max_document_chars)")
                    continue
                texts.append(text)
                meta.append((doc.id, n))
                chars += len(text)
                if chars >= batch_chars:
                    flush(texts, meta)
                    texts, meta, chars = [], [], 0
        except DataError as e:  # TruncatedFileError and friends: keep what was read before the damage
            errors.append(str(e))
        flush(texts, meta)
        if writer is not None:
            files.append(writer.close())
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    acct.errors.extend(errors)
    acct.check()
    result = {
        "shard": src,
        "index": task["index"],
        "files": files,
        "tokens": total_tokens,
        "accounting": acct.to_json(),
        "errors": errors,
    }
    done = _done_path(out_dir, task["index"])
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps({"fingerprint": _fingerprint(task), "result": result}, indent=1) + "\n")
    return {**result, "skipped": False}


# --- the whole job ----------------------------------------------------------------------------------
def tokenize(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    tokenizer_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    dtype: Any = None,
    add_bos: bool = False,
    max_tokens_per_file: int = DEFAULT_MAX_TOKENS_PER_FILE,
    eos_id: int | None = None,
    bos_id: int | None = None,
    pad_id: int | None = None,
    strip_whitespace: bool = False,
    threads: int | None = None,
    batch_chars: int = DEFAULT_BATCH_CHARS,
    max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
    progress: bool = True,
    raise_on_error: bool = True,
) -> dict[str, Any]:
    """Tokenize Dolma document shards into OLMo token files in ``out_dir``; returns the summary.

    ``paths``: files, directories or globs (see :func:`list_shards`). ``tokenizer_path``: a
    tokenizers JSON file; ``eos_id``/``bos_id``/``pad_id`` override the ids found by token string.
    BOS is written only with ``add_bos=True`` (then the tokenizer must have one, or pass ``bos_id``).
    ``threads``: Rust threads per worker (default: CPUs // workers). A document longer than
    ``max_document_chars`` is not tokenized but counted as dropped (it bounds memory). Raises :class:`DataError` (one
    line, naming the file) after writing everything it could when an input file was damaged
    (``raise_on_error=False`` returns the summary instead, errors under ``"errors"``).
    """
    t0 = time.perf_counter()
    shards = list_shards(paths)
    if not shards:
        raise DataError(f"no document files found in {paths if isinstance(paths, (str, os.PathLike)) else ', '.join(map(str, paths))}")
    tokenizer_path = Path(tokenizer_path)
    tok = _load_tokenizer(str(tokenizer_path), eos_id, bos_id, pad_id)
    if add_bos and tok.bos_token_id is None:
        raise DataError(f"add_bos=True but tokenizer {tokenizer_path} has no BOS token; pass bos_id= (or --bos-id) or drop add_bos")
    bos = tok.bos_token_id if add_bos else None
    dt = _resolve_dtype(dtype, tok.vocab_size)
    if max_tokens_per_file < 2:
        raise DataError(f"max_tokens_per_file must be >= 2, got {max_tokens_per_file}")
    if max_document_chars < 1:
        raise DataError(f"max_document_chars must be >= 1, got {max_document_chars}")
    out = Path(out_dir)
    with lock_output(out, "lmforge data tokenize"):  # one tokenize at a time writes OUT
        remove_stale_temporaries(out)  # left by killed runs (we hold the lock: no live run's)
        remove_stale_temporaries(out / DONE_DIR)
        return _tokenize_locked(shards, tokenizer_path, tok, out, t0=t0, workers=workers, dt=dt, bos=bos, add_bos=add_bos,
                                max_tokens_per_file=max_tokens_per_file, strip_whitespace=strip_whitespace, threads=threads,
                                batch_chars=batch_chars, max_document_chars=max_document_chars, progress=progress,
                                raise_on_error=raise_on_error)


def _tokenize_locked(shards, tokenizer_path, tok, out, *, t0, workers, dt, bos, add_bos, max_tokens_per_file, strip_whitespace,
                     threads, batch_chars, max_document_chars, progress, raise_on_error) -> dict[str, Any]:
    sha = sha256_file(tokenizer_path)
    workers = max(1, int(workers))
    nthreads = threads or max(1, _cpus() // min(workers, len(shards)))

    tasks = [
        {
            "shard": str(s),
            "index": i,
            "out_dir": str(out),
            "tokenizer_path": str(tokenizer_path),
            "tokenizer_sha256": sha,
            "eos_id": tok.eos_token_id,
            "bos_id": bos,
            "pad_id": tok.pad_token_id,
            "dtype": dt.name,
            "max_tokens_per_file": int(max_tokens_per_file),
            "strip_whitespace": bool(strip_whitespace),
            "threads": nthreads if workers > 1 and len(shards) > 1 else threads,
            "batch_chars": int(batch_chars),
            "max_document_chars": int(max_document_chars),
        }
        for i, s in enumerate(shards)
    ]
    _remove_stale(out, len(shards))
    results = run_parallel(_tokenize_shard, tasks, workers=workers, desc="tokenize", progress=progress)

    acct = Accounting()
    files: list[dict[str, Any]] = []
    errors: list[str] = []
    for r in results:
        acct.merge(Accounting.from_json(r["accounting"]))
        files.extend({**f, "shard": r["shard"]} for f in r["files"])
        errors.extend(r["errors"])
    acct.check()
    seconds = time.perf_counter() - t0
    total = sum(r["tokens"] for r in results)
    summary = {
        "format": FORMAT,
        "out_dir": str(out),
        "inputs": [str(s) for s in shards],
        "tokenizer": {
            "path": str(tokenizer_path.resolve()),
            "sha256": sha,
            "vocab_size": tok.vocab_size,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.bos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        "dtype": dt.name,
        "add_bos": bool(add_bos),
        "bos_written": bos,
        "strip_whitespace": bool(strip_whitespace),
        "max_tokens_per_file": int(max_tokens_per_file),
        "max_document_chars": int(max_document_chars),
        "metadata_columns": list(MetadataRow._fields),
        "documents": acct.kept,
        "tokens": total,
        "accounting": acct.to_json(),
        "errors": errors,
        "shards": len(shards),
        "shards_skipped": sum(bool(r.get("skipped")) for r in results),
        "files": files,
        "seconds": round(seconds, 3),
        "input_bytes": sum(os.path.getsize(s) for s in shards),
    }
    atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    if errors and raise_on_error:
        more = f" (and {len(errors) - 1} more damaged file(s); see {out / SUMMARY_NAME})" if len(errors) > 1 else ""
        raise DataError(errors[0] + "; its earlier documents were tokenized" + more)
    return summary


def _remove_stale(out: Path, n_shards: int) -> None:
    """Delete our ``part-*`` files and markers of shard indices that no longer exist."""
    for p in out.iterdir():
        m = _PART_RE.match(p.name)
        if m and int(m.group(1)) >= n_shards:
            p.unlink(missing_ok=True)
    done = out / DONE_DIR
    if done.is_dir():
        for p in done.iterdir():
            m = _DONE_RE.match(p.name)
            if m and int(m.group(1)) >= n_shards:
                p.unlink(missing_ok=True)


# --- reading ----------------------------------------------------------------------------------------
def read_summary(out_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(out_dir) / SUMMARY_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no tokenize summary; run 'lmforge data tokenize' into {out_dir} first") from None
    except ValueError:
        raise DataError(f"{path}: summary is not valid JSON; rerun 'lmforge data tokenize'") from None


def read_token_file(path: str | os.PathLike, dtype: Any = None) -> np.memmap:
    """A token file as a read-only memmap. ``dtype`` defaults to the one in the
    ``tokenize_summary.json`` beside the file (dolma's files carry no dtype: pass it)."""
    path = Path(path)
    if dtype is None:
        dtype = read_summary(path.parent)["dtype"]
    dt = np.dtype(dtype)
    size = path.stat().st_size
    if size % dt.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dt} tokens; wrong dtype or a damaged file")
    if size == 0:
        raise DataError(f"{path}: empty token file")
    return np.memmap(path, dtype=dt, mode="r")


def _metadata_path(path: Path) -> Path:
    name = path.name
    if name.endswith(".npy"):
        return path.with_name(name[: -len(".npy")] + ".csv.gz")
    return path


def read_metadata(path: str | os.PathLike) -> list[MetadataRow]:
    """Rows ``(start, end, id, src, loc)`` of a ``.csv.gz`` metadata file (ours or dolma's); the
    ``.npy`` path is accepted too."""
    path = _metadata_path(Path(path))
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if len(row) != 5:
                    raise DataError(f"{path}:{n}: expected 5 columns start,end,id,src,loc, got {len(row)}")
                rows.append(MetadataRow(int(row[0]), int(row[1]), row[2], row[3], int(row[4])))
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read metadata ({type(e).__name__}: {e})") from None
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: metadata row is not start,end,id,src,loc integers ({e})") from None
    return rows


def detokenize_check(
    out_dir: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    samples: int | None = 20,
    check_text: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Check token files against their metadata and (a sample of) their source documents.

    Structure, for every file: rows are contiguous from 0 and end at the file length, every
    document ends with EOS (starts with BOS when it was written). Text, for ``samples`` documents
    per file (``None``: all): ``decode(tokens[start:end - 1])`` (minus BOS) equals the source text
    (stripped when the summary says so), re-read from ``src`` line ``loc``. Returns a report with
    ``ok`` and up to 20 ``problems``; never raises for a mismatch.
    """
    import random

    out = Path(out_dir)
    summary = read_summary(out)
    tok_path = tokenizer_path or summary["tokenizer"]["path"]
    tinfo = summary["tokenizer"]
    tok = _load_tokenizer(str(tok_path), tinfo["eos_token_id"], tinfo.get("bos_token_id"), tinfo["pad_token_id"])
    eos, bos = tinfo["eos_token_id"], summary.get("bos_written")
    strip = summary.get("strip_whitespace", False)
    rng = random.Random(seed)
    problems: list[str] = []
    wanted: dict[str, dict[int, tuple[str, str, np.ndarray]]] = {}  # src -> loc -> (where, id, ids)
    n_docs = n_tokens = 0
    for f in summary["files"]:
        npy = out / f["npy"]
        toks = read_token_file(npy, summary["dtype"])
        rows = read_metadata(out / f["metadata"])
        n_docs += len(rows)
        n_tokens += len(toks)
        pos = 0
        for r in rows:
            if r.start != pos or r.end <= r.start:
                problems.append(f"{npy.name}: row for {r.id} spans {r.start}:{r.end}, expected to start at {pos}")
                break
            if int(toks[r.end - 1]) != eos:
                problems.append(f"{npy.name}: document {r.id} ({r.src}:{r.loc}) does not end with EOS {eos}")
            if bos is not None and int(toks[r.start]) != bos:
                problems.append(f"{npy.name}: document {r.id} does not start with BOS {bos}")
            pos = r.end
        if pos != len(toks):
            problems.append(f"{npy.name}: metadata covers {pos} tokens, file holds {len(toks)}")
        if check_text:
            pick = rows if samples is None or samples >= len(rows) else rng.sample(rows, samples)
            for r in pick:
                ids = np.asarray(toks[r.start + (bos is not None) : r.end - 1])
                wanted.setdefault(r.src, {})[r.loc] = (f"{npy.name}[{r.start}:{r.end}]", r.id, ids)
    checked = 0
    for src, by_loc in wanted.items():
        try:
            for n, raw in iter_lines(src):
                if n in by_loc:
                    where, doc_id, ids = by_loc.pop(n)
                    text = json.loads(raw)["text"]
                    text = text.strip() if strip else text
                    checked += 1
                    if tok.decode(ids.tolist()) != text:
                        problems.append(f"{where}: decodes differently from {src}:{n} (id {doc_id})")
                    if not by_loc:
                        break
        except DataError as e:
            if by_loc:
                problems.append(str(e))
        for loc in by_loc:
            problems.append(f"{src}:{loc}: document not found in the source file")
    return {
        "ok": not problems,
        "files": len(summary["files"]),
        "documents": n_docs,
        "tokens": n_tokens,
        "documents_decoded": checked,
        "problems": problems[:20],
        "problem_count": len(problems),
    }


# --- CLI ----------------------------------------------------------------------------------------------
def cmd_tokenize(
    documents: list[str],
    tokenizer: str,
    out: str,
    workers: int = 1,
    *,
    dtype: str | None = None,
    add_bos: bool = False,
    max_tokens_per_file: int = DEFAULT_MAX_TOKENS_PER_FILE,
    eos_id: int | None = None,
    bos_id: int | None = None,
    pad_id: int | None = None,
    strip_whitespace: bool = False,
    max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
    progress: bool = True,
) -> int:
    """``lmforge data tokenize --documents ... --tokenizer TOK.json --out DIR --workers N``; returns
    the exit code (1 with a one-line message on stderr for a data or tokenizer problem)."""
    from lmforge.tokenizer.core import TokenizerError

    try:
        if not Path(tokenizer).exists():
            from lmforge.tokenizer.olmo import OLMO_TOKENIZERS, fetch_olmo_tokenizers

            spec = OLMO_TOKENIZERS.get(tokenizer)
            if spec is not None:  # an OLMo tokenizer by name: its file, with its registered ids
                tokenizer = str(fetch_olmo_tokenizers()[tokenizer])
                eos_id = spec.eos_token_id if eos_id is None else eos_id
                pad_id = spec.pad_token_id if pad_id is None else pad_id
        s = tokenize(
            documents,
            tokenizer,
            out,
            workers=workers,
            dtype=dtype,
            add_bos=add_bos,
            max_tokens_per_file=max_tokens_per_file,
            eos_id=eos_id,
            bos_id=bos_id,
            pad_id=pad_id,
            strip_whitespace=strip_whitespace,
            max_document_chars=max_document_chars,
            progress=progress,
        )
    except (DataError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    acct = Accounting.from_json(s["accounting"])
    rate = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
    print(
        f"tokenized {s['documents']:,} documents into {s['tokens']:,} {s['dtype']} tokens in {len(s['files'])} file(s) "
        f"({s['shards_skipped']} of {s['shards']} shards already done; {rate:,.0f} tokens/s); {acct.summary_line()}"
    )
    print(f"summary: {Path(out) / SUMMARY_NAME}")
    return 0
