"""git plumbing for model repositories: running git, opening (creating) a repository, committing a
directory as a tree without touching the working tree or index, and the revision branches.

Every command runs with the variables that would point git elsewhere removed (``GIT_DIR``, ...) and
with the global settings that would change what is committed overridden (signing, autocrlf, ...).
Commits are made through a private index (``GIT_INDEX_FILE``) with ``--work-tree`` set to the
directory being committed, so the repository's own index and checkout are never used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from lmforge.release.errors import ReleaseError
from lmforge.release.naming import parse_revision
from lmforge.storage import atomic_directory

__all__ = ["NEW", "TMP_PREFIX", "Git", "check_git", "commit_dir", "export_revision", "list_revisions", "open_repo"]

NEW = ""  # update-ref's old value for "the ref must not exist yet"
TMP_PREFIX = "lmforge-release-"  # scratch directories of a release (inside .git) and of a push

# Variables that would point git at another repository, index or tree than the one we name.
_GIT_ENV_DROP = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_CEILING_DIRECTORIES",
)
# Settings a user's global config may carry that would change or block what we commit.
_GIT_OPTS = ("-c", "commit.gpgSign=false", "-c", "core.autocrlf=false", "-c", "core.safecrlf=false", "-c", "core.fileMode=true")
_IDENTITY = ("lmforge release", "lmforge-release@localhost")


class Git:
    """git on one repository, with the user's environment and global settings kept out of it."""

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


def check_git() -> None:
    if shutil.which("git") is None:
        raise ReleaseError("release needs the git command line tool; install git (e.g. apt-get install git)")


def open_repo(repo_dir: Path) -> Git:
    """The git repository at ``repo_dir`` (created, with branch main, when missing or empty)."""
    check_git()
    if repo_dir.exists() and not repo_dir.is_dir():
        raise ReleaseError(f"{repo_dir}: exists and is not a directory")
    if not (repo_dir / ".git").exists():
        if repo_dir.is_dir() and any(repo_dir.iterdir()):
            raise ReleaseError(f"{repo_dir}: not empty and not a git repository; pass a new or empty directory, or a model repository from an earlier release")
        repo_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["git", "init", "-q", "-b", "main", str(repo_dir)], capture_output=True)
        if proc.returncode:
            raise ReleaseError(f"{repo_dir}: git init failed: {proc.stderr.decode(errors='replace').strip()}")
    git = Git(repo_dir)
    if git("rev-parse", "--is-bare-repository") == "true":
        raise ReleaseError(f"{repo_dir}: a bare repository; release into a repository with a working tree (or a new directory)")
    # An identity for the commits, in this repository only (never the user's global config).
    for key, value in zip(("user.name", "user.email"), _IDENTITY):
        if not git("config", key, check=False):
            git("config", "--local", key, value)
    return git


def commit_dir(git: Git, src: Path, index: Path, message: str, parent: str | None = None) -> str:
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
    git = Git(Path(repo_dir))
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
    check_git()
    repo, out = Path(repo_dir), Path(out_dir)
    git = Git(repo)
    if not (repo / ".git").exists():
        raise ReleaseError(f"{repo}: not a model repository (no .git)")
    commit = git.ref(revision)
    if commit is None:
        names = ", ".join(r["name"] for r in list_revisions(repo)) or "none"
        raise ReleaseError(f"{repo}: no revision {revision!r} (revisions: {names}; and main)")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out}: exists and is not empty")
    with atomic_directory(out) as tmp:  # an empty ``out`` is replaced
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
    return out
