"""What a release's model card says, gathered once from the run and the model repository.

    facts = card_facts(git, run=run, final=infos[-1], final_revision="step6-tokens12K", revisions=revs, ...)
    text = render_card(facts)

The model (config, parameter count, weight dtype) is read from the final revision's branch, i.e.
exactly what was released; the training facts from the run (config, ``metrics.jsonl``) and from the
final checkpoint (world size, global batch, sequence length); the evaluation from the release files
staged for ``main``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from lmforge.checkpoint.listing import METRICS, CheckpointInfo, read_metrics
from lmforge.checkpoint.unsharded import CONFIG
from lmforge.release.card import CardFacts, manifest_sources
from lmforge.release.errors import ReleaseError
from lmforge.release.git import Git

__all__ = ["METRICS", "CURVES", "card_facts", "default_reproduce"]

CURVES = "curves.png"  # METRICS (metrics.jsonl): lmforge.checkpoint.listing


def card_facts(
    git: Git,
    *,
    run: Path,
    final: CheckpointInfo,
    final_revision: str,
    revisions: Sequence[Mapping[str, Any]],
    name: str,
    train_config: Mapping[str, Any],
    stage: Path,
    files: Mapping[str, str],
    eval_dir: Path | None,
    manifest: Any,
    license: str,
    datasets: Sequence[str] | None,
    hub_repo: str | None,
    reproduce: str,
) -> CardFacts:
    """The facts of the card of ``main``: ``stage`` holds main's release files (their paths by role
    in ``files``); ``manifest``: the (redacted) data manifest or None."""
    cfg_json = json.loads(git("show", f"refs/heads/{final_revision}:config.json"))
    model_cfg = _model_config(git, final_revision)
    params, non_embedding = _count_params(model_cfg)
    eval_summary = None
    if "eval_summary" in files:
        try:
            eval_summary = json.loads((stage / files["eval_summary"]).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReleaseError(f"{eval_dir}/summary.json: not valid JSON ({e})") from None
    return CardFacts(
        name=name,
        model=model_cfg,
        params=params,
        non_embedding_params=non_embedding,
        dtype=cfg_json.get("torch_dtype"),
        revisions=list(revisions),
        final_revision=final_revision,
        train_config=train_config,
        metrics=read_metrics(run),
        world_size=final.world_size,
        global_batch=final.global_batch,
        seq_len=final.seq_len,
        eval_markdown=(stage / files["eval_table"]).read_text(encoding="utf-8") if "eval_table" in files else None,
        eval_summary=eval_summary,
        sources=manifest_sources(manifest) if manifest is not None else None,
        files=dict(files),
        license=license,
        datasets=datasets,
        hub_repo=hub_repo,
        reproduce=reproduce,
    )


def _model_config(git: Git, revision: str):
    from lmforge.models.olmo import ModelConfig

    doc = yaml.safe_load(git("show", f"refs/heads/{revision}:lmforge.yaml")) or {}
    return ModelConfig.from_dict(doc.get("model", {}), _prefix="model.")


def _count_params(cfg) -> tuple[int, int]:
    from lmforge.models.olmo import OLMo

    m = OLMo(cfg, device="meta")
    return m.num_params(), m.num_params(non_embedding=True)


def default_reproduce(run_dir: Any, repo_dir: Any, eval_dir: Any, manifest: Any, train_cfg: Mapping[str, Any], push: str | None) -> str:
    """The card's Reproduce commands: train, evaluate, release (as the paths were given)."""
    lines = [f"lmforge train {Path(run_dir) / CONFIG}" if train_cfg else f"# train the run in {run_dir}"]
    if eval_dir is not None:
        lines.append(f"lmforge eval checkpoints {run_dir} --out {eval_dir}  # with the same --tasks/--data")
    cmd = f"lmforge release {run_dir} --repo {repo_dir}"
    if eval_dir is not None:
        cmd += f" --eval {eval_dir}"
    if isinstance(manifest, (str, os.PathLike)):
        cmd += f" --manifest {manifest}"
    if push:
        cmd += f" --push {push}"
    lines.append(cmd)
    return "\n".join(lines)
