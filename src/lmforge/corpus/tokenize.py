"""Dolma documents -> OLMo token files (the format ``dolma tokens`` writes and OLMo's trainer reads;
layout and reading: :mod:`lmforge.data.token_files`).

    summary = tokenize(TokenizeConfig(documents=["corpus/documents"], tokenizer="tokenizer.json", out="tokens"))

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
the file (the command prints it and exits 1). ``tokenize_summary.json`` is written first, with
the error under ``errors``. A rerun skips that shard while the input file is unchanged (and reports
the error again); replacing the file (new size or mtime) makes the rerun redo it.

Writes are atomic and durable (temporary name, fsync, rename, fsync of the directory), and the
``_done`` marker is written after the files it lists. A shard is complete when its marker exists,
the files it lists have the recorded sizes and sha256 (read back on every rerun: a marker never
vouches for data a crash lost) and its fingerprint (input size/mtime, tokenizer sha256, ids, dtype,
settings) matches; a rerun skips complete shards and redoes the others, after deleting their partial
files. One tokenize at a time writes ``OUT`` (a second is refused at once: ``lmforge.storage``).
``part-*`` files of shard indices beyond the current input list are removed.

Encoding runs on batches of documents with one of two engines (``engine``): HF ``tokenizers``
(the reference; ``encode_batch``, Rust threads) or tiktoken's BPE (:mod:`lmforge.tokenizer.fast`, 3-7x
faster), which ``auto`` takes only for a tokenizer it is shown to give the same ids for (structure
checked, a built-in sample compared at start); the worker then audits it, encoding every shard's
first 64k characters and one document in 256 with HF too: a shard where they differ is redone
with HF. The summary says which engine ran per shard and, when tiktoken was refused, why. Worker processes (``workers``) take one shard each; each worker's
thread count is set so that ``workers * threads`` is about the number of CPUs. No torch import here
(fast worker start-up).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.config import Config, ConfigError, atomic_write_text, option, sha256_file, temp_path_beside
from lmforge.data.documents import Accounting, DataError, iter_lines, list_shards, parse_document
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.objectstore import as_path
from lmforge.data.token_files import SUMMARY_NAME, MetadataRow, choose_dtype, load_tokenizer, output_name
from lmforge.storage import commit_file, lock_output, remove_stale_temporaries

__all__ = ["DEFAULT_MAX_DOCUMENT_CHARS", "DEFAULT_MAX_TOKENS_PER_FILE", "TokenizeConfig", "TokenizeTask", "tokenize"]

FORMAT = "lmforge.tokenize/1"
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
#: characters of a shard's first documents that the worker encodes with both engines (tiktoken's audit)
ENGINE_CHECK_CHARS = 1 << 16
#: and one document in this many after that
AUDIT_EVERY = 256
_PART_RE = re.compile(r"^part-(\d{5,})-(\d{5,})\.(npy|csv\.gz)$")
_DONE_RE = re.compile(r"^part-(\d{5,})\.json$")


@dataclasses.dataclass
class TokenizeConfig(Config):
    """What ``lmforge data tokenize`` does (each field is also its command-line flag)."""

    documents: list[str] = option(help="document files, directories or globs")
    tokenizer: str = option(help="tokenizer JSON path (HF tokenizers format), or an OLMo tokenizer name: olmo1, olmo2, gpt-neox-pii")
    out: str = option(help="output directory")
    workers: int = option(1, help="processes (one input shard each; the output does not depend on it)")
    dtype: str | None = option(None, help="uint16 | uint32 (default: uint16 when the vocabulary fits)")
    add_bos: bool = option(False, help="also put BOS before every document")
    eos_id: int | None = option(None, help="EOS id (default: the tokenizer's)")
    bos_id: int | None = option(None, help="BOS id (default: the tokenizer's)")
    pad_id: int | None = option(None, help="PAD id (default: the tokenizer's)")
    strip_whitespace: bool = option(False, help="strip each text first (dolma's behaviour)")
    max_document_chars: int = option(DEFAULT_MAX_DOCUMENT_CHARS, help="longer documents are dropped and counted in the accounting (bounds memory)")
    max_tokens_per_file: int = option(DEFAULT_MAX_TOKENS_PER_FILE, help="a token file is closed before a document would take it past this")
    engine: str = option("auto", help="BPE engine: auto (tiktoken where shown to give HF's ids, else HF tokenizers) | hf | tiktoken")
    threads: int | None = option(None, cli=False)  # Rust threads per worker (default: CPUs // workers)
    batch_chars: int = option(DEFAULT_BATCH_CHARS, cli=False)  # characters of text per encode_batch call

    def validate(self) -> None:
        if self.max_tokens_per_file < 2:
            raise ConfigError(f"max_tokens_per_file must be >= 2, got {self.max_tokens_per_file}")
        if self.max_document_chars < 1:
            raise ConfigError(f"max_document_chars must be >= 1, got {self.max_document_chars}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.engine not in ("auto", "hf", "tiktoken"):
            raise ConfigError(f"engine must be one of auto, hf, tiktoken, got {self.engine!r}")


@dataclasses.dataclass(frozen=True)
class TokenizeTask:
    """One input shard's work (picklable: it crosses to worker processes)."""

    shard: str
    index: int
    out_dir: str
    tokenizer_path: str
    tokenizer_sha256: str
    eos_id: int
    bos_id: int | None  # None: no BOS written
    pad_id: int | None
    dtype: str  # numpy dtype name
    max_tokens_per_file: int
    strip_whitespace: bool
    threads: int | None = None  # Rust threads in the worker (None: the tokenizers default)
    batch_chars: int = DEFAULT_BATCH_CHARS
    max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS
    engine: str = "hf"  # "hf" or "tiktoken" (resolved: shown to give the same ids)


# --- small pieces ----------------------------------------------------------------------------------
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


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


_WORKER_TOKENIZER: dict[tuple, Any] = {}


def _worker_tokenizer(task: TokenizeTask):
    """The tokenizer, loaded once per process (a worker handles many shards; loading GPT-NeoX's
    file takes ~0.1 s). Keyed by sha256, so a changed file is reloaded."""
    key = (task.tokenizer_path, task.tokenizer_sha256, task.eos_id, task.bos_id, task.pad_id)
    if key not in _WORKER_TOKENIZER:
        _WORKER_TOKENIZER.clear()
        _WORKER_TOKENIZER[key] = load_tokenizer(task.tokenizer_path, task.eos_id, task.bos_id, task.pad_id)
    return _WORKER_TOKENIZER[key]


_WORKER_ENGINE: dict[tuple, Any] = {}


def _worker_engine(task: TokenizeTask):
    """The tiktoken engine for the task's tokenizer, built once per process (the parent verified it for
    this file: same sha256)."""
    from lmforge.tokenizer.fast import fast_engine

    key = (task.tokenizer_path, task.tokenizer_sha256, task.eos_id, task.bos_id, task.pad_id)
    if key not in _WORKER_ENGINE:
        _WORKER_ENGINE.clear()
        _WORKER_ENGINE[key] = fast_engine(_worker_tokenizer(task), verified=True)
    return _WORKER_ENGINE[key]


def _choose_engine(cfg: TokenizeConfig, tok, tokenizer_path: Path, sha: str) -> tuple[str, str | None]:
    from lmforge.tokenizer.fast import EngineRefused, choose_engine

    try:
        return choose_engine(cfg.engine, tok, sha256=sha)
    except EngineRefused as e:
        raise DataError(f"engine=tiktoken: tokenizer {tokenizer_path} cannot be shown to give the same ids with tiktoken ({e}); "
                        "use engine=auto or engine=hf") from None


# --- one shard -------------------------------------------------------------------------------------
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


def _fingerprint(task: TokenizeTask) -> dict[str, Any]:
    """What a shard's marker vouches for (stored in it: its keys, their order and values are part of
    the on-disk format; ``max_document_chars`` only when not the default)."""
    st = as_path(task.shard).stat()
    keys = ("shard", "index", "tokenizer_sha256", "eos_id", "bos_id", "dtype", "max_tokens_per_file", "strip_whitespace")
    fp = {"format": FORMAT, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **{k: getattr(task, k) for k in keys}}
    if task.max_document_chars != DEFAULT_MAX_DOCUMENT_CHARS:
        fp["max_document_chars"] = task.max_document_chars
    return fp


def _complete(out_dir: Path, task: TokenizeTask) -> dict[str, Any] | None:
    """The stored result of a finished shard, or None when it must be (re)done."""
    done = _done_path(out_dir, task.index)
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


class EngineDisagreed(Exception):
    """tiktoken's ids differed from HF's on an audited document (the shard is redone with HF)."""


class _ShardTokenizer:
    """The documents of one shard, encoded in batches of about ``batch_chars`` characters and
    appended to ``part-{index}-*`` files, each closed before a document would overflow it."""

    def __init__(self, task: TokenizeTask):
        self.task, self.out_dir = task, as_path(task.out_dir)
        backend = _worker_tokenizer(task).backend
        self.encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch  # _fast: no offsets
        self.engine = _worker_engine(task) if task.engine == "tiktoken" else None
        self.audited_chars = 0  # the shard's first ENGINE_CHECK_CHARS characters and every AUDIT_EVERY-th document
        self.seen = 0  # are encoded by both engines (a difference: EngineDisagreed, the shard is redone with HF)
        self.dtype = np.dtype(task.dtype)
        self.eos, self.bos = task.eos_id, task.bos_id
        self.src = str(task.shard)
        self.acct = Accounting()
        self.files: list[dict[str, Any]] = []
        self.writer: _PartWriter | None = None
        self.tokens = 0

    def encoded(self, texts: list[str]) -> list[np.ndarray]:
        """Each document as one array ``[BOS] ids EOS`` (no Python list of every id); each encoding is
        freed as soon as its ids are out."""
        if self.engine is not None:
            encs = self.engine.encode_batch(texts, num_threads=self.task.threads or _cpus())  # one worker: all CPUs, as HF's Rust pool
            self.audit(texts, encs)
        else:
            encs = self.encode(texts, add_special_tokens=False)
        texts.clear()  # the caller's list: the text of this batch is no longer needed
        head = 1 if self.bos is not None else 0
        docs = []
        for i in range(len(encs)):
            ids = encs[i] if self.engine is not None else encs[i].ids
            encs[i] = None
            doc = np.empty(len(ids) + 1 + head, dtype=self.dtype)
            if head:
                doc[0] = self.bos
            doc[head:-1] = ids
            doc[-1] = self.eos
            docs.append(doc)
        return docs

    def audit(self, texts: list[str], ids: list[np.ndarray]) -> None:
        """Compare tiktoken's ids with HF's on the audited documents of this batch."""
        picked = []
        for i, t in enumerate(texts):
            if self.audited_chars < ENGINE_CHECK_CHARS or (self.seen + i) % AUDIT_EVERY == 0:
                picked.append(i)
                self.audited_chars += len(t)
        if picked:
            theirs = self.encode([texts[i] for i in picked], add_special_tokens=False)
            for i, enc in zip(picked, theirs):
                if not np.array_equal(ids[i], np.asarray(enc.ids, dtype=np.int64)):
                    raise EngineDisagreed(f"tiktoken's ids differed from HF tokenizers' on document {self.seen + i + 1} of the shard")
        self.seen += len(texts)

    def flush(self, texts: list[str], meta: list[tuple[str, int]]) -> None:
        if not texts:
            return
        docs: list[np.ndarray] = []
        rows: list[tuple[int, int, str, str, int]] = []
        start = self.writer.tokens if self.writer is not None else 0
        for doc, (doc_id, loc) in zip(self.encoded(texts), meta):
            n = len(doc)
            if self.writer is None or (start + n > self.task.max_tokens_per_file and start > 0):
                if self.writer is not None:  # roll over to the next file (a document is never split)
                    if docs:
                        self.writer.write(docs, rows)
                    self.files.append(self.writer.close())
                    docs, rows = [], []
                self.writer = _PartWriter(self.out_dir, output_name(self.task.index, len(self.files)), self.dtype)
                start = 0
            docs.append(doc)
            rows.append((start, start + n, doc_id, self.src, loc))
            start += n
            self.tokens += n
        self.writer.write(docs, rows)
        self.acct.keep(len(meta))

    def run(self) -> list[str]:
        """Read, encode and write the whole shard; the errors of a damaged input (what was read
        before the damage is kept)."""
        task, errors = self.task, []
        max_chars, batch_chars = task.max_document_chars, task.batch_chars
        texts: list[str] = []
        meta: list[tuple[str, int]] = []
        chars = 0
        try:
            for n, raw in iter_lines(task.shard):
                doc = parse_document(raw, f"{self.src}:{n}", self.acct)
                if doc is None:
                    continue
                # parse_document already refused whitespace-only texts, so a stripped text is never empty
                text = doc.text.strip() if task.strip_whitespace else doc.text
                if len(text) > max_chars:  # bounded memory per document: counted, not a crash
                    self.acct.drop(f"longer than {max_chars:,} characters (max_document_chars)")
                    continue
                texts.append(text)
                meta.append((doc.id, n))
                chars += len(text)
                if chars >= batch_chars:
                    self.flush(texts, meta)
                    texts, meta, chars = [], [], 0
        except DataError as e:  # TruncatedFileError and friends: keep what was read before the damage
            errors.append(str(e))
        self.flush(texts, meta)
        if self.writer is not None:
            self.files.append(self.writer.close())
            self.writer = None
        return errors

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _tokenize_shard(task: TokenizeTask) -> dict[str, Any]:
    """Tokenize one input shard into ``part-{index}-*`` files; returns a picklable result."""
    out_dir = as_path(task.out_dir)
    if task.threads:
        # must happen before the first encode in this process (the Rust pool starts then)
        os.environ.setdefault("RAYON_NUM_THREADS", str(task.threads))
        os.environ.setdefault("RAYON_RS_NUM_CPUS", str(task.threads))
        os.environ["TOKENIZERS_PARALLELISM"] = "true"  # a spawned worker: Rust threads are safe
    stored = _complete(out_dir, task)
    if stored is not None:
        return {**stored, "skipped": True}
    note = None
    while True:
        _remove_shard_outputs(out_dir, task.index)
        shard = _ShardTokenizer(task)
        try:
            errors = shard.run()
            break
        except EngineDisagreed as e:  # redo the whole shard with the reference engine
            shard.abort()
            note = f"{e}: the shard was redone with HF tokenizers"
            task = dataclasses.replace(task, engine="hf")
        except BaseException:
            shard.abort()
            raise
    shard.acct.errors.extend(errors)
    shard.acct.check()
    result = {"shard": shard.src, "index": task.index, "files": shard.files, "tokens": shard.tokens,
              "accounting": shard.acct.to_json(), "errors": errors, "engine": "tiktoken" if shard.engine is not None else "hf"}
    if note:
        result["engine_note"] = note
    done = _done_path(out_dir, task.index)
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps({"fingerprint": _fingerprint(task), "result": result}, indent=1) + "\n")
    return {**result, "skipped": False}


# --- the whole job ----------------------------------------------------------------------------------
def tokenize(cfg: TokenizeConfig, *, progress: bool = True, raise_on_error: bool = True, executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Tokenize the Dolma document shards of ``cfg.documents`` into OLMo token files in ``cfg.out``;
    returns the summary (also written to ``OUT/tokenize_summary.json``).

    ``documents``: files, directories or globs (see :func:`lmforge.data.documents.list_shards`).
    ``tokenizer``: a tokenizers JSON file, or an OLMo tokenizer name (``olmo1``, ``olmo2``, ...:
    its file and registered ids); ``eos_id``/``bos_id``/``pad_id`` override the ids found by token
    string. BOS is written only with ``add_bos`` (then the tokenizer must have one, or give
    ``bos_id``). A document longer than ``max_document_chars`` is not tokenized but counted as
    dropped (it bounds memory). Raises :class:`DataError` (one line, naming the file) after writing
    everything it could when an input file was damaged (``raise_on_error=False`` returns the summary
    instead, errors under ``"errors"``)."""
    t0 = time.perf_counter()
    cfg.validate()
    shards = list_shards(cfg.documents)
    if not shards:
        raise DataError(f"no document files found in {', '.join(map(str, cfg.documents))}")
    tokenizer_path, eos_id, pad_id = _tokenizer_file(cfg)
    tok = load_tokenizer(str(tokenizer_path), eos_id, cfg.bos_id, pad_id)
    if cfg.add_bos and tok.bos_token_id is None:
        raise DataError(f"add_bos=True but tokenizer {tokenizer_path} has no BOS token; pass bos_id= (or --bos-id) or drop add_bos")
    bos = tok.bos_token_id if cfg.add_bos else None
    dt = _resolve_dtype(cfg.dtype, tok.vocab_size)
    out = as_path(cfg.out)
    with lock_output(out, "lmforge data tokenize"):  # one tokenize at a time writes OUT
        remove_stale_temporaries(out)  # left by killed runs (we hold the lock: no live run's)
        remove_stale_temporaries(out / DONE_DIR)
        summary = _tokenize_locked(cfg, shards, tokenizer_path, tok, out, dt, bos, progress, executor)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    errors = summary["errors"]
    if errors and raise_on_error:
        more = f" (and {len(errors) - 1} more damaged file(s); see {out / SUMMARY_NAME})" if len(errors) > 1 else ""
        raise DataError(errors[0] + "; its earlier documents were tokenized" + more)
    return summary


def _tokenizer_file(cfg: TokenizeConfig) -> tuple[Path, int | None, int | None]:
    """The tokenizer file, and the EOS/PAD ids to use: an OLMo tokenizer given by name brings its file
    and its registered ids (unless overridden)."""
    path, eos_id, pad_id = Path(cfg.tokenizer), cfg.eos_id, cfg.pad_id
    if not path.exists():
        from lmforge.tokenizer.olmo import OLMO_TOKENIZERS, fetch_olmo_tokenizers

        spec = OLMO_TOKENIZERS.get(cfg.tokenizer)
        if spec is not None:
            path = Path(fetch_olmo_tokenizers()[cfg.tokenizer])
            eos_id = spec.eos_token_id if eos_id is None else eos_id
            pad_id = spec.pad_token_id if pad_id is None else pad_id
    return path, eos_id, pad_id


def _tokenize_locked(cfg: TokenizeConfig, shards: list[Path], tokenizer_path: Path, tok, out: Path, dt: np.dtype, bos: int | None,
                     progress: bool, executor: ExecutorConfig | None) -> dict[str, Any]:
    sha = sha256_file(tokenizer_path)
    engine, refused = _choose_engine(cfg, tok, tokenizer_path, sha)
    workers = max(1, int(cfg.workers))
    nthreads = cfg.threads or max(1, _cpus() // min(workers, len(shards)))
    base = TokenizeTask(
        shard="", index=-1, out_dir=str(out), tokenizer_path=str(tokenizer_path), tokenizer_sha256=sha, eos_id=tok.eos_token_id, bos_id=bos,
        pad_id=tok.pad_token_id, dtype=dt.name, max_tokens_per_file=int(cfg.max_tokens_per_file),
        strip_whitespace=bool(cfg.strip_whitespace), threads=nthreads if workers > 1 and len(shards) > 1 else cfg.threads,
        batch_chars=int(cfg.batch_chars), max_document_chars=int(cfg.max_document_chars), engine=engine,
    )
    tasks = [dataclasses.replace(base, shard=str(s), index=i) for i, s in enumerate(shards)]
    _remove_stale(out, len(shards))
    results = run_tasks(_tokenize_shard, tasks, workers=workers, executor=executor, desc="tokenize", progress=progress,
                        describe=lambda t: t.shard)
    acct = Accounting()
    files: list[dict[str, Any]] = []
    errors: list[str] = []
    for r in results:
        acct.merge(Accounting.from_json(r["accounting"]))
        files.extend({**f, "shard": r["shard"]} for f in r["files"])
        errors.extend(r["errors"])
    acct.check()
    return {
        "format": FORMAT,
        "out_dir": str(out),
        "inputs": [str(s) for s in shards],
        "tokenizer": {"path": str(tokenizer_path.resolve()), "sha256": sha, "vocab_size": tok.vocab_size, "eos_token_id": tok.eos_token_id,
                      "bos_token_id": tok.bos_token_id, "pad_token_id": tok.pad_token_id},
        "dtype": dt.name,
        "add_bos": bool(cfg.add_bos),
        "bos_written": bos,
        "strip_whitespace": bool(cfg.strip_whitespace),
        "max_tokens_per_file": int(cfg.max_tokens_per_file),
        "max_document_chars": int(cfg.max_document_chars),
        "metadata_columns": list(MetadataRow._fields),
        "documents": acct.kept,
        "tokens": sum(r["tokens"] for r in results),
        "accounting": acct.to_json(),
        "errors": errors,
        "shards": len(shards),
        "shards_skipped": sum(bool(r.get("skipped")) for r in results),
        "engine": engine,  # what this run chose; per shard (a rerun skips shards done before): shards_by_engine
        "engine_refused": refused,
        "shards_by_engine": dict(collections.Counter(r.get("engine", "hf") for r in results)),
        "engine_notes": [f"{r['shard']}: {r['engine_note']}" for r in results if r.get("engine_note")],
        "files": files,
        "seconds": None,
        "input_bytes": sum(s.stat().st_size for s in shards),
    }


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
