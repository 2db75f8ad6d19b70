"""Model cards: the README.md of a released model repository (``main``) and of each revision branch.

    facts = CardFacts(name="quickstart", model=cfg, params=919_104, revisions=revs, train_config=train_cfg,
                      metrics=records, eval_markdown=summary_md, sources=manifest_sources(manifest),
                      files={"curves": "training/curves.png"})
    text = render_card(facts)

A release gathers everything the card says once, in a :class:`CardFacts`
(:func:`lmforge.release.facts.card_facts` reads it from the run and the repository), and renders it
with the jinja2 template ``templates/model_card.md.j2``: markdown with YAML front matter (the Hub
reads ``license``, ``library_name``, ``tags``, ``datasets``, ``pipeline_tag``), then the
architecture, the training run (steps, tokens, batch, optimizer and LR schedule, loss, throughput,
time, hardware), the data sources (from a data manifest), the evaluation table and plots, the
revisions, how to load them, how to reproduce the model, and the license. The template holds the
layout and the prose; this module turns the facts into table rows and formatted numbers. The same
facts give the same card byte for byte (a release rerun with nothing new makes no new commit).

``model_card(**fields)`` is the same with keyword arguments (a data manifest instead of its sources);
``license_text`` (:mod:`lmforge.release.licenses`) gives the LICENSE file for an SPDX id.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lmforge.formatting import format_bytes, format_count, format_seconds
from lmforge.models.olmo import ModelConfig
from lmforge.release.licenses import license_text

__all__ = ["CardFacts", "render_card", "model_card", "revision_card", "license_text", "manifest_sources"]

_HF_CLASS = {"olmo1": "OlmoForCausalLM", "olmo2": "Olmo2ForCausalLM"}
_ARCH_NAME = {"olmo1": "OLMo (v1)", "olmo2": "OLMo-2"}


@dataclasses.dataclass
class CardFacts:
    """Everything the model card of ``main`` says.

    ``model``: the model config; ``revisions``: dicts with ``name``, ``step``, ``tokens_seen`` (oldest
    first; ``final_revision`` names the one ``main`` holds); ``train_config``: the run's config
    (sections ``trainer``, ``optim``, ``schedule``, ``run``, ``data``); ``metrics``: the records of
    RUN/metrics.jsonl; ``world_size``, ``global_batch``, ``seq_len``: what the final checkpoint
    recorded (None: batch and sequence length come from ``train_config``); ``eval_markdown`` /
    ``eval_summary``: ``summary.md`` / ``summary.json`` of ``lmforge eval checkpoints``; ``sources``:
    the data manifest's sources (:func:`manifest_sources`; None without a manifest); ``files``:
    relative paths of what the repository holds, by role (``curves``, ``bpb_plot``,
    ``downstream_plot``, ``metrics``, ``config``, ``eval_summary``, ``manifest``, ``license``).
    """

    name: str
    model: ModelConfig
    params: int | None = None
    non_embedding_params: int | None = None
    dtype: str | None = None
    revisions: Sequence[Mapping[str, Any]] = ()
    final_revision: str | None = None
    train_config: Mapping[str, Any] | None = None
    metrics: Sequence[Mapping[str, Any]] = ()
    world_size: int | None = None
    global_batch: int | None = None
    seq_len: int | None = None
    eval_markdown: str | None = None
    eval_summary: Mapping[str, Any] | None = None
    sources: Sequence[Mapping[str, Any]] | None = None
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    license: str = "apache-2.0"
    datasets: Sequence[str] | None = None
    hub_repo: str | None = None
    reproduce: str | None = None
    description: str | None = None


def _sci(x: float) -> str:
    """1e-06 -> '1e-6'."""
    return format(x, "g").replace("e-0", "e-").replace("e+0", "e+")


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or ("|---" * len(head)) + "|"
    lines = ["| " + " | ".join(head) + " |", align]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return _table(["", ""], [(k, v) for k, v in rows if v is not None and v != ""])


def _front_matter(license: str, datasets: Sequence[str] | None, extra_tags: Sequence[str] = ()) -> str:
    meta: dict[str, Any] = {"license": license.lower(), "library_name": "transformers", "pipeline_tag": "text-generation"}
    meta["tags"] = ["olmo", "lmforge", *[t for t in extra_tags if t not in ("olmo", "lmforge")]]
    if datasets:
        meta["datasets"] = list(datasets)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _as_config(model: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else ModelConfig.from_dict(dict(model))


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for k in path:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


# --- rows of the tables ------------------------------------------------------------------------------
def _model_rows(cfg: ModelConfig, params: int | None, non_embedding: int | None, dtype: str | None) -> list[tuple[str, Any]]:
    kv = cfg.kv_heads
    heads = f"{cfg.n_heads}" + (f" ({kv} key/value heads, grouped-query)" if kv != cfg.n_heads else "")
    norm = (
        "RMSNorm on each sub-layer's output, QK-norm" if cfg.arch == "olmo2" else "LayerNorm without weights, before each sub-layer"
    )
    p = None
    if params is not None:
        p = f"{params:,} ({format_count(params)})"
        if non_embedding is not None:
            p += f"; {non_embedding:,} without the embedding"
    vocab = f"{cfg.vocab_size:,} ids" + (f" (embedding padded to {cfg.padded_vocab_size:,} rows)" if cfg.padded_vocab_size != cfg.vocab_size else "")
    return [
        ("architecture", f"{_ARCH_NAME.get(cfg.arch, cfg.arch)} decoder-only transformer (transformers `{_HF_CLASS.get(cfg.arch, '?')}`)"),
        ("parameters", p),
        ("d_model / layers / heads", f"{cfg.d_model} / {cfg.n_layers} / {heads}"),
        ("MLP", f"SwiGLU, hidden size {cfg.mlp_hidden:,}"),
        ("normalisation", norm + f" (eps {_sci(cfg.eps)})"),
        ("position encoding", f"RoPE, θ = {cfg.theta:,.0f}"),
        ("vocabulary", vocab),
        ("context length", f"{cfg.max_seq_len:,} tokens"),
        ("tied input/output embeddings", "yes" if cfg.tie_embeddings else "no"),
        ("QKV clipping", f"±{cfg.clip_qkv:g}" if cfg.clip_qkv else None),
        ("weights", f"safetensors, {dtype}" if dtype else None),
    ]


def _schedule(train: Mapping[str, Any]) -> str | None:
    s = _get(train, "schedule")
    if not isinstance(s, Mapping):
        return None
    parts = [str(s.get("kind", "?"))]
    if s.get("warmup_steps"):
        parts.append(f"{s['warmup_steps']:,} warmup steps")
    if s.get("total_steps"):
        parts.append(f"over {s['total_steps']:,} steps")
    if s.get("final_lr_ratio") is not None and s.get("kind") not in ("constant",):
        parts.append(f"to {100 * float(s['final_lr_ratio']):g}% of the peak")
    return ", ".join(parts)


def _optimizer(train: Mapping[str, Any]) -> str | None:
    opt = _get(train, "optim")
    if not isinstance(opt, Mapping) or opt.get("lr") is None:
        return None
    optim = f"AdamW, peak LR {float(opt['lr']):g}"
    if opt.get("betas"):
        optim += f", betas ({', '.join(f'{float(b):g}' for b in opt['betas'])})"
    if opt.get("weight_decay") is not None:
        optim += f", weight decay {float(opt['weight_decay']):g}"
    clip = _get(train, "trainer", "grad_clip")
    zl = _get(train, "trainer", "z_loss")
    extras = [e for e in (f"gradient clipping {float(clip):g}" if clip else None, f"z-loss {_sci(float(zl))}" if zl else None) if e]
    return optim + ("; " + ", ".join(extras) if extras else "")


def _hardware(train: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]], world_size: int | None) -> str | None:
    hw = next((str(r[k]) for r in metrics for k in ("hardware", "device_name", "device") if r.get(k)), None)
    if hw is None:
        device = _get(train, "run", "device")
        if device and device != "auto":
            hw = str(device)
        elif device == "auto":
            hw = "not recorded (run.device: auto)"
    if world_size:
        hw = (hw + ", " if hw else "") + f"{world_size} process{'es' if world_size != 1 else ''}"
    return hw


def _training_rows(f: CardFacts, final_step: int | None, final_tokens: int | None) -> list[tuple[str, Any]]:
    train = f.train_config or {}
    metrics = list(f.metrics)
    steps = [r for r in metrics if isinstance(r.get("loss"), (int, float))]
    last = steps[-1] if steps else None
    seq_len = f.seq_len or _get(train, "trainer", "seq_len") or _get(train, "model", "max_seq_len")  # the checkpoint's, else the config's
    gb = f.global_batch or _get(train, "trainer", "global_batch")
    batch = f"{gb} sequences × {seq_len:,} tokens = {gb * seq_len:,} tokens per step" if gb and seq_len else None
    loss = None
    if last is not None:
        loss = f"{float(last['loss']):.4f} at step {last.get('step', '?'):,}"
        first = steps[0]
        if first is not last:
            loss = f"{float(first['loss']):.4f} (step {first.get('step', '?'):,}) → " + loss
    tps = [float(r["tokens_per_s"]) for r in steps if isinstance(r.get("tokens_per_s"), (int, float)) and math.isfinite(r["tokens_per_s"])]
    throughput = None
    if tps:
        throughput = f"{format_count(sum(tps) / len(tps))} tokens/s (mean of logged steps)"
        mfu = [float(r["mfu"]) for r in steps if isinstance(r.get("mfu"), (int, float))]
        if mfu:
            throughput += f", MFU {100 * sum(mfu) / len(mfu):.1f}%"
    times = [float(r["step_time"]) for r in steps if isinstance(r.get("step_time"), (int, float))]
    duration = None
    if times and final_step:
        duration = f"about {format_seconds(sum(times) / len(times) * final_step, style='words')} (mean logged step time × steps)"
    precision = _get(train, "trainer", "precision")
    return [
        ("steps", f"{final_step:,}" if final_step is not None else None),
        ("tokens", f"{final_tokens:,} ({format_count(final_tokens)})" if final_tokens is not None else None),
        ("batch", batch),
        ("optimizer", _optimizer(train)),
        ("LR schedule", _schedule(train)),
        ("precision", ("auto (fp32 on CPU, bf16 autocast on CUDA)" if precision == "auto" else str(precision)) if precision else None),
        ("training loss", loss),
        ("throughput", throughput),
        ("training time", duration),
        ("hardware", _hardware(train, metrics, f.world_size)),
        ("data order seed", _get(train, "data", "seed")),
    ]


def manifest_sources(manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sources of a data manifest as uniform dicts (name, domain, split, package, version,
    license, bytes, documents, status, reason). Accepts ``{"sources": [...]}`` or a list of sources;
    for each source the first present of several common key names is used."""
    items = manifest.get("sources", []) if isinstance(manifest, Mapping) else manifest
    if isinstance(items, Mapping):  # {"name": {...}, ...}
        items = [{"name": k, **v} for k, v in items.items() if isinstance(v, Mapping)]
    out = []
    for s in items or []:
        if not isinstance(s, Mapping):
            continue

        def first(*keys: str) -> Any:
            return next((s[k] for k in keys if s.get(k) not in (None, "")), None)

        status = first("status")
        if status is None:
            status = "skipped" if s.get("skipped") or s.get("error") else "ok"
        out.append(
            {
                "name": first("name", "source", "id", "package"),
                "domain": first("domain"),
                "split": first("split", "role", "use"),
                "package": first("package"),
                "version": first("version"),
                "registry": first("registry", "kind"),
                "license": first("license", "licence"),
                "bytes": first("bytes", "text_bytes", "n_bytes", "size"),
                "documents": first("documents", "n_documents", "docs", "num_documents"),
                "status": str(status),
                "reason": first("reason", "error", "warning", "skipped"),
            }
        )
    return out


_REGISTRY = {"pip_sdist": "PyPI sdist", "pip_wheel": "PyPI wheel", "pip": "PyPI", "pypi": "PyPI", "deb": "Debian", "npm": "npm", "stdlib": "standard library", "local": "local"}


def _package(s: Mapping[str, Any]) -> str:
    reg = str(s["registry"] or "")
    pkg = s["package"] or "-"
    if s["package"] and s["version"]:
        pkg = f"{s['package']}=={s['version']}" if reg.lower().startswith("pip") or reg.lower() == "pypi" else f"{s['package']} {s['version']}"
    if reg and s["package"]:
        pkg += f" ({_REGISTRY.get(reg.lower(), reg)})"
    return pkg


def _data(sources: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """The Data section's table and lists (None without a manifest)."""
    if sources is None:
        return None
    used = [s for s in sources if s["status"].lower() == "ok"]
    skipped = [s for s in sources if s["status"].lower() != "ok"]
    show_split = any(s["split"] for s in used)
    head = ["source", "domain"] + (["split"] if show_split else []) + ["package", "license", "bytes", "documents"]
    rows = []
    for s in used:
        rows.append(
            [s["name"] or "-", s["domain"] or "-"] + ([s["split"] or "-"] if show_split else [])
            + [_package(s), s["license"] or "-", format_bytes(s["bytes"]) if isinstance(s["bytes"], (int, float)) else "-",
               f"{s['documents']:,}" if isinstance(s["documents"], int) else "-"]
        )
    groups = sorted({s["split"] or "" for s in used}) if show_split else [""]
    for g in groups:
        part = [s for s in used if not show_split or (s["split"] or "") == g]
        nbytes = [s["bytes"] for s in part if isinstance(s["bytes"], (int, float))]
        ndocs = [s["documents"] for s in part if isinstance(s["documents"], int)]
        if part and (nbytes or ndocs):
            label = f"**total {g}**" if g else "**total**"
            rows.append([label, ""] + ([""] if show_split else []) + ["", "", format_bytes(sum(nbytes)) if nbytes else "-", f"{sum(ndocs):,}" if ndocs else "-"])
    return {
        "used": len(used),
        "domains": sorted({s["domain"] for s in used if s["domain"]}),
        "table": _table(head, rows, "|---" * (len(head) - 2) + "|---:|---:|") if rows else None,
        "skipped": [
            f"{s['name'] or s['package'] or '?'}" + (f" ({s['reason']})" if isinstance(s["reason"], str) else f" ({s['status']})") for s in skipped
        ],
    }


def _revisions_table(revisions: Sequence[Mapping[str, Any]], final: str | None, bpb: Mapping[int, float] | None) -> str:
    head = ["revision", "step", "tokens"] + (["macro bpb"] if bpb else [])
    rows = []
    for r in revisions:
        name = f"`{r['name']}`" + (" (= `main`)" if r["name"] == final else "")
        row = [name, f"{r['step']:,}", f"{r['tokens_seen']:,}" if r.get("tokens_seen") is not None else "-"]
        if bpb:
            v = bpb.get(r["step"])
            row.append(f"{v:.4f}" if isinstance(v, (int, float)) else "-")
        rows.append(row)
    return _table(head, rows, "|---|---:|---:|" + ("---:|" if bpb else ""))


_FILE_ROLES = (
    ("config", "the training config"),
    ("metrics", "training metrics, one JSON record per logged step"),
    ("curves", "loss and learning rate against steps"),
    ("eval_summary", "evaluation of every checkpoint (also `summary.md`, the table above)"),
    ("manifest", "the data manifest"),
    ("license", "the license"),
)


def _files_table(files: Mapping[str, str]) -> str:
    listing = [
        ("`config.json`, `generation_config.json`, `model.safetensors`, `tokenizer*.json`", "the model in transformers' format"),
        ("`lmforge.yaml`, `revision.json`", "lmforge's model config; which checkpoint this is (step, tokens seen)"),
    ]
    listing += [(f"`{files[key]}`", what) for key, what in _FILE_ROLES if files.get(key)]
    return _table(["file", "what"], listing)


# --- rendering --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _templates():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=False,  # markdown: table cells are escaped by _cell
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(rstrip_nl=lambda s: str(s).rstrip("\n"), approx=format_count, thousands=lambda n: f"{n:,}")
    return env


def _context(f: CardFacts) -> dict[str, Any]:
    """What the template needs beyond the facts: the final revision, table texts, the usage example."""
    cfg = _as_config(f.model)
    revisions, files = list(f.revisions), dict(f.files or {})
    final = next((r for r in revisions if r["name"] == f.final_revision), revisions[-1] if revisions else None)
    final_step = final["step"] if final else None
    final_tokens = final.get("tokens_seen") if final else None
    bpb = None
    if f.eval_summary and isinstance(f.eval_summary.get("rows"), list):
        bpb = {r["step"]: r["macro_bpb"] for r in f.eval_summary["rows"] if isinstance(r, Mapping) and "step" in r and r.get("macro_bpb") is not None}
    example = revisions[len(revisions) // 2]["name"] if len(revisions) > 1 else (final["name"] if final else None)
    plots = [(alt, files[k]) for k, alt in (("bpb_plot", "Bits per byte per domain against tokens seen"), ("downstream_plot", "Downstream tasks against tokens seen")) if files.get(k)]
    return {
        "f": f,
        "files": files,
        "front_matter": _front_matter(f.license, f.datasets),
        "arch_name": _ARCH_NAME.get(cfg.arch, cfg.arch),
        "revisions": revisions,
        "final": final,
        "final_tokens": final_tokens,
        "model_table": _kv_table(_model_rows(cfg, f.params, f.non_embedding_params, f.dtype)),
        "training_table": _kv_table(_training_rows(f, final_step, final_tokens)),
        "data": _data(f.sources),
        "plots": plots,
        "revisions_table": _revisions_table(revisions, final["name"] if final else None, bpb or None) if revisions else None,
        "example": example or (final["name"] if final else None) or "step1000-tokens4B",
        "files_table": _files_table(files),
    }


def render_card(facts: CardFacts) -> str:
    """The README.md of a model repository's ``main`` (templates/model_card.md.j2)."""
    text = _templates().get_template("model_card.md.j2").render(**_context(facts))
    # A horizontal rule followed by two blank lines (e.g. inside an evaluation table's text) has always
    # been collapsed to one blank line; kept so that the same facts give the same card as ever.
    return text.replace("---\n\n\n", "---\n\n")


def model_card(
    *,
    name: str,
    model: ModelConfig | Mapping[str, Any],
    manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    manifest_path: str | None = None,
    **fields: Any,
) -> str:
    """:func:`render_card` with the facts as keyword arguments (the fields of :class:`CardFacts`), and
    ``manifest``, a data manifest (see :func:`manifest_sources`), instead of ``sources``.
    (``manifest_path`` is accepted and unused: the card links ``files["manifest"]``.)"""
    sources = manifest_sources(manifest) if manifest is not None else fields.pop("sources", None)
    return render_card(CardFacts(name=name, model=_as_config(model), sources=sources, **fields))


def revision_card(*, name: str, revision: str, step: int, tokens_seen: int | None, license: str = "apache-2.0", final: bool = False) -> str:
    """The short README.md of one revision branch (the full card lives on ``main``)."""
    return _templates().get_template("revision_card.md.j2").render(
        front_matter=_front_matter(license, None), name=name, revision=revision, step=step, tokens_seen=tokens_seen, final=final
    )
