"""Perplexity and bits per byte per domain over JSONL documents, by Paloma's rules.

    results = perplexity_suite(model, tokenizer, ["paloma/c4_100_domains", "my_eval/"])
    results["domains"]["c4_100_domains/www.ign.com"]["bpb"]
    results["sources"]["c4_100_domains"]["macro_bpb"]

or as ``lmforge eval perplexity`` does it (load, score, write a results JSON)::

    evaluate_perplexity(PerplexityEvalConfig(model="CKPT_OR_HF_DIR", data=["paloma/dolma-v1_5"], out="results/ppl.json"))

**Rules** (Paloma, Magnusson et al. 2023; the same as lm-evaluation-harness's rolling log-likelihood):

* Every document is scored on its own: no concatenation, nothing of one document is context for another.
* The document is tokenized with nothing added: no BOS, no EOS, and no EOS is scored at its end.
  Its tokens ``t_1 .. t_n`` are all predicted, ``t_1`` included: the first position's context is a
  single *prefix* token, the tokenizer's BOS when it has one and its EOS otherwise (what
  lm-evaluation-harness and OLMo's Paloma evaluation do: a document starts where the previous one
  ended). The prefix token itself is never scored and never counted.
* With ``seq = [prefix] + tokens`` and the model's length ``L``, the document is cut into disjoint
  windows that each predict up to ``L`` new tokens: window 1 reads ``seq[0:L]`` and predicts
  ``t_1..t_L``, window 2 reads ``seq[L:2L]`` and predicts ``t_{L+1}..t_{2L}``, and so on. The last,
  partial window takes earlier tokens as context: it reads the last ``L`` tokens of ``seq`` but only
  its not-yet-predicted tokens are scored. Every token is predicted exactly once (see
  :func:`plan_windows`).
* Per domain: tokens (predicted tokens), bytes (UTF-8 bytes of the document texts as stored), the sum
  of negative log-likelihoods ``nll`` (natural log), ``ppl = exp(nll / tokens)`` and
  ``bpb = nll / (bytes * ln 2)``.
* Per source: ``macro_ppl`` and ``macro_bpb`` weight its domains equally (the mean of the domains'
  figures, Paloma's headline numbers); ``micro_ppl`` and ``micro_bpb`` pool all its tokens and bytes.
  ``overall`` gives the same over every domain of every source.

**Layouts.** Each path given is one of:

* ``SOURCE/`` holding ``SPLIT/`` (``split="val"`` by default): Paloma's own layout. The source is
  ``SOURCE``; each document file in ``SOURCE/SPLIT/`` is a domain, named after the file without its
  suffix and without the ``val_`` prefix (``dolma-v1_5/val/val_books.jsonl.gz`` is domain ``books``);
  each subdirectory of ``SOURCE/SPLIT/`` is a domain made of all the document files under it.
* ``DIR/`` holding subdirectories and/or document files, but no ``SPLIT/``: ``DIR`` is a source,
  each subdirectory ``DIR/<domain>/`` is a domain (all document files under it, so shards of one
  domain go in one subdirectory) and each document file directly in ``DIR`` is a domain of its own.
* ``ROOT/`` whose subdirectories hold ``SPLIT/`` (the whole Paloma download, ``paloma/``): each
  subdirectory with ``SPLIT/`` is a source, read as above; subdirectories without it are skipped with
  a warning, and document files directly in ``ROOT`` are an error.
* One document file: a source (named after its directory) with that file as its only domain.

Document files are ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` (and ``.json[.gz|.zst]``) in Dolma's
format, read with :func:`lmforge.data.documents.read_documents`.

**Accounting.** Nothing is dropped silently: each domain reports ``scored`` documents, ``empty``
ones (whitespace-only text, or text that encodes to no tokens) and ``malformed`` lines (bad JSON, no
``text``, invalid UTF-8, blank lines...), with the full :class:`~lmforge.data.documents.Accounting`
(``file:line`` examples included). A domain with nothing scored has ``None`` metrics and is left out of
the averages (and listed in ``unscored_domains``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from lmforge.config import ConfigError, atomic_write_text
from lmforge.data.documents import Accounting, DataError, TruncatedFileError, is_document_file, read_documents
from lmforge.eval.config import PerplexityEvalConfig
from lmforge.formatting import format_number
from lmforge.nn.loss import IGNORE_INDEX

__all__ = [
    "Domain",
    "Window",
    "discover_domains",
    "evaluate_perplexity",
    "format_table",
    "perplexity_suite",
    "plan_windows",
    "score_token_lists",
]

LN2 = math.log(2.0)
EMPTY_REASONS = ("empty document", "no tokens")  # whitespace-only text (reader) / encodes to nothing (here)


# --- windows ----------------------------------------------------------------------------------------
class Window(NamedTuple):
    """One forward pass over part of ``seq = [prefix] + tokens``.

    The model reads ``seq[start:end]`` and predicts ``seq[start+1:end+1]``; only the last ``n_scored``
    predictions are scored, i.e. the targets ``seq[end-n_scored+1 : end+1]``.
    """

    start: int
    end: int
    n_scored: int


def plan_windows(n_tokens: int, max_len: int) -> list[Window]:
    """Paloma's disjoint windows for a document of ``n_tokens`` tokens (prefix token not counted).

    Window ``k`` predicts tokens ``k*L+1 .. (k+1)*L`` of ``seq`` (1-based into ``seq``, 0 is the
    prefix) reading ``seq[k*L : (k+1)*L]``; the last window, if partial, reads the last ``L`` positions
    ``seq[n-L : n]`` and scores only its new predictions. No documents: no windows.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    windows: list[Window] = []
    predicted = 0
    while predicted < n_tokens:
        new = min(max_len, n_tokens - predicted)
        end = predicted + new  # the last target is seq[end]
        start = max(0, end - max_len)
        windows.append(Window(start, end, new))
        predicted = end
    return windows


# --- domains ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Domain:
    source: str
    name: str
    files: list[Path]

    @property
    def key(self) -> str:
        return f"{self.source}/{self.name}"


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _doc_files_under(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*") if f.is_file() and is_document_file(f) and _visible(f))


def _strip_suffix(name: str) -> str:
    for suffix in (".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _file_domain_name(f: Path, split: str | None, source: str) -> str:
    name = _strip_suffix(f.name)
    if split and f.parent.name == split:
        if name == split:
            return source  # SOURCE/val/val.jsonl.gz: the source's only domain
        if name.startswith(split + "_"):
            name = name[len(split) + 1 :]
    return name


def _domains_of_source(src: Path, split: str) -> list[Domain]:
    base = src / split if (src / split).is_dir() else src
    out: list[Domain] = []
    for child in sorted(base.iterdir()):
        if not _visible(child):
            continue
        if child.is_dir():
            files = _doc_files_under(child)
            if files:
                out.append(Domain(src.name, child.name, files))
        elif child.is_file() and is_document_file(child):
            out.append(Domain(src.name, _file_domain_name(child, split, src.name), [child]))
    if not out:
        where = f"{src}/{split}" if base != src else str(src)
        raise DataError(f"{where}: no document files (.jsonl, .jsonl.gz, .jsonl.zst) and no domain subdirectories with any")
    return out


def discover_domains(paths: str | os.PathLike | Sequence[str | os.PathLike], *, split: str = "val") -> list[Domain]:
    """The domains (grouped by source) that ``paths`` name; see the module docstring for the layouts."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    domains: list[Domain] = []
    for p in map(Path, paths):
        if p.is_file():
            if not is_document_file(p):
                raise DataError(f"{p}: not a document file (.jsonl, .jsonl.gz, .jsonl.zst)")
            parent = p.parent.resolve()
            source = parent.parent.name if parent.name == split else parent.name
            domains.append(Domain(source or "documents", _file_domain_name(p, split, source), [p]))
        elif p.is_dir():
            if (p / split).is_dir():
                domains += _domains_of_source(p, split)
                continue
            children = [c for c in sorted(p.iterdir()) if _visible(c)]
            if any(c.is_dir() and (c / split).is_dir() for c in children):
                loose = [c.name for c in children if c.is_file() and is_document_file(c)]
                if loose:
                    raise DataError(
                        f"{p}: mixes source directories (with {split}/) and document files ({', '.join(loose[:3])}); "
                        "move the files into a directory of their own"
                    )
                for c in children:
                    if c.is_dir() and (c / split).is_dir():
                        domains += _domains_of_source(c, split)
                    elif c.is_dir() and _doc_files_under(c):
                        warnings.warn(f"{c}: has no {split}/ directory; skipped (its siblings are sources with {split}/)", stacklevel=2)
            else:
                domains += _domains_of_source(p, split)
        else:
            raise DataError(f"{p}: no such file or directory")
    seen: dict[str, Domain] = {}
    for d in domains:
        if d.key in seen:
            raise DataError(
                f"domain {d.key!r} found twice ({seen[d.key].files[0]} and {d.files[0]}); "
                "give each source directory a distinct name"
            )
        seen[d.key] = d
    return domains


# --- scoring ----------------------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _token_nll(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """(B, T) negative log-likelihood of ``labels[b, t]`` given ``ids[b, :t+1]``, float32, 0 where ignored.

    For lmforge's OLMo the output projection is applied only to the scored positions, chunk by chunk
    (the full logits never exist); other models go through their logits.
    """
    keep = labels != IGNORE_INDEX
    out = torch.zeros(labels.shape, dtype=torch.float32, device=ids.device)
    if hasattr(model, "head_weight"):
        hidden = model(ids, return_hidden=True)  # (B, T, d)
        weight = model.head_weight
        rows = hidden[keep]  # (N, d) only the scored positions
        targets = labels[keep]
        nll = torch.empty(rows.shape[0], dtype=torch.float32, device=ids.device)
        for s in range(0, rows.shape[0], chunk_size):
            logits = (rows[s : s + chunk_size] @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[s : s + chunk_size] = lse - logits.gather(1, targets[s : s + chunk_size, None]).squeeze(1)
        out[keep] = nll
        return out
    logits = model(ids)
    logits = getattr(logits, "logits", logits).float()
    logp = torch.log_softmax(logits, dim=-1)
    safe = torch.where(keep, labels, 0)
    out = -logp.gather(-1, safe[..., None]).squeeze(-1)
    return out * keep


@torch.no_grad()
def score_token_lists(
    model: torch.nn.Module,
    token_lists: Sequence[Sequence[int] | np.ndarray],
    *,
    prefix_id: int,
    max_len: int,
    batch_size: int = 8,
    pad_id: int | None = None,
    bar: Any = None,
) -> np.ndarray:
    """Sum of NLL (float64, natural log) of every document's tokens, by :func:`plan_windows`.

    Windows of all documents are sorted by length (longest first) and packed ``batch_size`` to a
    batch, padded on the right (causal attention: padding after a position cannot change it) with
    label -100. ``bar``: a tqdm bar advanced by the number of windows done.
    """
    device = _model_device(model)
    pad = prefix_id if pad_id is None else pad_id
    seqs = [np.concatenate([[prefix_id], np.asarray(t, dtype=np.int64)]) for t in token_lists]
    work = [(i, w) for i, s in enumerate(seqs) for w in plan_windows(len(s) - 1, max_len)]
    work.sort(key=lambda iw: -(iw[1].end - iw[1].start))
    totals = np.zeros(len(seqs), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(work), batch_size):
            chunk = work[b : b + batch_size]
            T = max(w.end - w.start for _, w in chunk)
            ids = np.full((len(chunk), T), pad, dtype=np.int64)
            labels = np.full((len(chunk), T), IGNORE_INDEX, dtype=np.int64)
            for r, (i, w) in enumerate(chunk):
                n = w.end - w.start
                ids[r, :n] = seqs[i][w.start : w.end]
                labels[r, n - w.n_scored : n] = seqs[i][w.end - w.n_scored + 1 : w.end + 1]
            nll = _token_nll(model, torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device))
            sums = nll.double().sum(dim=1).cpu().numpy()
            for r, (i, _) in enumerate(chunk):
                totals[i] += sums[r]
            if bar is not None:
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return totals


# --- the suite --------------------------------------------------------------------------------------
def _prefix_token(tokenizer) -> tuple[int, str]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return int(bos), "bos"
    return int(tokenizer.eos_token_id), "eos"


def _metrics(nll: float, tokens: int, nbytes: int) -> dict[str, float | None]:
    if tokens == 0:
        return {"ppl": None, "bpb": None}
    mean = nll / tokens
    return {"ppl": math.exp(mean) if mean < 709 else math.inf, "bpb": nll / (max(nbytes, 1) * LN2)}


def _read_domain(domain: Domain, acct: Accounting, max_documents: int | None) -> list[str]:
    texts: list[str] = []
    for f in domain.files:
        if max_documents is not None and len(texts) >= max_documents:
            break
        docs = read_documents(f, acct)
        try:
            for doc in docs:
                texts.append(doc.text)
                if max_documents is not None and len(texts) >= max_documents:
                    break
        except TruncatedFileError as e:
            acct.errors.append(str(e))
            warnings.warn(f"{domain.key}: {e}", stacklevel=3)
        finally:
            docs.close()
    return texts


def _domain_accounting(acct: Accounting) -> dict[str, Any]:
    empty = sum(acct.malformed.get(r, 0) + acct.dropped.get(r, 0) for r in EMPTY_REASONS)
    malformed = sum(v for r, v in acct.malformed.items() if r not in EMPTY_REASONS)
    return {"scored": acct.kept, "empty": empty, "malformed": malformed, "errors": list(acct.errors), "detail": acct.to_json()}


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if r["tokens"] > 0]
    nll = sum(r["nll"] for r in scored)
    tokens = sum(r["tokens"] for r in scored)
    nbytes = sum(r["bytes"] for r in scored)
    micro = _metrics(nll, tokens, nbytes)
    return {
        "domains": len(rows),
        "scored_domains": len(scored),
        "macro_ppl": float(np.mean([r["ppl"] for r in scored])) if scored else None,
        "macro_bpb": float(np.mean([r["bpb"] for r in scored])) if scored else None,
        "micro_ppl": micro["ppl"],
        "micro_bpb": micro["bpb"],
        "documents": sum(r["documents"] for r in rows),
        "tokens": tokens,
        "bytes": nbytes,
        "nll": nll,
        "unscored_domains": [f"{r['source']}/{r['domain']}" for r in rows if r["tokens"] == 0],
    }


def _score_domain(model, tokenizer, domain: Domain, prefix_id: int, L: int, batch_size: int, max_documents: int | None, progress: bool) -> dict[str, Any]:
    """One domain's row: its documents read, tokenized (empty ones counted) and scored in windows of ``L``."""
    from tqdm.auto import tqdm

    acct = Accounting()
    texts = _read_domain(domain, acct, max_documents)
    encoded = tokenizer.encode_batch(texts) if texts else []
    keep_texts, keep_ids = [], []
    for text, ids in zip(texts, encoded):
        if len(ids) == 0:
            acct.drop("no tokens")
        else:
            acct.keep()
            keep_texts.append(text)
            keep_ids.append(np.asarray(ids, dtype=np.int64))
    acct.check()
    n_windows = sum(len(plan_windows(len(t), L)) for t in keep_ids)
    with tqdm(total=n_windows, desc=domain.key, unit="window", leave=False, disable=not progress, dynamic_ncols=True) as bar:
        doc_nll = score_token_lists(model, keep_ids, prefix_id=prefix_id, max_len=L, batch_size=batch_size, bar=bar)
    tokens = int(sum(len(t) for t in keep_ids))
    nbytes = int(sum(len(t.encode("utf-8")) for t in keep_texts))
    nll = float(doc_nll.sum())
    return {
        "source": domain.source,
        "domain": domain.name,
        "files": [str(f) for f in domain.files],
        "documents": len(keep_ids),
        "windows": n_windows,
        "tokens": tokens,
        "bytes": nbytes,
        "nll": nll,
        **_metrics(nll, tokens, nbytes),
        "accounting": _domain_accounting(acct),
    }


def perplexity_suite(
    model: torch.nn.Module,
    tokenizer,
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    max_seq_len: int | None = None,
    batch_size: int = 8,
    max_documents: int | None = None,
    split: str = "val",
    progress: bool = True,
) -> dict[str, Any]:
    """Score every domain under ``paths`` by Paloma's rules (module docstring); returns plain JSON data:

    ``{"settings": {...}, "domains": {"SOURCE/DOMAIN": {...}}, "sources": {"SOURCE": {...}}, "overall": {...}}``

    ``max_seq_len``: window length (default and maximum: the model's ``max_seq_len``).
    ``max_documents``: score only the first N valid documents of each domain (file order), for quick runs.
    """
    from tqdm.auto import tqdm

    model_max = getattr(getattr(model, "config", None), "max_seq_len", None)
    L = max_seq_len or model_max
    if L is None:
        raise ConfigError("perplexity: the model has no config.max_seq_len; pass max_seq_len")
    if model_max is not None and L > model_max:
        raise ConfigError(f"perplexity: max_seq_len {L} exceeds the model's max_seq_len {model_max}")
    if L < 1 or batch_size < 1:
        raise ConfigError(f"perplexity: max_seq_len and batch_size must be >= 1, got {L} and {batch_size}")
    if max_documents is not None and max_documents < 1:
        raise ConfigError(f"perplexity: max_documents must be >= 1, got {max_documents}")
    if hasattr(model, "embed"):
        from lmforge.tokenizer import check_fits

        check_fits(tokenizer, model.embed.weight.shape[0])
    prefix_id, prefix_kind = _prefix_token(tokenizer)
    domains = discover_domains(paths, split=split)

    rows: dict[str, dict[str, Any]] = {}
    outer = tqdm(domains, desc="perplexity", unit="domain", disable=not progress, dynamic_ncols=True)
    for domain in outer:
        outer.set_postfix_str(domain.key)
        rows[domain.key] = _score_domain(model, tokenizer, domain, prefix_id, L, batch_size, max_documents, progress)

    sources: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["source"] for r in rows.values()):
        sources[name] = _aggregate([r for r in rows.values() if r["source"] == name])
    return {
        "settings": {
            "max_seq_len": L,
            "batch_size": batch_size,
            "max_documents": max_documents,
            "split": split,
            "first_token_context": prefix_kind,
            "prefix_token_id": prefix_id,
            "rules": "paloma: documents scored separately, disjoint windows of max_seq_len, last window with earlier context, no EOS scored",
        },
        "domains": rows,
        "sources": sources,
        "overall": _aggregate(list(rows.values())),
    }


# --- reporting --------------------------------------------------------------------------------------
def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per domain, then one per source (macro averages) and the overall figures."""
    lines = [
        "| source | domain | docs | tokens | bytes | ppl | bpb | empty | malformed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["domains"].values():
        a = r["accounting"]
        lines.append(
            f"| {r['source']} | {r['domain']} | {r['documents']:,} | {r['tokens']:,} | {r['bytes']:,} | "
            f"{format_number(r['ppl'], '.3f')} | {format_number(r['bpb'], '.4f')} | {a['empty']:,} | {a['malformed']:,} |"
        )
    lines += [
        "",
        "| source | domains | docs | tokens | macro ppl | macro bpb | micro ppl | micro bpb |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in [*results["sources"].items(), ("**all**", results["overall"])]:
        lines.append(
            f"| {name} | {s['scored_domains']}/{s['domains']} | {s['documents']:,} | {s['tokens']:,} | "
            f"{format_number(s['macro_ppl'], '.3f')} | {format_number(s['macro_bpb'], '.4f')} | {format_number(s['micro_ppl'], '.3f')} | {format_number(s['micro_bpb'], '.4f')} |"
        )
    return "\n".join(lines)


def evaluate_perplexity(cfg: PerplexityEvalConfig) -> dict[str, Any]:
    """``lmforge eval perplexity``: load ``cfg.model``, score ``cfg.data``, write the results JSON to
    ``cfg.out`` atomically; returns the results document (what was written).

    ``cfg.model``: lmforge checkpoint or HF directory (:func:`lmforge.release.load_pretrained`).
    ``cfg.tokenizer``: a tokenizer file, directory or known name, when the model directory has none.
    ``cfg.device``: default ``cuda`` when available, else ``cpu``. ``cfg.dtype``: float32 | bfloat16 | float16.
    """
    from lmforge import __version__
    from lmforge.config import parse_dtype
    from lmforge.eval.loading import load_for_eval

    cfg.validate()
    dtype = parse_dtype(cfg.dtype)
    model, tok, device = load_for_eval(cfg.model, tokenizer=cfg.tokenizer, device=cfg.device, dtype=dtype)
    paths = list(cfg.data)
    results = perplexity_suite(
        model, tok, paths, max_seq_len=cfg.max_seq_len, batch_size=cfg.batch_size, max_documents=cfg.max_documents,
        split=cfg.split, progress=cfg.progress,
    )
    mcfg = getattr(model, "config", None)
    doc = {
        "kind": "perplexity",
        "model": str(cfg.model),
        "config": mcfg.to_dict() if hasattr(mcfg, "to_dict") else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": str(getattr(tok, "source", cfg.tokenizer)),
        "data": [str(p) for p in paths],
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "command": list(sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lmforge_version": __version__,
        **results,
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return doc
