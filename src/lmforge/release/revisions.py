"""Release a training run the way OLMo releases models: every checkpoint a revision of one repository.

    summary = release_run("runs/quickstart/train", "runs/quickstart/release",
                          eval_dir="runs/quickstart/eval", manifest="runs/quickstart/data/manifest.json")
    summary["revisions"]   # ["step100-tokens205K", "step200-tokens410K"]

or ``release(ReleaseConfig(run=..., repo=...))``, or ``lmforge release RUN --repo DIR [--eval DIR]
[--manifest FILE] [--push USER/NAME]`` (whose flags are the fields of :class:`ReleaseConfig`).

The model repository is a local git repository (``repo_dir``) with one branch per checkpoint:

    step{N}-tokens{M}{unit}   one commit, no parent (an orphan branch): the checkpoint exported to
                              transformers' format (config.json, generation_config.json,
                              model.safetensors, tokenizer.json, tokenizer_config.json, lmforge.yaml)
                              plus revision.json (step, tokens seen) and a short README.md
    main                      the final checkpoint's files plus the release: README.md (the model
                              card), LICENSE, revisions.json, training/{config.yaml, metrics.jsonl,
                              curves.png}, eval/{summary.md, summary.json, *.png}, data/<manifest>.
                              Each release that changes it adds one commit, so main's history is
                              the history of releases.

``git checkout <branch>`` in the repository (or a clone) leaves a directory that
``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and ``pipeline("text-generation",
model=DIR)`` load as it is. ``revision=`` does not work for local directories (transformers reads
what is checked out), hence :func:`export_revision`, which writes one revision's files to a new
directory without touching the checkout (:mod:`lmforge.release.git`). On the Hub (``push``) every branch is a Hub branch and
``from_pretrained(REPO_ID, revision="step200-tokens410K")`` works.

The training files and the evaluation sit in sub-folders so that ``main`` stays a plain HF model
directory: a ``config.yaml`` next to ``model.safetensors`` would make lmforge's ``load_pretrained``
read the directory as an lmforge checkpoint.

Names (:mod:`lmforge.release.naming`): N is the optimizer step; M is ``tokens_seen`` from the
checkpoint's ``extra.json`` in one unit for the whole run (``token_unit="auto"``: the largest of B,
M, K in which the final checkpoint's count is at least 10, so M reads as a short integer: 409,600 ->
``410K``; below 10,000 tokens no unit), rounded half up (:func:`format_tokens`). OLMo uses B
throughout (``token_unit="B"``: 2.1e12 -> ``2100B``).

Crash safety and reruns: each revision is exported to a temporary directory inside ``.git``, turned
into a tree and a commit with git's plumbing (a private index; the repository's working tree and
index are not used), and the branch is created last with ``git update-ref`` (which fails if it
exists). A killed release leaves at most unreferenced objects, never a half-filled branch. A rerun
skips every step that already has a branch (whatever its unit), so it exports only new checkpoints;
``main`` gets a new commit only when its tree changes (new final checkpoint, new eval or card).
When ``main`` is checked out in ``repo_dir`` with no local changes, its files are updated too.
One release at a time writes a repository (a lock on its git directory).

The model card is gathered into a :class:`lmforge.release.card.CardFacts` by
:func:`lmforge.release.facts.card_facts` and rendered from ``templates/model_card.md.j2``; the Hub
upload is :mod:`lmforge.release.hub`.

Large models: plain git stores every revision's weights as blobs (no deduplication between steps),
which is fine for small models. For big ones, push to the Hub (which stores large files itself), or
track the weights with git-lfs (``git lfs migrate import --everything --include="*.safetensors"``)
before pushing the repository elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from lmforge.checkpoint.listing import CHECKPOINTS, EXTRA_JSON, CheckpointInfo, checkpoint_info, incomplete_checkpoints, list_checkpoints
from lmforge.checkpoint.pretrained import load_pretrained
from lmforge.checkpoint.unsharded import CONFIG, CheckpointError
from lmforge.config import atomic_write_text, parse_dtype
from lmforge.redact import redact_secrets
from lmforge.release.card import license_text, render_card, revision_card
from lmforge.release.config import ReleaseConfig
from lmforge.release.errors import ReleaseError
from lmforge.release.facts import CURVES, METRICS, card_facts, default_reproduce
from lmforge.release.git import NEW, TMP_PREFIX, Git, commit_dir, export_revision, list_revisions, open_repo
from lmforge.release.hf import export_hf
from lmforge.release.hub import REVISIONS_JSON, check_push_target, push_to_hub
from lmforge.release.provenance import TrainingFiles
from lmforge.release.naming import TOKEN_UNITS, auto_token_unit, format_tokens, parse_revision, revision_name
from lmforge.storage import crash_point, lock_output

__all__ = [
    "ReleaseConfig",
    "ReleaseError",
    "release",
    "release_run",
    # re-exported from lmforge.release.naming, .git and .hub, where they live
    "format_tokens",
    "auto_token_unit",
    "revision_name",
    "parse_revision",
    "list_revisions",
    "export_revision",
    "push_to_hub",
    "check_push_target",
]

EVAL_FILES = ("summary.md", "summary.json", "bpb_vs_tokens.png", "downstream_vs_tokens.png")
REVISION_JSON = "revision.json"


def release(cfg: ReleaseConfig, *, datasets: Sequence[str] | None = None, reproduce: str | None = None, progress: bool = True) -> dict[str, Any]:
    """:func:`release_run` as ``lmforge release`` calls it: the run, repository and options of ``cfg``
    (``private`` unless ``cfg.public``)."""
    return release_run(
        cfg.run, cfg.repo, eval_dir=cfg.eval, manifest=cfg.manifest, license=cfg.license, dtype=cfg.dtype, token_unit=cfg.token_unit,
        push=cfg.push, private=not cfg.public, tokenizer=cfg.tokenizer, name=cfg.name, datasets=datasets, reproduce=reproduce,
        progress=progress, force=cfg.force,
    )  # fmt: skip


# --- the run -------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ReleaseError(f"{path}: unreadable ({getattr(e, 'problem', e)})") from None
    return data if isinstance(data, dict) else {}


def _tokens_from_config(cfg: Mapping[str, Any], step: int) -> int | None:
    t = cfg.get("trainer") if isinstance(cfg.get("trainer"), Mapping) else {}
    m = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    seq, gb = t.get("seq_len") or m.get("max_seq_len"), t.get("global_batch")
    return step * int(gb) * int(seq) if isinstance(gb, int) and isinstance(seq, int) else None


def _checkpoints(run: Path, say: Callable[[str], None]) -> list[CheckpointInfo]:
    """The run's complete checkpoints with tokens seen (from the config for checkpoints that did not
    record it); incomplete ones are reported."""
    if not run.is_dir():
        raise ReleaseError(f"{run}: no such run directory")
    root = run / CHECKPOINTS
    complete = list_checkpoints(run)
    incomplete = incomplete_checkpoints(run)
    for what in incomplete:
        say(f"release: skipping {root}/{what}")
    if not complete:
        hint = f"; incomplete: {', '.join(i.split(' ')[0] for i in incomplete)}" if incomplete else ""
        where = f"no {CHECKPOINTS}/ directory" if not root.is_dir() else f"no complete checkpoint in {root}{hint}"
        raise ReleaseError(f"{run}: {where}; train with checkpoints first (lmforge train CONFIG) and pass the run directory")
    out = []
    for step, path in complete:
        try:
            info = checkpoint_info(step, path)
        except CheckpointError as e:  # an unreadable extra.json
            raise ReleaseError(str(e)) from None
        if info.tokens_seen is None:
            tokens = _tokens_from_config(_read_yaml(path / CONFIG), step) if (path / CONFIG).is_file() else None
            if tokens is None:
                raise ReleaseError(
                    f"{path}: {EXTRA_JSON} has no 'tokens_seen' and {CONFIG} has no trainer.global_batch/seq_len; cannot name the revision"
                )
            info = dataclasses.replace(info, tokens_seen=tokens)  # step × global batch × sequence length
        out.append(info)
    return out


def _load_manifest(manifest: Any) -> tuple[Any, Path | None]:
    if manifest is None:
        return None, None
    if isinstance(manifest, (Mapping, list)):
        return manifest, None
    p = Path(manifest)
    if not p.is_file():
        raise ReleaseError(f"{p}: data manifest not found")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise ReleaseError(f"{p}: unreadable data manifest ({e})") from None
    if not isinstance(data, (dict, list)):
        raise ReleaseError(f"{p}: a data manifest is a mapping with 'sources' or a list of sources")
    return data, p


def _load_tokenizer(spec: Any):
    if spec is None or hasattr(spec, "to_hf_files"):
        return spec
    from lmforge.tokenizer import load_tokenizer

    return load_tokenizer(spec)


@dataclasses.dataclass
class _Release:
    """A release, checked and read before the repository is locked."""

    run: Path
    repo: Path
    ckpts: list[CheckpointInfo]
    unit: str
    train_cfg: dict[str, Any]
    name: str
    eval_dir: Path | None
    manifest: Any  # the data, redacted
    manifest_path: Path | None
    tokenizer: Any
    dtype: Any
    license: str
    datasets: Sequence[str] | None
    reproduce: str
    push: str | None
    private: bool
    force: bool
    progress: bool
    t0: float
    training: TrainingFiles | None = None  # the revisions' training/ files (set once the repository is open)


def release_run(
    run_dir: str | os.PathLike,
    repo_dir: str | os.PathLike,
    *,
    eval_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | Mapping[str, Any] | list | None = None,
    license: str = "apache-2.0",
    dtype: Any = None,
    token_unit: str = "auto",
    push: str | None = None,
    private: bool = True,
    tokenizer: Any = None,
    name: str | None = None,
    datasets: Sequence[str] | None = None,
    reproduce: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Export every complete checkpoint of ``run_dir`` to a revision branch of the git repository
    ``repo_dir`` and make ``main`` the final checkpoint plus the model card and release files.

    ``eval_dir``: the output of ``lmforge eval checkpoints`` (summary.md/json and plots go into the
    card and ``eval/``); ``manifest``: a data manifest (path to JSON/YAML, or the data itself);
    ``license``: an SPDX id (front matter and LICENSE); ``dtype``: the exported weights' dtype (default:
    as trained); ``token_unit``: 'auto', 'B', 'M' or 'K' (see :func:`format_tokens`); ``push``: a Hub
    repo id to upload every branch to (:func:`push_to_hub`; ``private`` when it is created);
    ``tokenizer``: for checkpoints saved without one; ``name``: the model's name in the card (default:
    the run's ``run.name`` or directory name); ``reproduce``: the card's reproduce commands.
    (:func:`release` takes the same as a :class:`ReleaseConfig`.)

    Returns ``{"repo", "revisions" (all, by step), "created", "skipped", "main": {"revision",
    "commit", "updated"}, "card", "pushed"}``.
    """
    say: Callable[[str], None] = (lambda m: print(m, flush=True)) if progress else (lambda m: None)
    t0 = time.perf_counter()
    run, repo = Path(run_dir), Path(repo_dir)
    if token_unit != "auto" and token_unit.upper() not in TOKEN_UNITS:
        raise ReleaseError(f"token_unit must be 'auto', 'B', 'M' or 'K'; got {token_unit!r}")
    ckpts = _checkpoints(run, say)
    unit = auto_token_unit(ckpts[-1].tokens_seen) if token_unit == "auto" else token_unit.upper()
    manifest_data, manifest_path = _load_manifest(manifest)
    manifest_data = redact_secrets(manifest_data)  # a manifest may hold credentials (an index URL's): never released
    dtype = parse_dtype(dtype, key="dtype", error=ReleaseError)
    tok = _load_tokenizer(tokenizer)
    train_cfg = _read_yaml(run / CONFIG) if (run / CONFIG).is_file() else _read_yaml(ckpts[-1].path / CONFIG)
    run_section = train_cfg.get("run") if isinstance(train_cfg.get("run"), Mapping) else {}
    rel = _Release(
        run=run, repo=repo, ckpts=ckpts, unit=unit, train_cfg=train_cfg, name=name or run_section.get("name") or run.resolve().name,
        eval_dir=Path(eval_dir) if eval_dir is not None else None, manifest=manifest_data, manifest_path=manifest_path,
        tokenizer=tok, dtype=dtype, license=license, datasets=datasets,
        reproduce=reproduce or default_reproduce(run_dir, repo_dir, eval_dir, manifest, train_cfg, push),
        push=push, private=private, force=force, progress=progress, t0=t0,
    )  # fmt: skip

    git = open_repo(repo)
    git_dir = git.git_dir
    with lock_output(git_dir, f"lmforge release {run}"):  # one release at a time writes a repository
        _clean_stale(git_dir)  # scratch of a killed release (we hold the lock: nobody else's)
        rel.training = TrainingFiles(run, Path(git_dir), warn=say)
        return _release_locked(git, rel, say)


def _release_locked(git: Git, rel: _Release, say: Callable[[str], None]) -> dict[str, Any]:
    tmp_root = Path(tempfile.mkdtemp(dir=git.git_dir, prefix=TMP_PREFIX))
    try:
        revisions, created, skipped = _release_revisions(git, rel, tmp_root, say)
        final_rev = revisions[-1]["name"]
        revisions = _all_revisions(git, revisions)  # + branches of checkpoints the run no longer has (pruned)
        card, main_commit, updated = _release_main(git, rel, final_rev, revisions, tmp_root, say)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    pushed = None
    if rel.push:
        pushed = push_to_hub(rel.repo, rel.push, private=rel.private, progress=rel.progress, force=rel.force)
    repo = rel.repo
    say(
        f"release: {repo}: {len(revisions)} revision(s) ({len(created)} new), main = {final_rev} "
        f"({time.perf_counter() - rel.t0:.1f}s). Load: transformers.pipeline('text-generation', model='{repo}') "
        f"with main checked out; another revision: git -C {repo} checkout {revisions[0]['name']}"
    )
    return {
        "repo": str(repo),
        "revisions": [r["name"] for r in revisions],
        "created": created,
        "skipped": skipped,
        "main": {"revision": final_rev, "commit": main_commit, "updated": updated},
        "card": card,
        "pushed": pushed,
    }


def _release_revisions(git: Git, rel: _Release, tmp_root: Path, say: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """One branch per checkpoint that has none yet: (the run's revisions, created, skipped)."""
    existing = {r["step"]: r["name"] for r in list_revisions(rel.repo)}
    created, skipped, revisions = [], [], []
    for i, ck in enumerate(rel.ckpts):
        if ck.step in existing:
            rname = existing[ck.step]
            skipped.append(rname)
            say(f"release: {rname} exists, skipped")
        else:
            rname = revision_name(ck.step, ck.tokens_seen, rel.unit)
            t1 = time.perf_counter()
            commit = _export_revision_commit(git, ck, rname, rel, i == len(rel.ckpts) - 1, tmp_root)
            git("update-ref", f"refs/heads/{rname}", commit, NEW)  # fails if the branch appeared meanwhile
            crash_point(f"after branch {rname}")
            created.append(rname)
            say(f"release: {rname} <- {ck.path} ({time.perf_counter() - t1:.1f}s)")
        revisions.append({"name": rname, "step": ck.step, "tokens_seen": ck.tokens_seen})
    return revisions, created, skipped


def _release_main(git: Git, rel: _Release, final_rev: str, revisions: list[dict[str, Any]], tmp_root: Path, say: Callable[[str], None]):
    """main: the final revision's tree + the release files and the card; (card, commit, updated)."""
    stage = tmp_root / "main"
    stage.mkdir()
    files = _main_extras(stage, rel)
    atomic_write_text(stage / REVISIONS_JSON, json.dumps({"main": final_rev, "revisions": revisions}, indent=1) + "\n")
    facts = card_facts(
        git, run=rel.run, final=rel.ckpts[-1], final_revision=final_rev, revisions=revisions, name=rel.name, train_config=rel.train_cfg,
        stage=stage, files=files, eval_dir=rel.eval_dir, manifest=rel.manifest, license=rel.license, datasets=rel.datasets,
        hub_repo=rel.push, reproduce=rel.reproduce,
    )  # fmt: skip
    card = render_card(facts)
    atomic_write_text(stage / "README.md", card)
    index = tmp_root / "main.index"
    git("read-tree", f"refs/heads/{final_rev}", index=index)
    git("add", "--force", "--", *sorted(p.name for p in stage.iterdir()), index=index, work_tree=stage)
    tree = git("write-tree", index=index)
    old = git.ref("refs/heads/main")
    updated = old is None or git("rev-parse", f"{old}^{{tree}}") != tree
    main_commit = old
    if updated:
        msg = f"release {final_rev}: {rel.name}, {len(revisions)} revision(s)"
        main_commit = git("commit-tree", tree, "-m", msg, *(["-p", old] if old else []))
        git("update-ref", "refs/heads/main", main_commit, old or NEW)
        crash_point("after branch main")
        _sync_checkout(git, old, main_commit, say)
        say(f"release: main <- {final_rev} + model card and release files")
    else:
        say("release: main is up to date")
    return card, main_commit, updated


def _clean_stale(git_dir: Path) -> None:
    for p in git_dir.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _export_revision_commit(git: Git, ck: CheckpointInfo, name: str, rel: _Release, final: bool, tmp_root: Path) -> str:
    from lmforge import __version__

    try:
        model, tok = load_pretrained(ck.path)
    except CheckpointError as e:
        raise ReleaseError(f"{ck.path}: cannot load the checkpoint ({e})") from None
    tok = rel.tokenizer or tok
    if tok is None:
        raise ReleaseError(f"{ck.path}: holds no tokenizer.json; pass tokenizer= (--tokenizer PATH) to release the run")
    work = Path(tempfile.mkdtemp(dir=tmp_root, prefix="rev-"))
    out = export_hf(model, tok, work / "model", dtype=rel.dtype)
    del model
    readme = revision_card(name=rel.name, revision=name, step=ck.step, tokens_seen=ck.tokens_seen, license=rel.license, final=final)
    atomic_write_text(out / "README.md", readme)
    info = {"revision": name, "step": ck.step, "tokens_seen": ck.tokens_seen, "checkpoint": ck.path.name, "lmforge_version": __version__}
    atomic_write_text(out / REVISION_JSON, json.dumps(info, indent=1) + "\n")
    if rel.training is not None:  # config, data order and token-file manifest: batch N can be rebuilt
        rel.training.write(out)
    msg = f"{name}: {rel.name} at step {ck.step} ({ck.tokens_seen:,} tokens seen)\n\nExported from {ck.path.name} by lmforge {__version__}."
    commit = commit_dir(git, out, work / "index", msg)
    shutil.rmtree(work, ignore_errors=True)
    return commit


def _main_extras(stage: Path, rel: _Release) -> dict[str, str]:
    """Write the release files of ``main`` under ``stage``; returns their relative paths by role."""
    run, eval_dir = rel.run, rel.eval_dir
    files: dict[str, str] = {}
    (stage / "training").mkdir(parents=True)
    cfg = run / CONFIG if (run / CONFIG).is_file() else rel.ckpts[-1].path / CONFIG
    if cfg.is_file():
        shutil.copyfile(cfg, stage / "training" / CONFIG)
        files["config"] = f"training/{CONFIG}"
    if rel.training is not None:  # as in every revision: the data order and the token-file manifest
        for name in rel.training.write(stage):
            files.setdefault(name.split(".")[0], f"training/{name}")
    for key, name in (("metrics", METRICS), ("curves", CURVES)):
        if (run / name).is_file():
            shutil.copyfile(run / name, stage / "training" / name)
            files[key] = f"training/{name}"
    if eval_dir is not None:
        if not eval_dir.is_dir():
            raise ReleaseError(f"{eval_dir}: no such evaluation directory (lmforge eval checkpoints ... --out DIR writes one)")
        found = [n for n in EVAL_FILES if (eval_dir / n).is_file()]
        if "summary.md" not in found and "summary.json" not in found:
            raise ReleaseError(f"{eval_dir}: no summary.md or summary.json; run lmforge eval checkpoints {run} --out {eval_dir} first")
        (stage / "eval").mkdir()
        for n in found:
            shutil.copyfile(eval_dir / n, stage / "eval" / n)
        for key, n in (("eval_summary", "summary.json"), ("eval_table", "summary.md"), ("bpb_plot", "bpb_vs_tokens.png"), ("downstream_plot", "downstream_vs_tokens.png")):
            if n in found:
                files[key] = f"eval/{n}"
    if rel.manifest is not None:
        files["manifest"] = _write_manifest(stage, rel.manifest, rel.manifest_path)
    atomic_write_text(stage / "LICENSE", license_text(rel.license))
    files["license"] = "LICENSE"
    return files


def _write_manifest(stage: Path, clean: Any, manifest_path: Path | None) -> str:
    """The (redacted) data manifest under ``stage/data``: the file itself when redaction changed nothing."""
    (stage / "data").mkdir()
    if manifest_path is not None and clean == _load_manifest(manifest_path)[0]:
        shutil.copyfile(manifest_path, stage / "data" / manifest_path.name)
        return f"data/{manifest_path.name}"
    if manifest_path is not None:
        text = json.dumps(clean, indent=1, ensure_ascii=False) + "\n" if manifest_path.suffix == ".json" else yaml.safe_dump(clean, sort_keys=False)
        atomic_write_text(stage / "data" / manifest_path.name, text)
        return f"data/{manifest_path.name}"
    atomic_write_text(stage / "data" / "manifest.json", json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    return "data/manifest.json"


def _sync_checkout(git: Git, old: str | None, new: str, say: Callable[[str], None]) -> None:
    """Update the files of ``repo_dir`` when main is checked out there (never over local changes)."""
    head = git("symbolic-ref", "-q", "HEAD", check=False)
    if head != "refs/heads/main":
        return
    git("update-index", "-q", "--refresh", check=False)  # stat info may be stale (copied or touched files)
    args = ["read-tree", "-m", "-u"] + ([f"{old}^{{tree}}"] if old else []) + [f"{new}^{{tree}}"]
    if git(*args, check=False) is None:
        say(
            f"release: main was updated but the files in {git.repo} were not (it has local changes); "
            f"`git -C {git.repo} reset --hard main` shows the release (and discards those changes)"
        )


def _all_revisions(git: Git, from_run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every revision branch of the repository, by step: a release adds to what earlier ones made."""
    known = {r["name"]: r for r in from_run}
    out = []
    for r in list_revisions(git.repo):
        if r["name"] in known:
            out.append(known[r["name"]])
            continue
        tokens = r["tokens"]
        info = git("show", f"refs/heads/{r['name']}:{REVISION_JSON}", check=False)
        if info:
            try:
                tokens = int(json.loads(info)["tokens_seen"])
            except (ValueError, KeyError, TypeError):
                pass
        out.append({"name": r["name"], "step": r["step"], "tokens_seen": tokens})
    return out
