"""Uploading a model repository to the Hugging Face Hub: every revision branch, then ``main``.

    push_to_hub("runs/quickstart/release", "me/tiny")   # or lmforge release RUN --repo DIR --push me/tiny

Before anything is uploaded, :func:`check_push_target` decides whether what the Hub repository holds
may be replaced (a new or empty repository, or an earlier push of this release); anything else needs
``force``. The network calls are not exercised by the tests (the Hub is unreachable from them); the
decision is tested with real inputs and the calls with a stand-in for ``HfApi``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from lmforge.release.errors import ReleaseError
from lmforge.release.git import TMP_PREFIX, Git, export_revision, list_revisions

__all__ = ["REVISIONS_JSON", "check_push_target", "push_to_hub"]

REVISIONS_JSON = "revisions.json"
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
    if Git(repo).ref("refs/heads/main") is None:
        raise ReleaseError(f"{repo}: no main branch; release the run first")
    api = hf.HfApi(token=token)
    if not force:
        check_push_target(*_remote_main(api, repo_id), revisions, force, repo_id=repo_id, local_files=_main_files(repo))
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    remote = {b.name for b in api.list_repo_refs(repo_id).branches}
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "push-"))
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
    out = Git(repo)("ls-tree", "-r", "-z", "--name-only", "refs/heads/main") or ""
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
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX + "check-") as tmp:
        path = api.hf_hub_download(repo_id, REVISIONS_JSON, revision="main", repo_type="model", local_dir=tmp)
        with open(path, "rb") as f:
            text = f.read(_MAX_REVISIONS_JSON).decode("utf-8", "replace")
    return files, text
