"""What every quickstart stage shares: the output layout, the run context, names and formatting."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lmforge.config import ConfigError
from lmforge.formatting import format_bytes, format_count, format_seconds
from lmforge.quickstart.config import QuickstartConfig
from lmforge.stages import StageRunner

__all__ = ["Context", "Paths", "QuickstartError", "STAGES", "LAYOUT"]

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

STAGES = ("fetch", "tag", "dedup", "mix", "tokenizer", "tokenize", "train", "eval", "release", "generate")

LAYOUT = {
    "corpus": "corpus/ (documents/, validation/, heldout/, attributes/, manifest.json)",
    "mixed": "mixed/<group>/documents/ (+ mix_summary.json)",
    "tokenizer": "tokenizer/tokenizer.json",
    "tokens": "tokens/train/ (+ tokenize_summary.json)",
    "train": "train/ (config.yaml, metrics.jsonl, curves.png, quickstart_plan.json, checkpoints/stepNNNNNNN/)",
    "eval": "eval/ (summary.md/json, bpb_vs_tokens.png, heldout/ sample, final/ downstream)",
    "release": "release/ (git: one branch per checkpoint, main = final + model card)",
    "samples": "samples.json",
    "stages": "stages/NN-name.json",
    "summary": "summary.json",
}

TAGGERS = ("gopher_quality", "gopher_repetition", "pii", "code")
EXPERIMENT = "quality"  # the taggers' attribute directory
DUP_DOCS, DUP_PARAS = "bff_duplicate_document", "bff_duplicate_paragraph_spans"
CODE_EXTRACTORS = ("python", "code")  # a domain whose sources all use these goes through the code rules


class QuickstartError(ConfigError):
    """The quickstart cannot go on (one line: what is wrong and what to do)."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where each stage writes, under ``out`` (see :data:`LAYOUT`)."""

    out: Path

    @property
    def corpus(self) -> Path:
        return self.out / "corpus"

    @property
    def mixed(self) -> Path:
        return self.out / "mixed"

    @property
    def tokenizer(self) -> Path:
        return self.out / "tokenizer" / "tokenizer.json"

    @property
    def tokens(self) -> Path:
        return self.out / "tokens" / "train"

    @property
    def run(self) -> Path:
        return self.out / "train"

    @property
    def plan(self) -> Path:
        return self.run / "quickstart_plan.json"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def release(self) -> Path:
        return self.out / "release"

    @property
    def samples(self) -> Path:
        return self.out / "samples.json"

    def mixed_shards(self) -> list[Path]:
        return sorted(self.mixed.glob("*/documents"))

    def rel(self, path: Path) -> str:
        """``path`` relative to the output directory, for the log."""
        try:
            return str(Path(path).relative_to(self.out))
        except ValueError:
            return str(path)


@dataclasses.dataclass
class Context:
    """One quickstart run: its settings, where it writes, how it logs, and the stage runner."""

    out: Path
    cfg: QuickstartConfig
    recipe: str | os.PathLike | dict
    workers: int
    tiny: bool
    progress: bool
    command: list[str]
    paths: Paths = dataclasses.field(init=False)
    runner: StageRunner = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.paths = Paths(self.out)
        self.runner = StageRunner(self.out / "stages", STAGES, verbose=self.progress)

    @property
    def name(self) -> str:
        """The run's and the released model's name."""
        return "lmforge-quickstart" + ("-tiny" if self.tiny else "")

    def say(self, msg: str) -> None:
        self.runner.say(msg)


def mb(n: float) -> str:
    """0.2 MB, 50.0 KB."""
    return format_bytes(n, megabytes=True)


def count(n: float) -> str:
    """1.23M (3 significant digits; no unit past B)."""
    return format_count(n, units="KMB")


fmt_s = format_seconds  # 12.3s, 4m05s


def summary_fields(cls: type, data: Any) -> dict[str, Any]:
    """The fields of dataclass ``cls`` in a marker's summary ``data`` (others are ignored: a later
    version may record more); a missing required field raises TypeError."""
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} must be read from a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}
