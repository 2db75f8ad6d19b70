"""Model cards: the README.md of a released model repository (``main``) and of each revision branch.

    text = model_card(name="quickstart", model=cfg, params=919_104, revisions=revs, train_config=train_cfg,
                      metrics=records, eval_markdown=summary_md, manifest=manifest, files={"curves": "training/curves.png"})

A card is markdown with YAML front matter (the Hub reads ``license``, ``library_name``, ``tags``,
``datasets``, ``pipeline_tag``), then: the architecture, the training run (steps, tokens, batch,
optimizer and LR schedule, loss, throughput, time, hardware), the data sources (from a data
manifest), the evaluation table and plots, the revisions, how to load them, how to reproduce the
model, and the license. Everything in it comes from the arguments, so the same inputs give the same
card byte for byte (a release rerun with nothing new makes no new commit).

``license_text`` gives the LICENSE file for an SPDX id (Apache-2.0 from lmforge's own distribution or
the system's common-licenses, MIT from a template, others from ``/usr/share/common-licenses`` or a
pointer to the SPDX page).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lmforge.models.olmo import ModelConfig

__all__ = ["model_card", "revision_card", "license_text", "manifest_sources", "format_count"]

_HF_CLASS = {"olmo1": "OlmoForCausalLM", "olmo2": "Olmo2ForCausalLM"}
_ARCH_NAME = {"olmo1": "OLMo (v1)", "olmo2": "OLMo-2"}


# --- small formatters ------------------------------------------------------------------------------
def format_count(n: float | None) -> str:
    """1234 -> '1.23K', 409600 -> '410K', 2.1e12 -> '2.1T' (3 significant digits; for prose and tables)."""
    if n is None:
        return "-"
    for unit, mult in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= mult:
            return f"{n / mult:.3g}{unit}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, mult in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


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


# --- sections ----------------------------------------------------------------------------------------
def _architecture(cfg: ModelConfig, params: int | None, non_embedding: int | None, dtype: str | None) -> str:
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
    rows = [
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
    return "## Model\n\n" + _kv_table(rows)


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for k in path:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


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


def _training(
    train: Mapping[str, Any] | None,
    metrics: Sequence[Mapping[str, Any]],
    final_step: int | None,
    final_tokens: int | None,
    world_size: int | None,
    curves: str | None,
) -> str:
    train = train or {}
    steps = [r for r in metrics if isinstance(r.get("loss"), (int, float))]
    last = steps[-1] if steps else None
    seq_len = _get(train, "trainer", "seq_len") or _get(train, "model", "max_seq_len")
    gb = _get(train, "trainer", "global_batch")
    batch = None
    if gb and seq_len:
        batch = f"{gb} sequences × {seq_len:,} tokens = {gb * seq_len:,} tokens per step"
    opt = _get(train, "optim")
    optim = None
    if isinstance(opt, Mapping) and opt.get("lr") is not None:
        optim = f"AdamW, peak LR {float(opt['lr']):g}"
        if opt.get("betas"):
            optim += f", betas ({', '.join(f'{float(b):g}' for b in opt['betas'])})"
        if opt.get("weight_decay") is not None:
            optim += f", weight decay {float(opt['weight_decay']):g}"
    clip = _get(train, "trainer", "grad_clip")
    zl = _get(train, "trainer", "z_loss")
    extras = [f"gradient clipping {float(clip):g}" if clip else None, f"z-loss {_sci(float(zl))}" if zl else None]
    extras = [e for e in extras if e]
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
        duration = f"about {_fmt_duration(sum(times) / len(times) * final_step)} (mean logged step time × steps)"
    hw = next((str(r[k]) for r in metrics for k in ("hardware", "device_name", "device") if r.get(k)), None)
    if hw is None:
        device = _get(train, "run", "device")
        if device and device != "auto":
            hw = str(device)
        elif device == "auto":
            hw = "not recorded (run.device: auto)"
    if world_size:
        hw = (hw + ", " if hw else "") + f"{world_size} process{'es' if world_size != 1 else ''}"
    precision = _get(train, "trainer", "precision")
    rows = [
        ("steps", f"{final_step:,}" if final_step is not None else None),
        ("tokens", f"{final_tokens:,} ({format_count(final_tokens)})" if final_tokens is not None else None),
        ("batch", batch),
        ("optimizer", optim + ("; " + ", ".join(extras) if extras else "") if optim else None),
        ("LR schedule", _schedule(train)),
        ("precision", ("auto (fp32 on CPU, bf16 autocast on CUDA)" if precision == "auto" else str(precision)) if precision else None),
        ("training loss", loss),
        ("throughput", throughput),
        ("training time", duration),
        ("hardware", hw),
        ("data order seed", _get(train, "data", "seed")),
    ]
    text = "## Training\n\n" + _kv_table(rows)
    if curves:
        text += f"\n\n![Training loss and learning rate]({curves})"
    return text


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


def _data(manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, manifest_path: str | None) -> str | None:
    if manifest is None:
        return None
    sources = manifest_sources(manifest)
    used = [s for s in sources if s["status"].lower() == "ok"]
    skipped = [s for s in sources if s["status"].lower() != "ok"]
    show_split = any(s["split"] for s in used)
    head = ["source", "domain"] + (["split"] if show_split else []) + ["package", "license", "bytes", "documents"]
    rows = []
    for s in used:
        reg = str(s["registry"] or "")
        pkg = s["package"] or "-"
        if s["package"] and s["version"]:
            pkg = f"{s['package']}=={s['version']}" if reg.lower().startswith("pip") or reg.lower() == "pypi" else f"{s['package']} {s['version']}"
        if reg and s["package"]:
            pkg += f" ({_REGISTRY.get(reg.lower(), reg)})"
        rows.append(
            [s["name"] or "-", s["domain"] or "-"] + ([s["split"] or "-"] if show_split else [])
            + [pkg, s["license"] or "-", _fmt_bytes(s["bytes"]) if isinstance(s["bytes"], (int, float)) else "-",
               f"{s['documents']:,}" if isinstance(s["documents"], int) else "-"]
        )
    groups = sorted({s["split"] or "" for s in used}) if show_split else [""]
    for g in groups:
        part = [s for s in used if not show_split or (s["split"] or "") == g]
        nbytes = [s["bytes"] for s in part if isinstance(s["bytes"], (int, float))]
        ndocs = [s["documents"] for s in part if isinstance(s["documents"], int)]
        if part and (nbytes or ndocs):
            label = f"**total {g}**" if g else "**total**"
            rows.append([label, ""] + ([""] if show_split else []) + ["", "", _fmt_bytes(sum(nbytes)) if nbytes else "-", f"{sum(ndocs):,}" if ndocs else "-"])
    align = "|---" * (len(head) - 2) + "|---:|---:|"
    text = "## Data\n\n"
    text += f"{len(used)} source{'s' if len(used) != 1 else ''}"
    domains = sorted({s["domain"] for s in used if s["domain"]})
    if domains:
        text += f" in {len(domains)} domain{'s' if len(domains) != 1 else ''} ({', '.join(domains)})"
    text += (f"; the full manifest (versions, sha256 of every file) is [{manifest_path}]({manifest_path})." if manifest_path else ".")
    text += "\n\n" + (_table(head, rows, align) if rows else "(the manifest lists no fetched sources)")
    if skipped:
        text += "\n\nNot used (recorded in the manifest): " + "; ".join(
            f"{s['name'] or s['package'] or '?'}" + (f" ({s['reason']})" if isinstance(s["reason"], str) else f" ({s['status']})") for s in skipped
        ) + "."
    return text


def _evaluation(eval_markdown: str | None, plots: Sequence[tuple[str, str]]) -> str | None:
    if not eval_markdown and not plots:
        return None
    text = "## Evaluation\n\n"
    if eval_markdown:
        text += (
            "Bits per byte (lower is better) on held-out text of each domain for every checkpoint, and the downstream "
            "task scores that were run (`lmforge eval checkpoints`):\n\n" + eval_markdown.strip()
        )
    for alt, path in plots:
        text += f"\n\n![{alt}]({path})"
    return text


def _revisions(revisions: Sequence[Mapping[str, Any]], final: str | None, bpb: Mapping[int, float] | None) -> str | None:
    if not revisions:
        return None
    head = ["revision", "step", "tokens"] + (["macro bpb"] if bpb else [])
    rows = []
    for r in revisions:
        name = f"`{r['name']}`" + (" (= `main`)" if r["name"] == final else "")
        row = [name, f"{r['step']:,}", f"{r['tokens_seen']:,}" if r.get("tokens_seen") is not None else "-"]
        if bpb:
            v = bpb.get(r["step"])
            row.append(f"{v:.4f}" if isinstance(v, (int, float)) else "-")
        rows.append(row)
    text = (
        "## Revisions\n\n"
        "Every checkpoint of the run is a revision, named `step<optimizer steps>-tokens<tokens seen>` as OLMo names "
        "its checkpoints (tokens rounded; K = thousand, M = million, B = billion). Each is a git branch holding a "
        "complete transformers model directory; `main` is the final checkpoint plus this card and the release files.\n\n"
    )
    return text + _table(head, rows, "|---|---:|---:|" + ("---:|" if bpb else ""))


def _usage(final: str | None, example: str | None, hub_repo: str | None) -> str:
    rev = example or final or "step1000-tokens4B"
    hub = hub_repo or "USER/MODEL"
    text = (
        "## How to use\n\n"
        "Transformers loads this directory as it is (no remote code). The files of `main` are the final checkpoint; "
        "for another revision, check its branch out first (a local directory has no `revision=`: transformers reads "
        "whatever is checked out):\n\n"
        "```bash\n"
        "git clone MODEL_DIR my-model            # or use MODEL_DIR itself\n"
        f"git -C my-model checkout {rev}\n"
        "```\n\n"
        "```python\n"
        "import transformers\n\n"
        'pipe = transformers.pipeline("text-generation", model="my-model")\n'
        'print(pipe("The meaning of", max_new_tokens=40)[0]["generated_text"])\n'
        "```\n\n"
        "or without touching the clone's checkout: `lmforge.release.export_revision(\"MODEL_DIR\", "
        f"\"{rev}\", \"{rev}\")` writes that revision's files to a new directory.\n\n"
        f"From the Hugging Face Hub{'' if hub_repo else ' (after `lmforge release ... --push USER/MODEL`)'}, pass the revision:\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{hub}", revision="{rev}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{hub}", revision="{rev}")\n'
        "```\n\n"
        "lmforge reads the same directory: `lmforge generate --model my-model --prompt \"The meaning of\"`."
    )
    return text


def model_card(
    *,
    name: str,
    model: ModelConfig | Mapping[str, Any],
    params: int | None = None,
    non_embedding_params: int | None = None,
    dtype: str | None = None,
    revisions: Sequence[Mapping[str, Any]] = (),
    final_revision: str | None = None,
    train_config: Mapping[str, Any] | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
    world_size: int | None = None,
    eval_markdown: str | None = None,
    eval_summary: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    manifest_path: str | None = None,
    files: Mapping[str, str] | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    hub_repo: str | None = None,
    reproduce: str | None = None,
    description: str | None = None,
) -> str:
    """The README.md of a model repository's ``main``.

    ``model``: the model config; ``revisions``: dicts with ``name``, ``step``, ``tokens_seen`` (oldest
    first; ``final_revision`` names the one ``main`` holds); ``train_config``: the run's config
    (sections ``trainer``, ``optim``, ``schedule``, ``run``, ``data``); ``metrics``: the records of
    RUN/metrics.jsonl; ``eval_markdown`` / ``eval_summary``: ``summary.md`` / ``summary.json`` of
    ``lmforge eval checkpoints``; ``manifest``: a data manifest (see :func:`manifest_sources`);
    ``files``: relative paths of what the repository holds, by role (``curves``, ``bpb_plot``,
    ``downstream_plot``, ``metrics``, ``config``, ``eval_summary``, ``manifest``, ``license``).
    """
    cfg = _as_config(model)
    files = dict(files or {})
    final = next((r for r in revisions if r["name"] == final_revision), revisions[-1] if revisions else None)
    final_step = final["step"] if final else None
    final_tokens = final.get("tokens_seen") if final else None
    parts = [_front_matter(license, datasets), f"# {name}"]
    intro = description or (
        f"A {format_count(params) + '-parameter ' if params else ''}{_ARCH_NAME.get(cfg.arch, cfg.arch)}-style language model "
        "trained from scratch with lmforge"
        + (f" on {format_count(final_tokens)} tokens" if final_tokens else "")
        + "."
    )
    if revisions:
        intro += (
            f" Its {len(revisions)} checkpoint{'s are' if len(revisions) != 1 else ' is'} published as revisions the way OLMo "
            f"publishes its checkpoints; `main` is the final one (`{final['name']}`)."
        )
    parts.append(intro)
    parts.append(_architecture(cfg, params, non_embedding_params, dtype))
    parts.append(_training(train_config, list(metrics), final_step, final_tokens, world_size, files.get("curves")))
    data = _data(manifest, files.get("manifest"))
    if data:
        parts.append(data)
    plots = [(alt, files[k]) for k, alt in (("bpb_plot", "Bits per byte per domain against tokens seen"), ("downstream_plot", "Downstream tasks against tokens seen")) if files.get(k)]
    ev = _evaluation(eval_markdown, plots)
    if ev:
        parts.append(ev)
    bpb = None
    if eval_summary and isinstance(eval_summary.get("rows"), list):
        bpb = {r["step"]: r["macro_bpb"] for r in eval_summary["rows"] if isinstance(r, Mapping) and "step" in r and r.get("macro_bpb") is not None}
    rev = _revisions(revisions, final["name"] if final else None, bpb or None)
    if rev:
        parts.append(rev)
    example = revisions[len(revisions) // 2]["name"] if len(revisions) > 1 else (final["name"] if final else None)
    parts.append(_usage(final["name"] if final else None, example, hub_repo))
    listing = [
        ("`config.json`, `generation_config.json`, `model.safetensors`, `tokenizer*.json`", "the model in transformers' format"),
        ("`lmforge.yaml`, `revision.json`", "lmforge's model config; which checkpoint this is (step, tokens seen)"),
    ]
    for key, what in (
        ("config", "the training config"),
        ("metrics", "training metrics, one JSON record per logged step"),
        ("curves", "loss and learning rate against steps"),
        ("eval_summary", "evaluation of every checkpoint (also `summary.md`, the table above)"),
        ("manifest", "the data manifest"),
        ("license", "the license"),
    ):
        if files.get(key):
            listing.append((f"`{files[key]}`", what))
    parts.append("## Files\n\n" + _table(["file", "what"], listing))
    if reproduce:
        parts.append("## Reproduce\n\n```bash\n" + reproduce.strip() + "\n```")
    lic = f"`{license}`" + (f" (full text in [{files['license']}]({files['license']}))" if files.get("license") else "")
    parts.append(f"## License\n\nThe weights and this card are released under {lic}. The training data keep their own licenses" + (" (see Data)." if data else ".") + "")
    return "\n\n".join(p.rstrip("\n") if i else p for i, p in enumerate(parts)).replace("---\n\n\n", "---\n\n") + "\n"


def revision_card(*, name: str, revision: str, step: int, tokens_seen: int | None, license: str = "apache-2.0", final: bool = False) -> str:
    """The short README.md of one revision branch (the full card lives on ``main``)."""
    tokens = f" after {tokens_seen:,} tokens ({format_count(tokens_seen)})" if tokens_seen is not None else ""
    return (
        _front_matter(license, None)
        + f"\n# {name} — revision `{revision}`\n\n"
        + f"The checkpoint of {name} at step {step:,}{tokens}, as a transformers model directory"
        + (" (the final checkpoint)" if final else "")
        + ". The model card (architecture, training, data, evaluation) is on the `main` branch.\n\n"
        + "```python\nimport transformers\n\n"
        + 'pipe = transformers.pipeline("text-generation", model="THIS_DIRECTORY")  # after `git checkout '
        + revision
        + "`\n```\n"
    )


# --- LICENSE -------------------------------------------------------------------------------------------
_MIT = """MIT License

Copyright (c) {year} {holder}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

# SPDX id (lower case, as the Hub writes it) -> file name under /usr/share/common-licenses (Debian)
_COMMON = {
    "apache-2.0": "Apache-2.0", "gpl-2.0": "GPL-2", "gpl-3.0": "GPL-3", "lgpl-2.1": "LGPL-2.1", "lgpl-3.0": "LGPL-3",
    "mpl-2.0": "MPL-2.0", "cc0-1.0": "CC0-1.0", "gfdl-1.3": "GFDL-1.3", "artistic-2.0": "Artistic",
}


def _lmforge_apache() -> str | None:
    """lmforge's own LICENSE (Apache-2.0), from its installed distribution."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("lmforge")
        for name in ("licenses/LICENSE", "LICENSE"):
            text = dist.read_text(name)
            if text and "Apache License" in text[:400] and "Version 2.0" in text[:400]:
                return text
    except (PackageNotFoundError, OSError):
        pass
    src = Path(__file__).resolve().parents[3] / "LICENSE"  # a source checkout
    if src.is_file():
        text = src.read_text(encoding="utf-8")
        if "Apache License" in text[:400] and "Version 2.0" in text[:400]:
            return text
    return None


def license_text(license: str, *, holder: str = "the authors", year: int | None = None) -> str:
    """The text of the LICENSE file for an SPDX license id (case-insensitive)."""
    lid = license.strip().lower()
    if lid == "mit":
        return _MIT.format(year=year or _dt.date.today().year, holder=holder)
    if lid == "apache-2.0":
        text = _lmforge_apache()
        if text:
            return text if text.endswith("\n") else text + "\n"
    common = Path("/usr/share/common-licenses") / _COMMON.get(lid, "")
    if lid in _COMMON and common.is_file():
        return common.read_text(encoding="utf-8")
    return (
        f"This model is released under the license with SPDX identifier {license}.\n"
        f"The full text is at https://spdx.org/licenses/{license}.html\n"
    )
