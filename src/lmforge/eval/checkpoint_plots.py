"""The plots of ``lmforge eval checkpoints``: bits per byte per domain, downstream accuracy, the
generative tasks' gold bits per byte, each against tokens seen (PNG, written atomically)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from lmforge.config import atomic_write_bytes

__all__ = ["MAX_DOMAIN_LINES", "bpb_columns", "plot_bpb", "plot_downstream", "plot_gold_bpb"]

MAX_DOMAIN_LINES = 12  # more domains than this: the plot and the table show per-source macro averages


def bpb_columns(summary: dict[str, Any]) -> tuple[str, list[str]]:
    """("bpb", domain keys) when there are few domains, else ("source_bpb", source names)."""
    rows = summary["rows"]
    if not rows or "bpb" not in rows[0]:
        return "bpb", []
    keys = list(dict.fromkeys(k for r in rows for k in r["bpb"]))
    if len(keys) <= MAX_DOMAIN_LINES:
        return "bpb", keys
    return "source_bpb", list(dict.fromkeys(k for r in rows for k in r["source_bpb"]))


def x_axis(rows: list[dict[str, Any]]) -> tuple[list[float], str]:
    if rows and all(r["tokens_seen"] is not None for r in rows):
        return [float(r["tokens_seen"]) for r in rows], "tokens seen"
    return [float(r["step"]) for r in rows], "step (tokens seen unknown)"


def set_xscale(ax, xs: list[float]) -> None:
    pos = [x for x in xs if x > 0]
    if len(pos) < 2 or max(pos) / min(pos) <= 10:
        return
    if len(pos) == len(xs):
        ax.set_xscale("log")
    else:  # a step-0 checkpoint: linear near zero, log beyond
        ax.set_xscale("symlog", linthresh=min(pos))


def save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bpb(summary: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Bits per byte per domain (or per source, when there are many domains) and the macro average
    over domains against tokens seen; None when the summary has no perplexity figures."""
    rows = summary["rows"]
    field, keys = bpb_columns(summary)
    if not rows or not keys:
        return None
    plt = pyplot()
    xs, xlabel = x_axis(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for k in keys:
        ys = [r[field].get(k) for r in rows]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", ms=3, lw=1.2, label=k)
    ys = [r.get("macro_bpb") for r in rows]
    ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", ms=4, lw=2.4, color="black", label="macro average")
    set_xscale(ax, xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bits per byte")
    what = "domain" if field == "bpb" else "source (macro over its domains)"
    ax.set_title(f"Bits per byte per {what} across checkpoints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(keys) > 8 else 1)
    return save_png(fig, Path(path))


def plot_downstream(summary: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Each task's primary metric against tokens seen, its random-chance level dashed in the same
    colour; None when the summary has no tasks."""
    rows = summary["rows"]
    tasks = [t for t in summary["tasks"] if rows and rows[-1]["tasks"][t]["primary_metric"] != "bpb"]  # bpb: plot_gold_bpb
    if not rows or not tasks:
        return None
    plt = pyplot()
    xs, xlabel = x_axis(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, t in enumerate(tasks):
        color = f"C{i % 10}"
        ys = [r["tasks"][t]["primary"] for r in rows]
        metric = rows[-1]["tasks"][t]["primary_metric"]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", ms=3, lw=1.4, color=color, label=f"{t} ({metric})")
        c = summary.get("chance", {}).get(t)
        if c is not None:
            ax.axhline(c, color=color, ls="--", lw=1, alpha=0.8, label=f"{t} chance ({c:.3f})")
    set_xscale(ax, xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("primary metric (accuracy)")
    f = summary.get("formulation")
    ax.set_title(f"Downstream tasks across checkpoints ({f}" + (f", limit {summary['limit']})" if summary.get("limit") else ")"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(tasks) > 4 else 1)
    return save_png(fig, Path(path))


def plot_gold_bpb(summary: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """The generative tasks' gold bits per byte (``TASK:bpb``) against tokens seen; None when the
    summary has none."""
    rows = summary["rows"]
    tasks = [t for t in summary["tasks"] if rows and rows[-1]["tasks"][t]["primary_metric"] == "bpb"]
    if not tasks:
        return None
    plt = pyplot()
    xs, xlabel = x_axis(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in tasks:
        ys = [r["tasks"][t]["primary"] for r in rows]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", ms=3, lw=1.4, label=t)
    set_xscale(ax, xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bits per byte of the gold answer")
    ax.set_title("Generative tasks: gold bits per byte across checkpoints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_png(fig, Path(path))
