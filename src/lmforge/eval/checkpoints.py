"""Evaluate a run's checkpoints: bits per byte per domain and downstream accuracy against tokens seen.

    summary = evaluate_checkpoints(sorted(glob("runs/x/checkpoints/step*")), "runs/x/eval",
                                   tasks=["arc_easy", "piqa"], perplexity_data=["paloma/c4_en"])
    summary["rows"][-1]["macro_bpb"], summary["rows"][-1]["tasks"]["piqa"]["primary"]

or ``lmforge eval checkpoints RUN/checkpoints/step* --out DIR --tasks arc_easy,piqa --data DOMAINS...``
(:func:`evaluate_across_checkpoints`). What it writes under ``out_dir``::

    per_checkpoint/<name>.json    each checkpoint's results (the cache: a rerun skips what is done)
    summary.json                  one row per checkpoint + what produced them (command, versions, config)
    summary.md                    the same rows as a markdown table
    bpb_vs_tokens.png             bits per byte per domain and their macro average vs tokens seen
    downstream_vs_tokens.png      each task's primary metric vs tokens seen, random chance dashed
    gold_bpb_vs_tokens.png        the generative tasks' gold bits per byte (TASK:bpb) vs tokens seen

Under ``torchrun --nproc_per_node N`` the checkpoints are dealt out to the processes (each evaluates
its own in full, one device each, and writes its cache files); rank 0 then reads every cache file
and writes the summary, which is the one-process summary.

Checkpoints are directories :func:`lmforge.release.load_pretrained` reads: lmforge checkpoints
(``RUN/checkpoints/stepNNNNNNN``, whose ``extra.json`` gives ``step`` and ``tokens_seen``) or HF model
directories. Without ``extra.json`` the step comes from the name (``step(\\d+)``) and the tokens from
OLMo's revision naming (``step1000-tokens4B``, ``stage1-step1000-tokens5B``, ``step8-tokens4096``),
else they are unknown (the plots then use steps). A run directory (holding ``checkpoints/``) stands
for all its complete checkpoints.

Cache: ``per_checkpoint/<name>.json`` is written atomically after each part (perplexity, then the
downstream tasks), so a killed run resumes at the part it was in. A part is reused only when its
settings match (data paths, ``max_documents`` / formulation, limit, task version) and the checkpoint's
weights file has the size and mtime it had (a re-saved step is evaluated again). Tasks are cached one by
one: adding a task to a rerun scores only that task. An unreadable cache file is recomputed, with a
warning.
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
from typing import Any, Sequence

import torch

from lmforge.config import ConfigError, atomic_write_text, parse_dtype
from lmforge.eval.checkpoint_plots import bpb_columns, plot_bpb, plot_downstream, plot_gold_bpb
from lmforge.eval.config import CheckpointsEvalConfig
from lmforge.eval.downstream import evaluate_tasks, load_examples, parse_tasks, task_version
from lmforge.eval.generative_tasks import GEN_TASKS
from lmforge.eval.loading import load_for_eval, resolve_tokenizer
from lmforge.eval.perplexity import perplexity_suite
from lmforge.eval.spread import Spread
from lmforge.formatting import format_count, format_number

__all__ = [
    "EvaluatedCheckpoint",
    "evaluated_checkpoint",
    "find_checkpoints",
    "evaluate_checkpoints",
    "evaluate_across_checkpoints",
    "format_summary",
    "write_summary",
    "PER_CHECKPOINT",
]

PER_CHECKPOINT = "per_checkpoint"
SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"
BPB_PLOT, DOWNSTREAM_PLOT, GOLD_BPB_PLOT = "bpb_vs_tokens.png", "downstream_vs_tokens.png", "gold_bpb_vs_tokens.png"
CACHE_FORMAT = 1
PMI = "primary"  # unconditional requests only where the primary metric needs them

# --- which checkpoints ------------------------------------------------------------------------------
class EvaluatedCheckpoint:
    """A checkpoint directory with its ``name`` (cache key), ``step`` and ``tokens_seen`` (or None)."""

    __slots__ = ("path", "name", "step", "tokens_seen", "source")

    def __init__(self, path: Path, name: str, step: int, tokens_seen: int | None, source: str):
        self.path, self.name, self.step, self.tokens_seen, self.source = path, name, step, tokens_seen, source

    def __repr__(self) -> str:
        return f"EvaluatedCheckpoint({str(self.path)!r}, step={self.step}, tokens_seen={self.tokens_seen}, from {self.source})"


def parse_name(name: str) -> tuple[int | None, int | None]:
    """``(step, tokens)`` from a directory name: ``step0001000`` -> (1000, None); OLMo revisions
    ``step1000-tokens4B`` -> (1000, 4_000_000_000), ``stage1-step1000-tokens5B``, ``step8-tokens4096``."""
    from lmforge.release.naming import parse_checkpoint_name  # the one reader of stepN-tokensM names

    return parse_checkpoint_name(name)


def evaluated_checkpoint(path: str | os.PathLike) -> EvaluatedCheckpoint:
    """Step and tokens seen of one checkpoint directory: ``extra.json`` first, then the name."""
    from lmforge.checkpoint.sharded import EXTRA_JSON

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{p}: no such checkpoint directory")
    name_step, name_tokens = parse_name(p.name)
    extra_path = p / EXTRA_JSON
    if extra_path.is_file():
        try:
            extra = json.loads(extra_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{extra_path}: unreadable ({e})") from None
        if isinstance(extra, dict) and isinstance(extra.get("step"), int):
            tokens = extra.get("tokens_seen")
            tokens = int(tokens) if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) else name_tokens
            return EvaluatedCheckpoint(p, p.name, int(extra["step"]), tokens, EXTRA_JSON)
    if name_step is None:
        raise ConfigError(f"{p}: cannot tell its step (no {EXTRA_JSON} with 'step', no 'stepN' in the name)")
    return EvaluatedCheckpoint(p, p.name, name_step, name_tokens, "name")


def find_checkpoints(paths: Sequence[str | os.PathLike]) -> list[EvaluatedCheckpoint]:
    """The checkpoints of ``paths`` (checkpoint directories, or run directories holding
    ``checkpoints/``), sorted by step; duplicates dropped; names must be distinct."""
    from lmforge.checkpoint.sharded import CHECKPOINTS, list_checkpoints

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: dict[Path, EvaluatedCheckpoint] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"{p}: no such checkpoint directory")
        is_model = any((p / w).is_file() for w in ("model.safetensors", "model.safetensors.index.json"))
        if p.is_dir() and (p / CHECKPOINTS).is_dir() and not is_model:  # a run directory
            ckpts = [c for _, c in list_checkpoints(p)]
            if not ckpts:
                raise ConfigError(f"{p}: a run directory without complete checkpoints")
        else:
            ckpts = [p]
        for c in ckpts:
            key = c.resolve()
            if key not in found:
                found[key] = evaluated_checkpoint(c)
    infos = sorted(found.values(), key=lambda i: (i.step, i.name))
    names: dict[str, Path] = {}
    for i in infos:
        if i.name in names:
            raise ConfigError(f"two checkpoints named {i.name!r} ({names[i.name]} and {i.path}); evaluate one run at a time")
        names[i.name] = i.path
    if not infos:
        raise ConfigError("no checkpoints given")
    return infos


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size and mtime of the weights file(s): a re-saved checkpoint is evaluated again."""
    files = sorted(path.glob("*.safetensors"))
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.name != "extra.safetensors" and f.is_file()}


# --- the cache ----------------------------------------------------------------------------------------
def _cache_path(out_dir: Path, name: str) -> Path:
    return out_dir / PER_CHECKPOINT / f"{name}.json"


def _read_cache(path: Path, info: EvaluatedCheckpoint) -> dict[str, Any]:
    """The cached results of ``info`` (parts whose checkpoint changed are dropped); {} if none."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
            raise ValueError("not a per-checkpoint results file of this lmforge")
    except (OSError, ValueError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        warnings.warn(f"{path}: unreadable cached results ({msg}); evaluating {info.name} again", stacklevel=3)
        return {}
    if doc.get("fingerprint") != _fingerprint(info.path):
        warnings.warn(f"{path}: {info.path} changed since it was evaluated; evaluating it again", stacklevel=3)
        return {}
    return doc


def _write_cache(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def _ppl_settings(data: list[Path], max_documents: int | None, split: str, max_seq_len: int | None) -> dict[str, Any]:
    return {"data": [str(p) for p in data], "max_documents": max_documents, "split": split, "max_seq_len": max_seq_len}


def _ds_settings(formulation: str, limit: int | None, version: Any) -> dict[str, Any]:
    return {"formulation": formulation, "limit": limit, "tokenization": "separate", "pmi": PMI, "version": version}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


# --- evaluation ---------------------------------------------------------------------------------------
def _chance(tasks: Sequence[str], formulation: str, limit: int | None) -> dict[str, float | None]:
    """Random-chance accuracy per task: 1 / number of choices, averaged over the evaluated examples."""
    out: dict[str, float | None] = {}
    for name, exs in load_examples(tasks, formulation, limit, pmi=False).items():
        gold_bpb = name.endswith(":bpb")  # bits per byte has no chance level
        out[name] = sum(1.0 / len(e.choices) for e in exs) / len(exs) if exs and not gold_bpb else None
    return out


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Plan:
    """What every checkpoint gets: the settings and what the cache entries must match."""

    task_names: list[str]
    data: list[Path]
    formulation: str
    limit: int | None
    max_documents: int | None
    batch_size: int
    split: str
    max_seq_len: int | None
    progress: bool
    versions: dict[str, Any]

    @property
    def ppl_key(self) -> dict[str, Any]:
        return _ppl_settings(self.data, self.max_documents, self.split, self.max_seq_len)

    def ds_key(self, task: str) -> dict[str, Any]:
        return _ds_settings(self.formulation, self.limit, self.versions[task])


def _check_settings(task_names: list[str], data: list[Path], limit: int | None, max_documents: int | None, batch_size: int) -> None:
    if not task_names and not data:
        raise ConfigError("evaluate_checkpoints: nothing to evaluate; give tasks and/or perplexity data")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be positive, got {limit}")
    if max_documents is not None and max_documents < 1:
        raise ConfigError(f"--max-documents must be positive, got {max_documents}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    for t in task_names:
        if t in GEN_TASKS:
            raise ConfigError(f"task '{t}' generates text: across checkpoints use its gold bits per byte, '{t}:bpb' (or run 'lmforge eval downstream' per checkpoint)")
    for p in data:
        if not p.exists():
            raise ConfigError(f"{p}: no such perplexity data file or directory")


def evaluate_checkpoints(
    checkpoints: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    tasks: Sequence[str] | str | None = None,
    formulation: str = "rc_0shot",
    limit: int | None = None,
    perplexity_data: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    max_documents: int | None = None,
    batch_size: int = 16,
    tokenizer: Any = None,
    progress: bool = True,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    split: str = "val",
    max_seq_len: int | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate every checkpoint (perplexity suite over ``perplexity_data`` and/or the downstream
    ``tasks``), write the per-checkpoint cache, ``summary.json``, ``summary.md`` and the plots under
    ``out_dir``; returns the summary document (``rows``: one per checkpoint, by step).

    ``tokenizer``: a Tokenizer, or a path / known name, for checkpoints that hold none (it then
    replaces theirs). ``batch_size``: for both the perplexity windows and the downstream requests.
    ``device``: default ``cuda`` when available. ``dtype``: float32 | bfloat16 | float16.
    """
    task_names = parse_tasks(tasks) if tasks else []
    if isinstance(perplexity_data, (str, os.PathLike)):
        perplexity_data = [perplexity_data]
    data = [Path(p).resolve() for p in (perplexity_data or [])]
    _check_settings(task_names, data, limit, max_documents, batch_size)
    dtype = parse_dtype(dtype)
    infos = find_checkpoints(checkpoints)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    versions = {t: task_version(t, formulation) for t in task_names}
    chance = _chance(task_names, formulation, limit) if task_names else {}
    plan = _Plan(task_names, data, formulation, limit, max_documents, batch_size, split, max_seq_len, progress, versions)
    tok = resolve_tokenizer(tokenizer)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    spread = Spread.current()
    if spread.world > 1 and device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    docs: list[dict[str, Any]] = []
    for k, info in enumerate(infos, 1):
        path = _cache_path(out, info.name)
        if (k - 1) % spread.world != spread.rank:
            docs.append({})  # another process's checkpoint: read back from its cache file below
            continue
        doc = _read_cache(path, info)
        ppl_done = bool(data) and (doc.get("perplexity") or {}).get("settings") == plan.ppl_key
        cached_tasks = (doc.get("downstream") or {}).get("tasks") or {}
        todo = [t for t in task_names if (cached_tasks.get(t) or {}).get("settings") != plan.ds_key(t)]
        if (ppl_done or not data) and not todo:
            _say(progress, f"[{k}/{len(infos)}] {info.name} (step {info.step}): cached")
            docs.append(doc)
            continue
        _say(progress, f"[{k}/{len(infos)}] {info.name} (step {info.step}): evaluating")
        if not doc:
            doc = {"format": CACHE_FORMAT}
        doc.update(
            checkpoint=info.name, path=str(info.path), step=info.step, tokens_seen=info.tokens_seen,
            step_source=info.source, fingerprint=_fingerprint(info.path),
        )
        model, use_tok, _ = load_for_eval(info.path, tokenizer=tok, device=device, dtype=dtype)
        try:
            _evaluate_one(model, use_tok, doc, path, plan, bool(data) and not ppl_done, todo, tokenizer)
        finally:
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        docs.append(doc)

    if spread.world > 1:
        spread.barrier()  # every cache file is written
        docs = [doc or _read_cache(_cache_path(out, info.name), info) for doc, info in zip(docs, infos)]
    summary = _summary(infos, docs, task_names, chance, versions, formulation, limit, data, max_documents, split, command)
    if spread.is_main:
        write_summary(summary, out)
    spread.barrier()
    return summary


def _evaluate_one(model, tok, doc: dict[str, Any], path: Path, plan: _Plan, ppl: bool, todo: list[str], tokenizer: Any) -> None:
    """Run the parts of one checkpoint that are not cached (perplexity when ``ppl``, the tasks of
    ``todo``) into ``doc``, writing the cache file after each part."""
    model.eval()
    cfg = getattr(model, "config", None)
    doc["config"] = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    doc["parameters"] = sum(p.numel() for p in model.parameters())
    doc["tokenizer"] = str(getattr(tok, "source", None) or tokenizer or "checkpoint")
    doc["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    if ppl:
        res = perplexity_suite(
            model, tok, plan.data, max_seq_len=plan.max_seq_len, batch_size=plan.batch_size,
            max_documents=plan.max_documents, split=plan.split, progress=plan.progress,
        )
        doc["perplexity"] = {"settings": plan.ppl_key, "results": _clean(res)}
        doc["date"] = _now()
        _write_cache(path, doc)
    if todo:
        res = evaluate_tasks(
            model, tok, todo, formulation=plan.formulation, limit=plan.limit, batch_size=plan.batch_size,
            progress=plan.progress, pmi=PMI,
        )
        tasks_doc = doc.setdefault("downstream", {}).setdefault("tasks", {})
        for name, row in res["tasks"].items():
            tasks_doc[name] = {"settings": plan.ds_key(name), **_clean(row)}
        doc["date"] = _now()
        _write_cache(path, doc)


def evaluate_across_checkpoints(cfg: CheckpointsEvalConfig) -> dict[str, Any]:
    """``lmforge eval checkpoints``: :func:`evaluate_checkpoints` with the settings of ``cfg``;
    returns the summary (its ``files``: what was written under ``cfg.out``)."""
    cfg.validate()
    return evaluate_checkpoints(
        cfg.checkpoints, cfg.out, tasks=cfg.tasks or None, formulation=cfg.formulation, limit=cfg.limit,
        perplexity_data=cfg.data, max_documents=cfg.max_documents, batch_size=cfg.batch_size, tokenizer=cfg.tokenizer,
        progress=cfg.progress, device=cfg.device, dtype=cfg.dtype,
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _summary(infos, docs, task_names, chance, versions, formulation, limit, data, max_documents, split, command) -> dict[str, Any]:
    from lmforge import __version__

    rows = []
    for info, doc in zip(infos, docs):
        row: dict[str, Any] = {
            "checkpoint": info.name, "path": str(info.path), "step": info.step, "tokens_seen": info.tokens_seen,
        }
        if data:
            res = doc["perplexity"]["results"]
            row["bpb"] = {key: d["bpb"] for key, d in res["domains"].items()}
            row["ppl"] = {key: d["ppl"] for key, d in res["domains"].items()}
            row["source_bpb"] = {key: s["macro_bpb"] for key, s in res["sources"].items()}
            row["macro_bpb"] = res["overall"]["macro_bpb"]
            row["macro_ppl"] = res["overall"]["macro_ppl"]
        if task_names:
            cached = doc["downstream"]["tasks"]
            row["tasks"] = {
                t: {"primary_metric": cached[t]["primary_metric"], "primary": cached[t]["primary"], "acc": cached[t]["acc"], "n": cached[t]["n"]}
                for t in task_names
            }
            prim = [r["primary"] for r in row["tasks"].values() if r["primary"] is not None and r["primary_metric"] != "bpb"]
            row["average"] = sum(prim) / len(prim) if prim else None
        rows.append(row)
    last = docs[-1] if docs else {}
    configs = {json.dumps(d.get("config"), sort_keys=True) for d in docs}
    n_examples = {t: rows[-1]["tasks"][t]["n"] for t in task_names} if rows and task_names else {}
    return {
        "kind": "checkpoints",
        "command": list(command) if command is not None else list(sys.argv),
        "date": _now(),
        "lmforge_version": __version__,
        "checkpoints": [str(i.path) for i in infos],
        "model_config": last.get("config"),
        "parameters": last.get("parameters"),
        "configs_differ": len(configs) > 1,
        "tokenizer": last.get("tokenizer"),
        "tasks": list(task_names),
        "formulation": formulation if task_names else None,
        "limit": limit,
        "task_versions": versions,
        "n_examples": n_examples,
        "chance": chance,
        "perplexity_data": [str(p) for p in data],
        "max_documents": max_documents,
        "split": split if data else None,
        "rows": rows,
    }


# --- outputs ------------------------------------------------------------------------------------------
def format_summary(summary: dict[str, Any]) -> str:
    """Markdown: one row per checkpoint; bpb per domain (per source when there are many domains),
    macro bpb, each task's primary metric, the average of the primary metrics."""
    field, keys = bpb_columns(summary)
    tasks = summary["tasks"]
    head = ["checkpoint", "step", "tokens"]
    head += [f"bpb {k}" if field == "bpb" else f"bpb {k} (macro)" for k in keys]
    if keys:
        head.append("macro bpb")
    head += [f"{t} ({summary['rows'][0]['tasks'][t]['primary_metric']})" if summary["rows"] else t for t in tasks]
    if tasks:
        head.append("average")
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * (len(head) - 3)]
    for r in summary["rows"]:
        cells = [r["checkpoint"], str(r["step"]), format_count(r["tokens_seen"])]
        cells += [format_number(r[field].get(k)) for k in keys]
        if keys:
            cells.append(format_number(r.get("macro_bpb")))
        cells += [format_number(r["tasks"][t]["primary"]) for t in tasks]
        if tasks:
            cells.append(format_number(r.get("average")))
        lines.append("| " + " | ".join(cells) + " |")
    if tasks and summary.get("chance"):
        chance = [summary["chance"].get(t) for t in tasks]
        known = [c for c in chance if c is not None]
        cells = ["*chance*", "", ""] + [""] * (len(keys) + (1 if keys else 0))
        cells += [format_number(c) for c in chance] + [format_number(sum(known) / len(known) if known else None)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """summary.json, summary.md and the plots (those that have data) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / SUMMARY_JSON, "markdown": out / SUMMARY_MD}
    plots = (("bpb_plot", plot_bpb, BPB_PLOT), ("downstream_plot", plot_downstream, DOWNSTREAM_PLOT),
             ("gold_bpb_plot", plot_gold_bpb, GOLD_BPB_PLOT))
    for key, fn, name in plots:
        p = fn(summary, out / name)
        if p is not None:
            files[key] = p
    summary["files"] = {k: str(v) for k, v in files.items()}
    atomic_write_text(files["json"], json.dumps(_clean(summary), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(files["markdown"], format_summary(summary) + "\n")
    return files
