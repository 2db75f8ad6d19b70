"""Release a training run the way OLMo releases models: every checkpoint a revision of one repository.

    summary = release_run("runs/quickstart/train", "runs/quickstart/release",
                          eval_dir="runs/quickstart/eval", manifest="runs/quickstart/data/manifest.json")
    summary["revisions"]   # ["step100-tokens205K", "step200-tokens410K"]

or ``lmforge release RUN --repo DIR [--eval DIR] [--manifest FILE] [--push USER/NAME]``.

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
directory without touching the checkout. On the Hub (``push``) every branch is a Hub branch and
``from_pretrained(REPO_ID, revision="step200-tokens410K")`` works.

The training files and the evaluation sit in sub-folders so that ``main`` stays a plain HF model
directory: a ``config.yaml`` next to ``model.safetensors`` would make lmforge's ``load_pretrained``
read the directory as an lmforge checkpoint.

Names: N is the optimizer step; M is ``tokens_seen`` from the checkpoint's ``extra.json`` in one
unit for the whole run (``token_unit="auto"``: the largest of B, M, K in which the final
checkpoint's count is at least 10, so M reads as a short integer: 409,600 -> ``410K``; below
10,000 tokens no unit), rounded half up (:func:`format_tokens`). OLMo uses B throughout
(``token_unit="B"``: 2.1e12 -> ``2100B``).

Crash safety and reruns: each revision is exported to a temporary directory inside ``.git``, turned
into a tree and a commit with git's plumbing (a private index; the repository's working tree and
index are not used), and the branch is created last with ``git update-ref`` (which fails if it
exists). A killed release leaves at most unreferenced objects, never a half-filled branch. A rerun
skips every step that already has a branch (whatever its unit), so it exports only new checkpoints;
``main`` gets a new commit only when its tree changes (new final checkpoint, new eval or card).
When ``main`` is checked out in ``repo_dir`` with no local changes, its files are updated too.

Large models: plain git stores every revision's weights as blobs (no deduplication between steps),
which is fine for small models. For big ones, push to the Hub (which stores large files itself), or
track the weights with git-lfs (``git lfs migrate import --everything --include="*.safetensors"``)
before pushing the repository elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from lmforge.checkpoint.sharded import CHECKPOINTS, COMPLETE, EXTRA_JSON, list_checkpoints
from lmforge.checkpoint.unsharded import CONFIG, CheckpointError
from lmforge.config import ConfigError, atomic_write_text
from lmforge.release.card import license_text, model_card, revision_card
from lmforge.redact import redact_secrets
from lmforge.storage import crash_point, lock_output

__all__ = [
    "ReleaseError",
    "format_tokens",
    "auto_token_unit",
    "revision_name",
    "parse_revision",
    "list_revisions",
    "export_revision",
    "release_run",
    "push_to_hub",
    "check_push_target",
]

TOKEN_UNITS = {"B": 10**9, "M": 10**6, "K": 10**3}
_REVISION = re.compile(r"^step(\d+)-tokens(\d+)([KMB]?)$")
_CKPT_NAME = re.compile(r"^step(\d{7,})$")
_TMP_PREFIX = "lmforge-release-"
METRICS, CURVES = "metrics.jsonl", "curves.png"
EVAL_FILES = ("summary.md", "summary.json", "bpb_vs_tokens.png", "downstream_vs_tokens.png")
REVISION_JSON, REVISIONS_JSON = "revision.json", "revisions.json"
_NEW = ""  # update-ref's old value for "the ref must not exist yet"


class ReleaseError(ConfigError):
    """A release that cannot go ahead (one line: what is wrong and what to do)."""


# --- names -------------------------------------------------------------------------------------------
def auto_token_unit(tokens: int) -> str:
    """The largest unit (B, M, K) in which ``tokens`` is at least 10; '' below 10,000."""
    for unit, mult in TOKEN_UNITS.items():
        if tokens >= 10 * mult:
            return unit
    return ""


def format_tokens(tokens: int, unit: str = "auto") -> str:
    """``tokens`` as OLMo's revision names write it: an integer, rounded half up, and a unit.

    409_600 -> '410K' (auto), 2_100_000_000_000 -> '2100B' (auto or 'B'), 4_194_304 with 'B' -> '0B'
    (OLMo's ``step0-tokens0B``), 4096 -> '4096' (auto: no unit below 10,000)."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    u = auto_token_unit(tokens) if unit == "auto" else unit.upper()
    if u and u not in TOKEN_UNITS:
        raise ValueError(f"token unit must be 'auto', 'B', 'M', 'K' or '', got {unit!r}")
    if not u:
        return str(int(tokens))
    return f"{math.floor(tokens / TOKEN_UNITS[u] + 0.5)}{u}"


def revision_name(step: int, tokens_seen: int, unit: str = "auto") -> str:
    """``step{N}-tokens{M}{unit}``: ``revision_name(200, 409_600)`` -> 'step200-tokens410K'."""
    return f"step{step}-tokens{format_tokens(tokens_seen, unit)}"


def parse_revision(name: str) -> tuple[int, int] | None:
    """(step, approximate tokens) of a revision name, or None for other names (main, ...)."""
    m = _REVISION.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) * TOKEN_UNITS.get(m.group(3), 1)


# --- git -----------------------------------------------------------------------------------------------
# Variables that would point git at another repository, index or tree than the one we name.
_GIT_ENV_DROP = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES",
)
# Settings a user's global config may carry that would change or block what we commit.
_GIT_OPTS = ("-c", "commit.gpgSign=false", "-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "core.fileMode=true")
_IDENTITY = ("lmforge release", "lmforge-release@localhost")


class _Git:
    def __init__(self, repo: Path):
        self.repo = repo
        self._git_dir: Path | None = None

    def __call__(self, *args: str, index: Path | None = None, work_tree: Path | None = None, check: bool = True) -> str | None:
        """Run git on this repository; stdout (stripped), or None when it failed and ``check`` is off.
        With ``work_tree`` git runs inside that directory (paths are relative to it)."""
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        cmd = ["git", *_GIT_OPTS]
        if work_tree is not None:
            cmd += ["--git-dir", str(self.git_dir), "--work-tree", str(work_tree)]
        proc = subprocess.run(cmd + list(args), capture_output=True, env=env, cwd=work_tree or self.repo)
        if check and proc.returncode:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ReleaseError(f"{self.repo}: git {' '.join(args[:2])} failed: {err[-1] if err else f'exit status {proc.returncode}'}")
        return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None

    @property
    def git_dir(self) -> Path:
        if self._git_dir is None:
            self._git_dir = Path(self("rev-parse", "--absolute-git-dir"))
        return self._git_dir

    def ref(self, name: str) -> str | None:
        return self("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False) or None

    def branches(self) -> list[str]:
        out = self("for-each-ref", "--format=%(refname:short)", "refs/heads/")
        return [b for b in out.splitlines() if b]


def _check_git() -> None:
    if shutil.which("git") is None:
        raise ReleaseError("release needs the git command line tool; install git (e.g. apt-get install git)")


def _open_repo(repo_dir: Path) -> _Git:
    """The git repository at ``repo_dir`` (created, with branch main, when missing or empty)."""
    _check_git()
    if repo_dir.exists() and not repo_dir.is_dir():
        raise ReleaseError(f"{repo_dir}: exists and is not a directory")
    if not (repo_dir / ".git").exists():
        if repo_dir.is_dir() and any(repo_dir.iterdir()):
            raise ReleaseError(f"{repo_dir}: not empty and not a git repository; pass a new or empty directory, or a model repository from an earlier release")
        repo_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["git", "init", "-q", "-b", "main", str(repo_dir)], capture_output=True)
        if proc.returncode:
            raise ReleaseError(f"{repo_dir}: git init failed: {proc.stderr.decode(errors='replace').strip()}")
    git = _Git(repo_dir)
    if git("rev-parse", "--is-bare-repository") == "true":
        raise ReleaseError(f"{repo_dir}: a bare repository; release into a repository with a working tree (or a new directory)")
    # An identity for the commits, in this repository only (never the user's global config).
    for key, value in zip(("user.name", "user.email"), _IDENTITY):
        if not git("config", key, check=False):
            git("config", "--local", key, value)
    return git


def _commit_dir(git: _Git, src: Path, index: Path, message: str, parent: str | None = None) -> str:
    """A commit whose tree is exactly the files under ``src`` (ignore rules do not apply)."""
    git("add", "--all", "--force", index=index, work_tree=src)
    tree = git("write-tree", index=index)
    listed = set(git("ls-tree", "-r", "--name-only", "-z", tree).split("\0")) - {""}
    on_disk = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    if listed != on_disk:
        raise ReleaseError(f"{git.repo}: git stored {sorted(listed ^ on_disk)[:3]} differently from the export; nothing was committed")
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return git(*args)


def list_revisions(repo_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The revision branches of a model repository (``name``, ``step``, ``tokens``, ``commit``), by step."""
    git = _Git(Path(repo_dir))
    if not (Path(repo_dir) / ".git").exists():
        raise ReleaseError(f"{repo_dir}: not a model repository (no .git)")
    out = []
    for b in git.branches():
        parsed = parse_revision(b)
        if parsed:
            out.append({"name": b, "step": parsed[0], "tokens": parsed[1], "commit": git.ref(f"refs/heads/{b}")})
    return sorted(out, key=lambda r: (r["step"], r["name"]))


def export_revision(repo_dir: str | os.PathLike, revision: str, out_dir: str | os.PathLike) -> Path:
    """Write the files of ``revision`` (a branch, tag or commit) to the new directory ``out_dir``,
    without touching the repository's checkout: a model directory transformers loads as it is."""
    _check_git()
    repo, out = Path(repo_dir), Path(out_dir)
    git = _Git(repo)
    if not (repo / ".git").exists():
        raise ReleaseError(f"{repo}: not a model repository (no .git)")
    commit = git.ref(revision)
    if commit is None:
        names = ", ".join(r["name"] for r in list_revisions(repo)) or "none"
        raise ReleaseError(f"{repo}: no revision {revision!r} (revisions: {names}; and main)")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out}: exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
        with subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:  # streamed: weights never sit in memory whole
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmp)
            err = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.returncode:
            raise ReleaseError(f"{repo}: git archive {revision} failed: {err.splitlines()[-1] if err else proc.returncode}")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- the run -------------------------------------------------------------------------------------------
def _read_extra(ckpt: Path) -> dict[str, Any]:
    path = ckpt / EXTRA_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReleaseError(f"{path}: unreadable ({e})") from None
    return data if isinstance(data, dict) else {}


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


def _checkpoints(run: Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """The run's complete checkpoints with step and tokens seen; incomplete ones are reported."""
    if not run.is_dir():
        raise ReleaseError(f"{run}: no such run directory")
    root = run / CHECKPOINTS
    complete = list_checkpoints(run)
    names = {p.name for _, p in complete}
    incomplete = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.name in names:
                continue
            if _CKPT_NAME.match(p.name) and p.is_dir():
                incomplete.append(f"{p.name} (no {COMPLETE} marker: the save was interrupted or is still running)")
            elif p.name.startswith(".step") and ".tmp-" in p.name:
                incomplete.append(f"{p.name} (a temporary left by an interrupted save)")
    for what in incomplete:
        say(f"release: skipping {root}/{what}")
    if not complete:
        hint = f"; incomplete: {', '.join(i.split(' ')[0] for i in incomplete)}" if incomplete else ""
        where = f"no {CHECKPOINTS}/ directory" if not root.is_dir() else f"no complete checkpoint in {root}{hint}"
        raise ReleaseError(f"{run}: {where}; train with checkpoints first (lmforge train CONFIG) and pass the run directory")
    out = []
    for step, path in complete:
        extra = _read_extra(path)
        tokens = extra.get("tokens_seen")
        source = EXTRA_JSON
        if isinstance(tokens, float) and math.isfinite(tokens):
            tokens = int(tokens)
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            tokens = _tokens_from_config(_read_yaml(path / CONFIG), step) if (path / CONFIG).is_file() else None
            source = "config (step × global batch × sequence length)"
            if tokens is None:
                raise ReleaseError(
                    f"{path}: {EXTRA_JSON} has no 'tokens_seen' and {CONFIG} has no trainer.global_batch/seq_len; cannot name the revision"
                )
        out.append({"step": step, "tokens_seen": int(tokens), "path": path, "tokens_from": source, "world_size": extra.get("world_size")})
    return out


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl's records (a torn last line from a killed run is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            records.append(r)
    return records


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


def _as_dtype(dtype: Any):
    if dtype is None or not isinstance(dtype, str):
        return dtype
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ReleaseError(f"dtype must be one of float32, bfloat16, float16; got {dtype!r}")
    return names[dtype]


def _clean_stale(git_dir: Path) -> None:
    for p in git_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _export_revision_commit(git: _Git, ck: Mapping[str, Any], name: str, run_name: str, license: str, final: bool, tmp_root: Path, tokenizer: Any, dtype: Any) -> str:
    from lmforge import __version__
    from lmforge.release import export_hf, load_pretrained

    try:
        model, tok = load_pretrained(ck["path"])
    except CheckpointError as e:
        raise ReleaseError(f"{ck['path']}: cannot load the checkpoint ({e})") from None
    tok = tokenizer or tok
    if tok is None:
        raise ReleaseError(f"{ck['path']}: holds no tokenizer.json; pass tokenizer= (--tokenizer PATH) to release the run")
    work = Path(tempfile.mkdtemp(dir=tmp_root, prefix="rev-"))
    out = export_hf(model, tok, work / "model", dtype=dtype)
    del model
    atomic_write_text(out / "README.md", revision_card(name=run_name, revision=name, step=ck["step"], tokens_seen=ck["tokens_seen"], license=license, final=final))
    info = {"revision": name, "step": ck["step"], "tokens_seen": ck["tokens_seen"], "checkpoint": ck["path"].name, "lmforge_version": __version__}
    atomic_write_text(out / REVISION_JSON, json.dumps(info, indent=1) + "\n")
    msg = f"{name}: {run_name} at step {ck['step']} ({ck['tokens_seen']:,} tokens seen)\n\nExported from {ck['path'].name} by lmforge {__version__}."
    commit = _commit_dir(git, out, work / "index", msg)
    shutil.rmtree(work, ignore_errors=True)
    return commit


def _main_extras(
    stage: Path, run: Path, final_ckpt: Path, eval_dir: Path | None, manifest_data: Any, manifest_path: Path | None, license: str
) -> dict[str, str]:
    """Write the release files of ``main`` under ``stage``; returns their relative paths by role."""
    files: dict[str, str] = {}
    (stage / "training").mkdir(parents=True)
    cfg = run / CONFIG if (run / CONFIG).is_file() else final_ckpt / CONFIG
    if cfg.is_file():
        shutil.copyfile(cfg, stage / "training" / CONFIG)
        files["config"] = f"training/{CONFIG}"
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
    if manifest_data is not None:
        (stage / "data").mkdir()
        clean = manifest_data  # (redacted when it was loaded)
        if manifest_path is not None and clean == _load_manifest(manifest_path)[0]:
            shutil.copyfile(manifest_path, stage / "data" / manifest_path.name)
            files["manifest"] = f"data/{manifest_path.name}"
        elif manifest_path is not None:
            text = json.dumps(clean, indent=1, ensure_ascii=False) + "\n" if manifest_path.suffix == ".json" else yaml.safe_dump(clean, sort_keys=False)
            atomic_write_text(stage / "data" / manifest_path.name, text)
            files["manifest"] = f"data/{manifest_path.name}"
        else:
            atomic_write_text(stage / "data" / "manifest.json", json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
            files["manifest"] = "data/manifest.json"
    atomic_write_text(stage / "LICENSE", license_text(license))
    files["license"] = "LICENSE"
    return files


def _sync_checkout(git: _Git, old: str | None, new: str, say: Callable[[str], None]) -> None:
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


def _default_reproduce(run_dir: Any, repo_dir: Any, eval_dir: Any, manifest: Any, train_cfg: Mapping[str, Any], push: str | None) -> str:
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

    Returns ``{"repo", "revisions" (all, by step), "created", "skipped", "main": {"revision",
    "commit", "updated"}, "card", "pushed"}``.
    """
    say: Callable[[str], None] = (lambda m: print(m, flush=True)) if progress else (lambda m: None)
    t0 = time.perf_counter()
    run, repo = Path(run_dir), Path(repo_dir)
    if token_unit != "auto" and token_unit.upper() not in TOKEN_UNITS:
        raise ReleaseError(f"token_unit must be 'auto', 'B', 'M' or 'K'; got {token_unit!r}")
    ckpts = _checkpoints(run, say)
    unit = auto_token_unit(ckpts[-1]["tokens_seen"]) if token_unit == "auto" else token_unit.upper()
    manifest_data, manifest_path = _load_manifest(manifest)
    manifest_data = redact_secrets(manifest_data)  # a manifest may hold credentials (an index URL's): never released
    eval_path = Path(eval_dir) if eval_dir is not None else None
    dtype = _as_dtype(dtype)
    tok = _load_tokenizer(tokenizer)
    train_cfg = _read_yaml(run / CONFIG) if (run / CONFIG).is_file() else _read_yaml(ckpts[-1]["path"] / CONFIG)
    run_section = train_cfg.get("run") if isinstance(train_cfg.get("run"), Mapping) else {}
    run_name = name or run_section.get("name") or run.resolve().name

    git = _open_repo(repo)
    git_dir = git.git_dir
    with lock_output(git_dir, f"lmforge release {run}"):  # one release at a time writes a repository
        _clean_stale(git_dir)  # scratch of a killed release (we hold the lock: nobody else's)
        return _release_locked(git, run, repo, ckpts=ckpts, unit=unit, manifest=manifest, manifest_data=manifest_data,
                               manifest_path=manifest_path, eval_dir=eval_dir, eval_path=eval_path, dtype=dtype, tok=tok,
                               train_cfg=train_cfg, run_name=run_name, license=license, push=push, private=private,
                               datasets=datasets, reproduce=reproduce, say=say, t0=t0, run_dir=run_dir, repo_dir=repo_dir,
                               progress=progress, force=force)


def _release_locked(git, run, repo, *, ckpts, unit, manifest, manifest_data, manifest_path, eval_dir, eval_path, dtype, tok, train_cfg,
                    run_name, license, push, private, datasets, reproduce, say, t0, run_dir, repo_dir, progress, force) -> dict[str, Any]:
    git_dir = git.git_dir
    existing = {r["step"]: r["name"] for r in list_revisions(repo)}
    created, skipped, revisions = [], [], []
    tmp_root = Path(tempfile.mkdtemp(dir=git_dir, prefix=_TMP_PREFIX))
    try:
        for i, ck in enumerate(ckpts):
            final = i == len(ckpts) - 1
            if ck["step"] in existing:
                rname = existing[ck["step"]]
                skipped.append(rname)
                say(f"release: {rname} exists, skipped")
            else:
                rname = revision_name(ck["step"], ck["tokens_seen"], unit)
                t1 = time.perf_counter()
                commit = _export_revision_commit(git, ck, rname, run_name, license, final, tmp_root, tok, dtype)
                git("update-ref", f"refs/heads/{rname}", commit, _NEW)  # fails if the branch appeared meanwhile
                crash_point(f"after branch {rname}")
                created.append(rname)
                say(f"release: {rname} <- {ck['path']} ({time.perf_counter() - t1:.1f}s)")
            revisions.append({"name": rname, "step": ck["step"], "tokens_seen": ck["tokens_seen"]})
        final_rev = revisions[-1]["name"]
        revisions = _all_revisions(git, revisions)  # + branches of checkpoints the run no longer has (pruned)

        # main: the final revision's tree + the release files
        stage = tmp_root / "main"
        stage.mkdir()
        files = _main_extras(stage, run, ckpts[-1]["path"], eval_path, manifest_data, manifest_path, license)
        atomic_write_text(stage / REVISIONS_JSON, json.dumps({"main": final_rev, "revisions": revisions}, indent=1) + "\n")
        cfg_json = json.loads(git("show", f"refs/heads/{final_rev}:config.json"))
        model_cfg = _model_config(git, final_rev)
        params = _count_params(model_cfg)
        eval_summary = None
        if "eval_summary" in files:
            try:
                eval_summary = json.loads((stage / files["eval_summary"]).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ReleaseError(f"{eval_path}/summary.json: not valid JSON ({e})") from None
        card = model_card(
            name=run_name,
            model=model_cfg,
            params=params[0],
            non_embedding_params=params[1],
            dtype=cfg_json.get("torch_dtype"),
            revisions=revisions,
            final_revision=final_rev,
            train_config=train_cfg,
            metrics=_read_metrics(run / METRICS),
            world_size=ckpts[-1].get("world_size"),
            eval_markdown=(stage / files["eval_table"]).read_text(encoding="utf-8") if "eval_table" in files else None,
            eval_summary=eval_summary,
            manifest=manifest_data,
            files=files,
            license=license,
            datasets=datasets,
            hub_repo=push,
            reproduce=reproduce or _default_reproduce(run_dir, repo_dir, eval_dir, manifest, train_cfg, push),
        )
        atomic_write_text(stage / "README.md", card)
        index = tmp_root / "main.index"
        git("read-tree", f"refs/heads/{final_rev}", index=index)
        git("add", "--force", "--", *sorted(p.name for p in stage.iterdir()), index=index, work_tree=stage)
        tree = git("write-tree", index=index)
        old = git.ref("refs/heads/main")
        updated = old is None or git("rev-parse", f"{old}^{{tree}}") != tree
        main_commit = old
        if updated:
            msg = f"release {final_rev}: {run_name}, {len(revisions)} revision(s)"
            main_commit = git("commit-tree", tree, "-m", msg, *(["-p", old] if old else []))
            git("update-ref", "refs/heads/main", main_commit, old or _NEW)
            crash_point("after branch main")
            _sync_checkout(git, old, main_commit, say)
            say(f"release: main <- {final_rev} + model card and release files")
        else:
            say("release: main is up to date")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    pushed = None
    if push:
        pushed = push_to_hub(repo, push, private=private, progress=progress, force=force)
    say(
        f"release: {repo}: {len(revisions)} revision(s) ({len(created)} new), main = {final_rev} "
        f"({time.perf_counter() - t0:.1f}s). Load: transformers.pipeline('text-generation', model='{repo}') "
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


def _all_revisions(git: _Git, from_run: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _model_config(git: _Git, revision: str):
    from lmforge.models.olmo import ModelConfig

    doc = yaml.safe_load(git("show", f"refs/heads/{revision}:lmforge.yaml")) or {}
    return ModelConfig.from_dict(doc.get("model", {}), _prefix="model.")


def _count_params(cfg) -> tuple[int, int]:
    from lmforge.models.olmo import OLMo

    m = OLMo(cfg, device="meta")
    return m.num_params(), m.num_params(non_embedding=True)


# --- the Hub -------------------------------------------------------------------------------------------
# Files a release of lmforge puts on main (and on revision branches), and the Hub's own .gitattributes.
_RELEASE_FILE = re.compile(
    r"^(\.gitattributes|README\.md|LICENSE|revisions?\.json|config\.json|generation_config\.json|lmforge\.yaml"
    r"|model\.safetensors|model\.safetensors\.index\.json|model-\d{5}-of-\d{5}\.safetensors"
    r"|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|chat_template\.jinja"
    r"|(training|eval|data)/[^/]+)$"
)
_MAX_REVISIONS_JSON = 16 << 20  # bytes of a remote revisions.json read at most


def check_push_target(
    remote_files: Sequence[str] | None,
    remote_revisions_json: str | None,
    local_revisions: Sequence[str],
    force: bool,
    *,
    repo_id: str = "the Hub repository",
    local_files: Sequence[str] = (),
) -> None:
    """Decide whether :func:`push_to_hub` may replace what the Hub repository ``repo_id`` holds on main
    (every upload deletes the files the release does not have); raise a ReleaseError if not.

    ``remote_files``: the files of the remote main, or None when the repository does not exist;
    ``remote_revisions_json``: the text of its revisions.json (None when it has none);
    ``local_revisions``: the revision branches of the local repository; ``local_files``: the files of
    the local main (they may be replaced whatever they are). Allowed without ``force``: a new or empty
    repository (only the Hub's .gitattributes), or an lmforge release of this repository: a
    revisions.json whose revisions the local repository all has, and no files but those a release
    writes. Anything else, e.g. an unrelated model, needs ``force``.
    """
    if force or remote_files is None:
        return
    present = sorted(f for f in remote_files if f != ".gitattributes")
    if not present:
        return
    again = "pass --force (force=True) to replace them anyway, or push to a new repository"
    if remote_revisions_json is None or REVISIONS_JSON not in present:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise ReleaseError(
            f"{repo_id} exists and its main holds {len(present)} file(s) ({shown}) but no {REVISIONS_JSON}: it is not an "
            f"lmforge release, and pushing would replace its files; {again}"
        )
    try:
        doc = json.loads(remote_revisions_json)
        remote_revs = [r["name"] for r in doc["revisions"]]
        if not all(isinstance(r, str) for r in remote_revs):
            raise TypeError("revision names must be strings")
    except (ValueError, KeyError, TypeError) as e:
        raise ReleaseError(
            f"{repo_id}: its {REVISIONS_JSON} is not an lmforge release's ({type(e).__name__}: {str(e)[:80]}); {again}"
        ) from None
    foreign = [r for r in remote_revs if r not in set(local_revisions)]
    if foreign:
        raise ReleaseError(
            f"{repo_id} is the release of another repository: its {REVISIONS_JSON} lists revision(s) "
            f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''} that this repository does not have; {again}"
        )
    unknown = [f for f in present if not _RELEASE_FILE.match(f) and f not in set(local_files)]
    if unknown:
        raise ReleaseError(
            f"{repo_id}: main holds file(s) lmforge did not write ({', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}), which pushing would delete; {again}"
        )


def push_to_hub(
    repo_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Upload every revision branch and ``main`` of a model repository to the Hugging Face Hub.

    Needs a token (``hf auth login``, or ``HF_TOKEN``). Creates ``repo_id`` when missing (``private``),
    then for each revision, oldest first: creates the Hub branch and uploads the revision's files
    to it, deleting whatever else the branch holds (a new Hub branch starts as a copy of main);
    ``main`` last. Every branch is uploaded on every push: files the Hub already has are not sent
    again, and a branch with nothing new gets no commit, so an interrupted push is finished by
    pushing again. An existing repository that is not an lmforge release of this repository is left
    alone unless ``force`` (see :func:`check_push_target`)."""
    import huggingface_hub as hf

    say: Callable[[str], None] = (lambda m: print(m, flush=True)) if progress else (lambda m: None)
    token = token or hf.get_token()
    if not token:
        raise ReleaseError("--push: no Hugging Face token; log in with `hf auth login` (or set HF_TOKEN) and push again")
    repo = Path(repo_dir)
    revisions = [r["name"] for r in list_revisions(repo)]
    if _Git(repo).ref("refs/heads/main") is None:
        raise ReleaseError(f"{repo}: no main branch; release the run first")
    api = hf.HfApi(token=token)
    if not force:
        check_push_target(*_remote_main(api, repo_id), revisions, force, repo_id=repo_id, local_files=_main_files(repo))
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    remote = {b.name for b in api.list_repo_refs(repo_id).branches}
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + "push-"))
    done = []
    try:
        for branch in revisions + ["main"]:
            folder = export_revision(repo, branch, tmp / branch)
            if branch != "main" and branch not in remote:
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                revision=branch,
                commit_message=f"lmforge release: {branch}",
                delete_patterns="*",
            )
            shutil.rmtree(folder, ignore_errors=True)
            done.append(branch)
            say(f"release: pushed {branch} -> {repo_id}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"repo_id": repo_id, "url": str(url), "branches": done}


def _main_files(repo: Path) -> list[str]:
    out = _Git(repo)("ls-tree", "-r", "-z", "--name-only", "refs/heads/main") or ""
    return [f for f in out.split("\0") if f]


def _remote_main(api: Any, repo_id: str) -> tuple[list[str] | None, str | None]:
    """The files on main of the Hub repository ``repo_id`` (None when it does not exist) and the
    text of its revisions.json (None when it has none): the inputs of :func:`check_push_target`.

    These network calls are not exercised by the tests (the Hub is unreachable from them); the
    decision they feed, check_push_target, is tested with real inputs."""
    from huggingface_hub.errors import RevisionNotFoundError

    if not api.repo_exists(repo_id, repo_type="model"):
        return None, None
    try:
        files = list(api.list_repo_files(repo_id, revision="main", repo_type="model"))
    except RevisionNotFoundError:  # a repository without a main branch yet
        return [], None
    if REVISIONS_JSON not in files:
        return files, None
    with tempfile.TemporaryDirectory(prefix=_TMP_PREFIX + "check-") as tmp:
        path = api.hf_hub_download(repo_id, REVISIONS_JSON, revision="main", repo_type="model", local_dir=tmp)
        with open(path, "rb") as f:
            text = f.read(_MAX_REVISIONS_JSON).decode("utf-8", "replace")
    return files, text
