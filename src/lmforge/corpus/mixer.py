"""The mixer: keep or drop documents by typed rules over attributes, edit spans, sample per source.

Input: Dolma-layout documents (``ROOT/documents/...``) and attribute files written by the taggers
and the deduper (``ROOT/attributes/<experiment>/...``, one line per document, same order).
Output: new document shards of bounded size, plus ``mix_summary.json`` that accounts for every input
document (kept, dropped by which rule, malformed) and says which rules never fired.

A rule reads one attribute key and reduces its spans to a number::

    MixRule(attribute="q__gopher_quality__passes", reduce="score", op="<", value=1, action="drop")

``reduce``: ``score`` (score of the first span; documents-level attributes have exactly one),
``count`` (number of spans), ``max``/``min``/``sum`` of span scores, ``fraction`` (share of the
text's characters the spans cover). A missing key reduces to ``count``/``sum``/``fraction`` = 0 and
``score``/``max``/``min`` = None, which no comparison matches. Numbers are compared as numbers:
``1`` and ``1.0`` are equal (dolma 1.2.1's JSONPath filter silently matched nothing there).

``action="drop"`` drops a document when the comparison holds; ``action="keep"`` drops it when the
comparison does not hold. A rule that never decides anything on a whole run, or whose attribute key
never appears, is listed in the summary and printed as a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Literal

from lmforge.config import Config, ConfigError, atomic_write_text, sha256_file
from lmforge.data.documents import (
    Accounting,
    AtomicWriter,
    DataError,
    Document,
    TruncatedFileError,
    attributes_path,
    list_shards,
    read_attributes,
    read_documents,
)
from lmforge.corpus.executors import ExecutorConfig, run_tasks
from lmforge.objectstore import as_path
from lmforge.storage import lock_output, remove_stale_temporaries

PII_MASKS = {"email": "|||EMAIL_ADDRESS|||", "phone": "|||PHONE_NUMBER|||", "ip": "|||IP_ADDRESS|||"}
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


@dataclasses.dataclass
class MixRule(Config):
    attribute: str = ""
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">="
    value: float = 0.0
    reduce: Literal["score", "count", "max", "min", "sum", "fraction"] = "score"
    action: Literal["drop", "keep"] = "drop"
    name: str | None = None  # shown in the summary; default: the rule written out

    @property
    def label(self) -> str:
        return self.name or f"{self.action} if {self.reduce}({self.attribute}) {self.op} {self.value:g}"

    def validate(self) -> None:
        if not self.attribute:
            raise ConfigError("mix rule needs 'attribute' (an attribute key such as exp__tagger__key)")


@dataclasses.dataclass
class SpanEdit(Config):
    attribute: str = ""
    replacement: str = ""  # "" removes the span
    min_score: float = 0.0  # spans whose score is below this are left alone

    def validate(self) -> None:
        if not self.attribute:
            raise ConfigError("span edit needs 'attribute'")


@dataclasses.dataclass
class MixerConfig(Config):
    documents: list[str] = dataclasses.field(default_factory=list)  # files, directories or globs
    attributes: list[str] = dataclasses.field(default_factory=list)  # experiment names to join
    output: str = "mixed"
    rules: list[MixRule] = dataclasses.field(default_factory=list)
    span_edits: list[SpanEdit] = dataclasses.field(default_factory=list)
    sampling: dict[str, float] = dataclasses.field(default_factory=dict)  # source -> rate (2.5 = up-sample)
    max_shard_bytes: int = 100_000_000  # uncompressed bytes per output shard
    compression: Literal["gz", "zst", "none"] = "gz"
    seed: int = 0
    workers: int = 1

    def validate(self) -> None:
        for source, rate in self.sampling.items():
            if not isinstance(rate, (int, float)) or rate < 0:
                raise ConfigError(f"sampling.{source} must be a rate >= 0, got {rate!r}")
        if self.max_shard_bytes <= 0:
            raise ConfigError("max_shard_bytes must be positive")


def pii_span_edits(experiment: str, tagger: str = "pii") -> list[SpanEdit]:
    """Span edits that mask the PII tagger's spans with OLMo's placeholder tokens."""
    return [SpanEdit(attribute=f"{experiment}__{tagger}__{key}", replacement=mask) for key, mask in PII_MASKS.items()]


# --- one document ----------------------------------------------------------------------------------
def reduce_spans(spans: list | None, how: str, text_len: int) -> float | None:
    if not spans:
        return 0.0 if how in ("count", "sum", "fraction") else None
    scores = [float(s[2]) if len(s) > 2 and s[2] is not None else 1.0 for s in spans]
    if how == "score":
        return scores[0]
    if how == "count":
        return float(len(spans))
    if how == "max":
        return max(scores)
    if how == "min":
        return min(scores)
    if how == "sum":
        return sum(scores)
    covered = sum(e - s for s, e in _merge([(int(s[0]), int(s[1])) for s in spans]))
    return covered / max(text_len, 1)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def apply_span_edits(text: str, attrs: dict[str, list], edits: list[SpanEdit], counts: Counter) -> str:
    """Replace or remove spans; overlapping spans merge (the first edit's replacement wins)."""
    marked: list[tuple[int, int, str]] = []
    for edit in edits:
        for span in attrs.get(edit.attribute) or []:
            score = float(span[2]) if len(span) > 2 and span[2] is not None else 1.0
            if score >= edit.min_score:
                s, e = max(0, int(span[0])), min(len(text), int(span[1]))
                if e > s:
                    marked.append((s, e, edit.replacement))
                    counts[edit.attribute] += 1
    if not marked:
        return text
    marked.sort(key=lambda m: (m[0], -m[1]))
    pieces, pos = [], 0
    for s, e, repl in marked:
        if s < pos:  # overlaps an edit already applied
            if e > pos:
                pos = e
            continue
        pieces.append(text[pos:s])
        pieces.append(repl)
        pos = e
    pieces.append(text[pos:])
    return "".join(pieces)


def copies_for(doc_id: str, rate: float, seed: int) -> int:
    """Deterministic sampling: floor(rate) copies, plus one more with probability frac(rate)."""
    whole = int(rate)
    frac = rate - whole
    if frac <= 0:
        return whole
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "little") / 2**64
    return whole + (1 if u < frac else 0)


# --- one shard --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MixTask:
    """One input shard's work (picklable: it crosses to worker processes); ``cfg``: the
    :class:`MixerConfig` as a dict (not hashable: never used as a key)."""

    index: int
    path: str
    cfg: dict[str, Any]


def _joined(doc_path: Path, experiments: list[str], acct: Accounting) -> Iterator[tuple[Document, dict[str, list]]]:
    readers = []
    for exp in experiments:
        ap = attributes_path(doc_path, exp)
        if not ap.is_file():
            raise DataError(f"{ap}: attribute file missing for {doc_path}; run the tagger/deduper for '{exp}' first")
        readers.append((ap, read_attributes(ap)))
    for doc in read_documents(doc_path, acct):
        attrs: dict[str, list] = {}
        for ap, rows in readers:
            row = next(rows, None)
            if row is None or str(row.get("id")) != doc.id:
                got = "end of file" if row is None else f"id {row.get('id')!r}"
                raise DataError(f"{ap}: expected attributes for document id {doc.id!r}, found {got}; attributes are out of date, rerun that stage")
            attrs.update(row.get("attributes") or {})
        yield doc, attrs


def _shard_fingerprint(task: MixTask, cfg: "MixerConfig") -> dict[str, Any]:
    """What a shard's output depends on: its input files (document and attribute files, by size and
    mtime) and the settings (not the number of workers)."""
    settings = {k: v for k, v in task.cfg.items() if k != "workers"}
    inputs = [task.path] + [str(attributes_path(task.path, exp)) for exp in cfg.attributes]
    stats = []
    for p in inputs:
        try:
            st = os.stat(p)
            stats.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([p, None, None])
    return {"inputs": stats, "settings": settings}


def _stored_result(marker: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """A finished shard's result when its marker matches and every file it lists is intact."""
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
        if stored.get("fingerprint") != fingerprint:
            return None
        for f, digest in stored["sha256"].items():
            if sha256_file(f) != digest:
                return None
        return stored["result"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


class _Parts:
    """The output files of one shard, ``part-SSSSS-NNNN``, each started once the last holds
    ``max_bytes`` of text."""

    def __init__(self, out_dir: Path, index: int, suffix: str, max_bytes: int):
        self.out_dir, self.index, self.suffix, self.max_bytes = out_dir, index, suffix, max_bytes
        self.files: list[str] = []
        self.writer: AtomicWriter | None = None
        self.size = 0

    def write(self, line: str, nbytes: int) -> None:
        if self.writer is None or self.size >= self.max_bytes:
            if self.writer is not None:
                self.files.append(str(self.writer.close()))
            self.writer = AtomicWriter(self.out_dir / f"part-{self.index:05d}-{len(self.files):04d}{self.suffix}")
            self.size = 0
        self.writer.write(line)
        self.size += nbytes

    def close(self) -> list[str]:
        if self.writer is not None:
            self.files.append(str(self.writer.close()))
            self.writer = None
        return self.files

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _verdict(doc: Document, attrs: dict[str, list], cfg: MixerConfig, matched: Counter, edits: Counter) -> tuple[str | None, int]:
    """``(why the document is dropped, or None; how many copies of it are written)``: the first
    rule that drops it, then the span edits (applied to ``doc.text``), then the source's sampling rate."""
    for rule in cfg.rules:
        value = reduce_spans(attrs.get(rule.attribute), rule.reduce, len(doc.text))
        holds = value is not None and _OPS[rule.op](value, rule.value)
        matched[rule.label] += holds
        if holds == (rule.action == "drop"):
            return rule.label, 0
    if cfg.span_edits:
        doc.text = apply_span_edits(doc.text, attrs, cfg.span_edits, edits)
        if not doc.text.strip():
            return "empty after span edits", 0
    n = copies_for(doc.id, cfg.sampling.get(doc.source, 1.0), cfg.seed)
    return (f"sampled out ({doc.source})", 0) if n == 0 else (None, n)


def mix_shard(task: MixTask) -> dict[str, Any]:
    cfg = MixerConfig.from_dict(task.cfg)
    out_dir = as_path(cfg.output) / "documents"
    suffix = {"gz": ".jsonl.gz", "zst": ".jsonl.zst", "none": ".jsonl"}[cfg.compression]
    done_marker = as_path(cfg.output) / "_shards" / f"part-{task.index:05d}.json"
    fingerprint = _shard_fingerprint(task, cfg)
    stored = _stored_result(done_marker, fingerprint)
    if stored is not None:  # finished on an earlier run, same inputs and settings, files intact
        return stored
    done_marker.unlink(missing_ok=True)
    if out_dir.is_dir():  # an earlier, different or interrupted run of this shard: its files go
        for p in out_dir.glob(f"part-{task.index:05d}-*"):
            p.unlink()

    acct = Accounting()
    fired: Counter = Counter()  # rule label -> documents it dropped
    matched: Counter = Counter()  # rule label -> documents whose comparison held
    seen_keys: Counter = Counter()
    edits: Counter = Counter()
    source_bytes_in: Counter = Counter()
    source_bytes_out: Counter = Counter()
    written = 0
    parts = _Parts(out_dir, task.index, suffix, cfg.max_shard_bytes)
    try:
        for doc, attrs in _joined(as_path(task.path), cfg.attributes, acct):
            seen_keys.update(attrs.keys())
            source_bytes_in[doc.source] += len(doc.text.encode("utf-8"))
            reason, n = _verdict(doc, attrs, cfg, matched, edits)
            if reason is not None:
                acct.drop(reason)
                fired[reason] += 1
                continue
            acct.keep()
            line = doc.to_json()
            nbytes = len(doc.text.encode("utf-8"))
            for _ in range(n):
                parts.write(line, nbytes)
                written += 1
                source_bytes_out[doc.source] += nbytes
    except TruncatedFileError as e:
        acct.errors.append(str(e))  # what was read before the damage is kept
    except BaseException:
        parts.abort()
        raise
    files = parts.close()
    result = {
        "accounting": acct.to_json(),
        "rule_matched": dict(matched),
        "dropped_by": dict(fired),
        "attribute_keys_seen": dict(seen_keys),
        "span_edits": dict(edits),
        "bytes_in": dict(source_bytes_in),
        "bytes_out": dict(source_bytes_out),
        "written": written,
        "files": files,
    }
    sha = {f: sha256_file(f) for f in files}  # the marker vouches for these exact bytes
    atomic_write_text(done_marker, json.dumps({"fingerprint": fingerprint, "sha256": sha, "result": result}))
    return result


# --- a whole run ------------------------------------------------------------------------------------
def mix(cfg: MixerConfig, *, progress: bool = True, executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Run the mixer over every shard; returns (and writes) the run summary."""
    shards = list_shards(cfg.documents)
    if not shards:
        raise DataError(f"no document files found in {cfg.documents}")
    with lock_output(cfg.output, "lmforge data mix"):  # one mix at a time writes an output
        return _mix_locked(cfg, shards, progress, executor)


def _mix_locked(cfg: MixerConfig, shards: list[Path], progress: bool, executor: ExecutorConfig | None) -> dict[str, Any]:
    out = as_path(cfg.output)
    for d in (out, out / "documents", out / "_shards"):
        remove_stale_temporaries(d)  # left by killed runs (we hold the lock: no live run's)
    _remove_stale_shards(out, len(shards))
    cfg.save(out / "mix_config.yaml")
    tasks = [MixTask(i, str(p), cfg.to_dict()) for i, p in enumerate(shards)]
    results = run_tasks(mix_shard, tasks, workers=cfg.workers, executor=executor, desc="mix", progress=progress, describe=lambda t: t.path)

    acct = Accounting()
    totals: dict[str, Counter] = {k: Counter() for k in ("rule_matched", "dropped_by", "attribute_keys_seen", "span_edits", "bytes_in", "bytes_out")}
    files, written = [], 0
    for r in results:
        acct.merge(Accounting.from_json(r["accounting"]))
        for k in totals:
            totals[k].update(r[k])
        files += r["files"]
        written += r["written"]
    acct.check()
    warnings = []
    for rule in cfg.rules:
        if totals["attribute_keys_seen"][rule.attribute] == 0:
            warnings.append(f"rule '{rule.label}': attribute '{rule.attribute}' never present in any document (typo, or a stage not run?)")
        elif totals["dropped_by"][rule.label] == 0:
            warnings.append(f"rule '{rule.label}' never dropped a document ({totals['rule_matched'][rule.label]} matched)")
    for edit in cfg.span_edits:
        if totals["attribute_keys_seen"][edit.attribute] == 0:
            warnings.append(f"span edit on '{edit.attribute}': attribute never present")
    for source in cfg.sampling:
        if totals["bytes_in"][source] == 0:
            warnings.append(f"sampling.{source}: no document has this source")
    summary = {
        "accounting": acct.to_json(),
        "written_documents": written,
        "files": files,
        "bytes_in_by_source": dict(totals["bytes_in"]),
        "bytes_out_by_source": dict(totals["bytes_out"]),
        "rules": {r.label: {"matched": totals["rule_matched"][r.label], "dropped": totals["dropped_by"][r.label]} for r in cfg.rules},
        "span_edits": dict(totals["span_edits"]),
        "warnings": warnings,
    }
    atomic_write_text(as_path(cfg.output) / "mix_summary.json", json.dumps(summary, indent=2))
    return summary


def _remove_stale_shards(out: Path, n_shards: int) -> None:
    """Output files and markers of shard indices beyond the current input list (an earlier run on more inputs)."""
    import re

    for sub, rx in (("documents", r"^part-(\d{5})-\d{4}\."), ("_shards", r"^part-(\d{5})\.json$")):
        d = out / sub
        if d.is_dir():
            for p in d.iterdir():
                m = re.match(rx, p.name)
                if m and int(m.group(1)) >= n_shards:
                    p.unlink()


__all__ = ["MixRule", "SpanEdit", "MixerConfig", "mix", "mix_shard", "pii_span_edits", "apply_span_edits", "reduce_spans", "copies_for"]
