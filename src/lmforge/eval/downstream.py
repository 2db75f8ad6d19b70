"""Downstream multiple-choice evaluation: tasks -> requests -> scores -> metrics -> results files.

    results = evaluate_tasks(model, tokenizer, ["arc_easy", "hellaswag"], limit=100)
    results["tasks"]["hellaswag"]["primary"]          # OLMES's metric for the task
    write_results(results, "results/ds.json", model_path=..., model_config=..., command=sys.argv)
    print(format_table(results))
    print(compare_results("a.json", "b.json"))

or ``evaluate_downstream(DownstreamEvalConfig(model=MODEL, tasks="arc_easy", out="out.json"))``
(``lmforge eval downstream``: load, evaluate, write), and ``DownstreamEvaluator`` in the trainer's
in-loop ``Evaluation`` callback.

The tasks and their formatting come from :mod:`lmforge.eval.tasks`, the metrics from
:mod:`lmforge.eval.metrics`; the scoring (batched, sorted, shared prefix) from
:mod:`lmforge.eval.scoring`. All requests of all tasks go to the scorer in one call, so batches are
filled across tasks and shared contexts are run once.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from lmforge.config import ConfigError, atomic_write_text
from lmforge.distributed import rank_and_world, unwrap
from lmforge.eval import metrics
from lmforge.eval.config import DownstreamEvalConfig, Pmi, pmi_setting
from lmforge.eval.generative import GEN_METRICS
from lmforge.eval.generative_tasks import GEN_TASKS
from lmforge.eval.metrics import METRICS  # acc, acc_per_token, acc_per_char, acc_pmi (where PMI applies), bpb
from lmforge.eval.requests import Example, LoglikelihoodScore
from lmforge.eval.scoring import Tokenization, plain_batches, run_plain_batch, score_requests
from lmforge.eval.spread import Spread
from lmforge.formatting import format_number

__all__ = [
    "METRICS",
    "evaluate_tasks",
    "evaluate_downstream",
    "format_table",
    "write_results",
    "read_results",
    "compare_results",
    "load_examples",
    "parse_tasks",
    "task_version",
    "DownstreamEvaluator",
]


# --- the pieces from tasks.py -------------------------------------------------------------------
def _tasks_module():
    """The task catalogue (one seam: tests put constructed tasks in its place)."""
    from lmforge.eval import tasks

    return tasks


def _spec(name: str) -> Any:
    T = _tasks_module()
    if name not in T.TASKS:
        names = T.list_tasks() if hasattr(T, "list_tasks") else list(T.TASKS)
        raise ConfigError(f"unknown task '{name}'; tasks: {', '.join(names)} (or 'all'); generative: {', '.join(GEN_TASKS)} (and TASK:bpb)")
    return T.TASKS[name]


def _primary_metric(name: str, formulation: str) -> str:
    return _spec(name).primary(formulation)


def _macro_by(name: str) -> str | None:
    return getattr(_spec(name), "macro_by", None)


def task_version(name: str, formulation: str) -> Any:
    """The version string results files record for ``name`` in ``formulation`` (data + format hash)."""
    return _tasks_module().task_version(name, formulation)


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """"arc_easy,hellaswag" or ["arc_easy", "hellaswag"] or "all" (the headline tasks) -> names;
    ConfigError for an unknown task or none."""
    names = [t.strip() for part in ([tasks] if isinstance(tasks, str) else tasks) for t in part.split(",") if t.strip()]
    if not names:
        raise ConfigError("no tasks given")
    if names == ["all"]:
        return list(_tasks_module().list_tasks())
    for t in names:
        if t not in GEN_TASKS:
            _spec(t)
    return list(dict.fromkeys(names))


def load_examples(tasks: Sequence[str], formulation: str, limit: int | None, pmi: Pmi = True) -> dict[str, list[Example]]:
    """Each task's examples; ``pmi`` decides which keep their unconditional (PMI) requests: True =
    wherever the task has them, "primary" = only where the primary metric is ``acc_pmi``, False = none
    (the unconditional requests are as many as the conditional ones: dropping them halves the work)."""
    if pmi not in (True, False, "primary"):
        raise ConfigError(f"pmi must be true, false or 'primary', got {pmi!r}")
    T = _tasks_module()
    out: dict[str, list[Example]] = {}
    for name in tasks:
        if name not in out:
            _spec(name)
            exs = list(T.load_task(name, formulation, limit=limit))
            if pmi is False or (pmi == "primary" and _primary_metric(name, formulation) != "acc_pmi"):
                exs = [dataclasses.replace(ex, unconditional_context=None) if ex.unconditional_context is not None else ex for ex in exs]
            out[name] = exs
    return out


def _record(ex: Example, m: dict[str, Any]) -> dict[str, Any]:
    """The per-example record of a results file, from ``metrics.example_metrics``'s output."""
    rec = {
        "task": ex.task,
        "doc_id": ex.doc_id,
        "native_id": ex.native_id,
        "gold": ex.gold,
        "predictions": m.get("pred"),
        "logprobs": m.get("logprobs"),
        "n_tokens": m.get("n_tokens"),
        "n_chars": m.get("n_chars"),
        "is_greedy": m.get("is_greedy"),
        "uncond_logprobs": m.get("uncond_logprobs"),
        "metrics": {k: _clean(m[k]) for k in METRICS if k in m},
    }
    if "subject" in m:
        rec["subject"] = m["subject"]
    return rec


def _clean(x: Any) -> Any:
    """JSON-friendly floats: NaN/inf become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- evaluation ---------------------------------------------------------------------------------
def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    formulation: str = "rc_0shot",
    limit: int | None = None,
    batch_size: int = 32,
    tokenization: Tokenization = "separate",
    progress: bool = True,
    max_length: int | None = None,
    shared_prefix: bool = True,
    pmi: Pmi = True,
    spread: Spread | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks``; returns::

        {"formulation", "tokenization", "limit", "pmi",
         "tasks": {name: {"primary_metric", "primary", "acc", "acc_per_token", "acc_per_char",
                          "acc_pmi", "bpb", "n", "n_requests", "version"[, "groups"]}},
         "examples": [{"task", "doc_id", "native_id", "gold", "predictions", "logprobs", "n_tokens",
                       "n_chars", "is_greedy", "uncond_logprobs", "metrics"[, "subject"]}, ...]}

    A metric a task cannot have is None (``acc_pmi`` without unconditional requests). ``groups``:
    per-subject numbers of macro-averaged tasks (MMLU). ``pmi``: see :func:`load_examples` (False or
    "primary" skip the unconditional requests that the primary metric does not need).
    ``shared_prefix=False``: every request computed on its own (for checks and benchmarks).
    ``spread``: the processes share the batches; every process returns the one-process results.
    """
    by_task = load_examples(tasks, formulation, limit, pmi)
    owners = [name for name, exs in by_task.items() for _ in exs]
    examples = [ex for exs in by_task.values() for ex in exs]
    per_example_requests = [ex.requests() for ex in examples]
    requests = [r for reqs in per_example_requests for r in reqs]
    scores = score_requests(
        model,
        tokenizer,
        requests,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        tokenization=tokenization,
        shared_prefix=shared_prefix,
        desc=f"{len(by_task)} task(s), {len(examples)} examples",
        spread=spread,
    )
    records: list[dict[str, Any]] = []
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in by_task}
    k = 0
    for owner, ex, reqs in zip(owners, examples, per_example_requests):
        m = metrics.example_metrics(ex, scores[k : k + len(reqs)])
        k += len(reqs)
        rows[owner].append(m)
        records.append(_record(ex, m))
    out_tasks: dict[str, Any] = {}
    for name, exs in by_task.items():
        pm = _primary_metric(name, formulation)
        agg = dict(metrics.aggregate(rows[name], macro_by=_macro_by(name), primary=pm)) if exs else {}
        row: dict[str, Any] = {"primary_metric": pm, "primary": _clean(agg.get(pm))}
        for key in METRICS:
            row[key] = _clean(agg.get(key))
        row["n"] = len(exs)
        row["n_requests"] = sum(ex.n_requests() for ex in exs)
        row["version"] = task_version(name, formulation)
        if "groups" in agg:  # macro-averaged tasks (MMLU): each group's numbers
            row["groups"] = {str(g): {key: _clean(v) for key, v in gm.items()} for g, gm in agg["groups"].items()}
        out_tasks[name] = row
    return {"formulation": formulation, "tokenization": tokenization, "limit": limit, "pmi": pmi, "tasks": out_tasks, "examples": records}


# --- results files ------------------------------------------------------------------------------
def format_table(results: dict[str, Any]) -> str:
    """Markdown: one row per task (primary metric first), then the average of the primary metrics
    (accuracies only: bits per byte is lower-better); generative tasks in a table of their own."""
    gen = {n: r for n, r in results["tasks"].items() if r.get("kind") == "generative"}
    mc = {n: r for n, r in results["tasks"].items() if r.get("kind") != "generative"}
    parts = [_mc_table(mc)] if mc else []
    if gen:
        parts.append(_gen_table(gen))
    return "\n\n".join(parts)


def _gen_table(tasks: dict[str, Any]) -> str:
    keys = [k for k in GEN_METRICS if any(r.get(k) is not None for r in tasks.values())]
    lines = ["| task | n | samples | primary metric | primary | " + " | ".join(keys) + " |", "|---|---:|---:|---|---:|" + "---:|" * len(keys)]
    for name, r in tasks.items():
        lines.append(f"| {name} | {r['n']:,} | {r.get('samples', 1)} | {r['primary_metric']} | {format_number(r['primary'])} | "
                     + " | ".join(format_number(r.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _mc_table(tasks: dict[str, Any]) -> str:
    lines = [
        "| task | n | primary metric | primary | acc | acc_per_token | acc_per_char | acc_pmi | bpb |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    prim = []
    for name, r in tasks.items():
        lines.append(
            f"| {name} | {r['n']:,} | {r['primary_metric']} | {format_number(r['primary'])} | "
            + " | ".join(format_number(r.get(k)) for k in METRICS)
            + " |"
        )
        if r.get("primary") is not None and r.get("primary_metric") != "bpb":
            prim.append(r["primary"])
    if len(tasks) > 1 and len(prim) > 1:
        lines.append(f"| **average** | | primary | {format_number(sum(prim) / len(prim))} | | | | | |")
    return "\n".join(lines)


def write_results(
    results: dict[str, Any],
    out_path: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None,
    model_config: Any = None,
    command: Sequence[str] | str | None = None,
    include_examples: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``results`` (from :func:`evaluate_tasks`) as JSON, atomically, with what produced them:
    model path and config, task versions, example counts, the command line, date, lmforge version."""
    from lmforge import __version__

    cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else model_config
    if isinstance(command, str):
        command = shlex.split(command)
    doc = {
        "kind": "downstream",
        "model": None if model_path is None else str(model_path),
        "config": cfg,
        "command": list(command) if command is not None else list(sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "lmforge_version": __version__,
        "formulation": results.get("formulation"),
        "tokenization": results.get("tokenization"),
        "limit": results.get("limit"),
        "pmi": results.get("pmi"),
        "task_versions": {name: r.get("version") for name, r in results["tasks"].items()},
        "n_examples": {name: r.get("n") for name, r in results["tasks"].items()},
        **(extra or {}),
        "tasks": results["tasks"],
    }
    if include_examples:
        doc["examples"] = results.get("examples", [])
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return out


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such results file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not a results JSON file ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
        raise ConfigError(f"{p}: not a downstream results file (no 'tasks' section)")
    return doc


def compare_results(a_path: str | os.PathLike, b_path: str | os.PathLike, *, metrics: Sequence[str] | None = None) -> str:
    """Markdown: two results files side by side, per task and metric, with B - A.

    ``metrics``: which to show (default: the primary metric, then every metric of METRICS). Tasks
    in only one file show ``-`` for the other."""
    a, b = read_results(a_path), read_results(b_path)
    keys = list(metrics) if metrics is not None else ["primary", *METRICS, *GEN_METRICS]
    lines = [
        f"A: {a.get('model')} ({a_path}; {a.get('formulation')}, {a.get('tokenization')}, {a.get('date')})",
        f"B: {b.get('model')} ({b_path}; {b.get('formulation')}, {b.get('tokenization')}, {b.get('date')})",
        "",
        "| task | metric | n A | n B | A | B | B − A |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in list(dict.fromkeys([*a["tasks"], *b["tasks"]])):
        ra, rb = a["tasks"].get(name, {}), b["tasks"].get(name, {})
        for key in keys:
            va, vb = ra.get(key), rb.get(key)
            if va is None and vb is None:
                continue
            label = f"{key} ({ra.get('primary_metric') or rb.get('primary_metric')})" if key == "primary" else key
            diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            lines.append(
                f"| {name} | {label} | {format_number(ra.get('n'), ',')} | {format_number(rb.get('n'), ',')} | {format_number(va)} | {format_number(vb)} | "
                f"{format_number(diff, '+.4f')} |"
            )
        va_v, vb_v = ra.get("version"), rb.get("version")
        if ra and rb and va_v != vb_v:
            lines.append(f"| {name} | version differs | | | {va_v} | {vb_v} | |")
    return "\n".join(lines)


# --- in-loop evaluation -------------------------------------------------------------------------
class DownstreamEvaluator:
    """In-loop evaluator for the trainer's ``Evaluation`` callback: ``ev(model) -> {"TASK/METRIC": v}``.

    The examples are loaded once. Each call scores them with plain batching through ``model(ids)``
    (logits), so FSDP/DDP-wrapped models work as they are. Under ``torch.distributed`` every rank
    takes every ``world``-th example, runs the same number of forwards (ranks with fewer batches run
    one-token dummy forwards) and the per-task metric sums are all-reduced, so every rank returns
    the same numbers: the mean of each metric over the task's examples (for MMLU, the mean over
    subjects of the per-subject means, as ``metrics.aggregate`` does). Also reported:
    ``TASK/primary`` and ``primary_avg`` (the mean of the tasks' primary metrics). By default
    (``pmi="primary"``) unconditional requests are scored only for tasks whose primary metric is
    ``acc_pmi``, which halves the work of the others; ``pmi=True`` reports ``acc_pmi`` everywhere.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        tokenizer: Any,
        formulation: str = "rc_0shot",
        limit: int | None = None,
        batch_size: int = 16,
        *,
        tokenization: Tokenization = "separate",
        name: str = "downstream",
        autocast_dtype: torch.dtype | None = None,
        max_length: int | None = None,
        pmi: Pmi = "primary",
    ):
        self.name = name
        self.tokenizer, self.formulation, self.batch_size = tokenizer, formulation, batch_size
        self.tokenization, self.autocast_dtype, self.max_length = tokenization, autocast_dtype, max_length
        self.by_task = load_examples(tasks, formulation, limit, pmi)
        self.primary = {t: _primary_metric(t, formulation) for t in self.by_task}
        self.macro_by = {t: _macro_by(t) for t in self.by_task}

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        rank, world = rank_and_world()
        device = next(model.parameters()).device
        max_length = self._max_length(model)
        task_names = list(self.by_task)
        everything = [(ti, ex) for ti, name in enumerate(task_names) for ex in self.by_task[name]]
        mine = [ex for _, ex in everything[rank::world]]
        owner = [ti for ti, _ in everything[rank::world]]
        per_ex = [ex.requests() for ex in mine]
        requests = [r for reqs in per_ex for r in reqs]
        batches, where, encoded = plain_batches(
            self.tokenizer, requests, batch_size=self.batch_size, max_length=max_length, tokenization=self.tokenization
        )
        results = self._forward(model, batches, max(where, default=-1) + 1, max_length, world)

        # Metric sums and counts per (task, group) cell, in a layout every rank knows (all ranks
        # hold all examples), so that they can be all-reduced. Groups: the task's macro_by key
        # (MMLU subjects), else one group.
        cells = self._cells(task_names)
        sums = torch.zeros(len(cells), len(METRICS), 2, dtype=torch.float64)
        k = 0
        for ti, ex, reqs in zip(owner, mine, per_ex):
            scores = []
            for (_, cont), slot in zip(encoded[k : k + len(reqs)], where[k : k + len(reqs)]):
                lp, greedy = results[slot]
                scores.append(LoglikelihoodScore(lp, len(cont), greedy))
            k += len(reqs)
            m = metrics.example_metrics(ex, scores)
            mb = self.macro_by[task_names[ti]]
            c = cells[(ti, str(ex.meta.get(mb)) if mb else None)]
            for j, key in enumerate(METRICS):
                v = m.get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    sums[c, j, 0] += float(v)
                    sums[c, j, 1] += 1
        if world > 1:
            import torch.distributed as dist

            s = sums.to(device)
            dist.all_reduce(s)
            sums = s.cpu()
        return self._means(sums, cells, task_names)

    def _max_length(self, model: torch.nn.Module) -> int:
        if self.max_length is not None:
            return self.max_length
        cfg = getattr(unwrap(model), "config", None)
        if cfg is None:
            raise ValueError("DownstreamEvaluator: pass max_length=, the model has no config.max_seq_len")
        return int(cfg.max_seq_len)

    def _forward(self, model: torch.nn.Module, batches: list, n_slots: int, max_length: int, world: int) -> list[tuple[float, bool]]:
        """(logprob, is_greedy) per request slot; every rank runs as many forwards as the busiest."""
        device = next(model.parameters()).device
        n_batches = torch.tensor([len(batches)], device=device)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(n_batches, op=dist.ReduceOp.MAX)
        pad_id = getattr(self.tokenizer, "pad_token_id", None) or 0
        results: list[tuple[float, bool]] = [(0.0, True)] * n_slots  # empty continuations stay 0
        was_training = model.training
        model.eval()
        ctx = (
            torch.autocast(device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype
            else torch.autocast(device.type, enabled=False)
        )
        try:
            with ctx:
                for batch in batches:
                    for it, res in zip(batch, run_plain_batch(model, batch, max_length, pad_id)):
                        results[it.slot] = res
                for _ in range(int(n_batches.item()) - len(batches)):  # equal forward count on every rank
                    model(torch.full((1, 1), pad_id, dtype=torch.long, device=device))
        finally:
            model.train(was_training)
        return results

    def _cells(self, task_names: list[str]) -> dict[tuple[int, Any], int]:
        """(task index, group) -> row of the sums tensor, the same on every rank."""
        cells: dict[tuple[int, Any], int] = {}
        for ti, t in enumerate(task_names):
            mb = self.macro_by[t]
            for g in sorted({str(ex.meta.get(mb)) for ex in self.by_task[t]} if mb else {None}, key=str):
                cells[(ti, g)] = len(cells)
        return cells

    def _means(self, sums: torch.Tensor, cells: dict[tuple[int, Any], int], task_names: list[str]) -> dict[str, float]:
        """Each task's metrics (the mean over groups of the group means), its primary, their average."""
        out: dict[str, float] = {}
        prim = []
        for ti, t in enumerate(task_names):
            mine_cells = [c for (tj, _), c in cells.items() if tj == ti]
            for j, key in enumerate(METRICS):
                per_group = [(float(sums[c, j, 0]), float(sums[c, j, 1])) for c in mine_cells]
                if not all(n for _, n in per_group):
                    continue  # a metric not every example has (acc_pmi without unconditional requests)
                out[f"{t}/{key}"] = sum(total / n for total, n in per_group) / len(per_group)
            pm = self.primary[t]
            if f"{t}/{pm}" in out:
                out[f"{t}/primary"] = out[f"{t}/{pm}"]
                prim.append(out[f"{t}/primary"])
        if prim:
            out["primary_avg"] = sum(prim) / len(prim)
        return out


# --- the command ---------------------------------------------------------------------------------
def evaluate_downstream(cfg: DownstreamEvalConfig) -> dict[str, Any]:
    """``lmforge eval downstream``: load ``cfg.model``, evaluate ``cfg.tasks`` (multiple choice and
    generative), write the results JSON (when ``cfg.out``, by rank 0); returns the results.

    Under ``torchrun`` the processes share the work (:mod:`lmforge.eval.spread`) and all return the
    results of one process. Raises ConfigError on bad settings."""
    from lmforge.config import parse_dtype
    from lmforge.eval.loading import load_for_eval

    names = parse_tasks(cfg.tasks)
    dtype = parse_dtype(cfg.dtype)
    cfg.validate()
    spread = Spread.current()
    gen_names = [n for n in names if n in GEN_TASKS]
    mc_names = [n for n in names if n not in GEN_TASKS]
    device = cfg.device
    if device is None and spread.world > 1 and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.current_device()}"
    model, tok, device = load_for_eval(cfg.model, tokenizer=cfg.tokenizer, device=device, dtype=dtype)
    results: dict[str, Any] = {"formulation": cfg.formulation, "tokenization": cfg.tokenization, "limit": cfg.limit,
                               "pmi": pmi_setting(cfg.pmi), "tasks": {}, "examples": []}
    if mc_names:
        results = evaluate_tasks(
            model, tok, mc_names, formulation=cfg.formulation, limit=cfg.limit, batch_size=cfg.batch_size,
            tokenization=cfg.tokenization, progress=cfg.progress, shared_prefix=cfg.shared_prefix, pmi=pmi_setting(cfg.pmi),
            spread=spread,
        )
    if gen_names:
        from lmforge.eval.generative import evaluate_generative

        backend = _generation_backend(cfg, model, tok, device, dtype, spread)
        gen = evaluate_generative(backend, gen_names, cfg.generation_settings(), tokenizer=tok, limit=cfg.limit, spread=spread)
        results["tasks"].update(gen["tasks"])
        results["examples"] += gen["examples"]
        results["generation"] = {"backend": cfg.backend, **gen["generation"]}
    results["tasks"] = {n: results["tasks"][n] for n in names}  # the order asked for
    if cfg.out is not None and spread.is_main:
        write_results(
            results,
            cfg.out,
            model_path=cfg.model,
            model_config=getattr(model, "config", None),
            command=list(sys.argv),
            extra={"device": str(device), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "processes": spread.world,
                   **({"generation": results["generation"]} if "generation" in results else {})},
        )
    spread.barrier()
    return results


def _generation_backend(cfg: DownstreamEvalConfig, model: Any, tok: Any, device: Any, dtype: Any, spread: Spread):
    """``prompts -> [Generation]`` for ``cfg.backend`` (hf and vllm need a transformers directory: an
    lmforge checkpoint is exported to a temporary one first)."""
    from functools import partial

    from lmforge.eval.generation import generate_all

    if cfg.backend == "lmforge":
        return partial(generate_all, model, tok, batch_size=cfg.gen_batch_size, progress=cfg.progress, spread=spread)
    if spread.world > 1:
        raise ConfigError(f"--backend {cfg.backend} runs in one process (vLLM spreads over GPUs itself); drop torchrun")
    from lmforge.eval import hf_generate

    hf_dir = _hf_directory(cfg.model, model, tok)
    if cfg.backend == "hf":
        return hf_generate.hf_backend(hf_dir, batch_size=cfg.gen_batch_size, device=str(device), dtype=dtype, progress=cfg.progress)
    return hf_generate.vllm_backend(hf_dir)


def _hf_directory(path: str, model: Any, tok: Any) -> str:
    """``path`` when it is a transformers directory, else an export of the loaded model to a temporary one."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return path  # a transformers directory (lmforge checkpoints hold no config.json)
    import tempfile

    from lmforge.release import export_hf

    out = Path(tempfile.mkdtemp(prefix="lmforge-hf-"))
    export_hf(model, tok, out, overwrite=True)
    return str(out)
