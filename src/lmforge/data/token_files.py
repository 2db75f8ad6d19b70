"""OLMo token files: the format ``dolma tokens`` writes and OLMo's trainer reads, and reading it.

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

They are written by :func:`lmforge.corpus.tokenize.tokenize`.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lmforge.data.documents import DataError, iter_lines

__all__ = ["SUMMARY_NAME", "MetadataRow", "choose_dtype", "detokenize_check", "load_tokenizer", "output_name", "read_metadata",
           "read_summary", "read_token_file"]

SUMMARY_NAME = "tokenize_summary.json"


class MetadataRow(NamedTuple):
    """One document in a token file: ``tokens[start:end]`` (EOS included), dolma's column order."""

    start: int
    end: int
    id: str
    src: str
    loc: int


def choose_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab_size <= 65536), else ``uint32``."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} ids does not fit uint32")


def output_name(shard_index: int, file_index: int) -> str:
    """``part-00000-00000`` (no extension): dolma's naming, group = input shard index."""
    return f"part-{shard_index:05d}-{file_index:05d}"


def load_tokenizer(path: str, eos_id: int | None, bos_id: int | None, pad_id: int | None):
    from lmforge.tokenizer.core import Tokenizer

    return Tokenizer.from_file(path, eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=bos_id)


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
    tok = load_tokenizer(str(tok_path), tinfo["eos_token_id"], tinfo.get("bos_token_id"), tinfo["pad_token_id"])
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
