"""Shared fixtures: a small real BPE tokenizer trained on generated text, tiny model configs, and
``one_thread`` (modules of tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``).

Tests that must not be skipped where everything is installed (CI) carry ``@pytest.mark.required_in_ci``;
with ``LMFORGE_REQUIRE=required_in_ci`` in the environment (``.ci/run`` sets it) a skip of such a test
is a failure, so a dependency change cannot switch them off unnoticed. ``LMFORGE_REQUIRE`` takes
comma-separated marker names."""

from __future__ import annotations

import os
import random

import pytest

from lmforge.models import ModelConfig

REQUIRE_ENV = "LMFORGE_REQUIRE"

# A Ray started by a test (the Ray executor's tests) binds and connects on 127.0.0.1 only; Ray reads
# this when it is imported, so it is set before any test module imports it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _required_markers(config) -> set[str]:
    return {m.strip() for m in os.environ.get(REQUIRE_ENV, "").split(",") if m.strip()}


def pytest_configure(config):
    registered = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    unknown = _required_markers(config) - registered
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_ENV} names unregistered markers: {', '.join(sorted(unknown))} (registered: {', '.join(sorted(registered))})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test that carries a marker named in ``LMFORGE_REQUIRE`` fails instead."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    required = sorted(m for m in _required_markers(item.config) if item.get_closest_marker(m) is not None)
    if required:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (
            f"{item.nodeid} was skipped ({reason}), but it is marked {', '.join(required)} and "
            f"{REQUIRE_ENV}={os.environ.get(REQUIRE_ENV)} requires it to run: install what it needs (pip install -e '.[dev]')"
        )

_WORDS = (
    "the model reads open data and learns to predict the next token from the context it has seen "
    "tokenizer bytes merge pairs vocabulary training evaluation release checkpoint weights python "
    "science history river mountain city language music number table chair window garden light"
).split()


@pytest.fixture()
def one_thread():
    """Tiny models run fastest on one intra-op thread, and far faster when other test runs share the CPUs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def corpus_lines(n: int = 400, seed: int = 0) -> list[str]:
    """Varied, deterministic text: words, numbers, punctuation, unicode, code-like lines."""
    rng = random.Random(seed)
    extras = ["café", "naïve", "日本語", "Ünïcödé", "emoji 🙂", "x = f(y) + 1", "def f(a, b):", "  indented", "3.14159"]
    lines = []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if i % 5 == 0:
            words.append(rng.choice(extras))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ":", ""]))
    return lines


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory):
    """A real byte-level BPE with OLMo's special tokens, trained once per test run."""
    from lmforge.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("bpe")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines()), encoding="utf-8")
    return train_bpe([str(corpus)], vocab_size=384, out_path=d / "tokenizer.json", show_progress=False)


def tiny_config(arch: str = "olmo2", vocab_size: int = 384, **kw) -> ModelConfig:
    fields = dict(arch=arch, d_model=64, n_layers=2, n_heads=4, mlp_hidden=96, vocab_size=vocab_size, max_seq_len=128)
    fields.update(kw)
    return ModelConfig(**fields)


def run_tokenize(documents, tokenizer, out, *, progress: bool = False, raise_on_error: bool = True, **fields):
    """``lmforge.corpus.tokenize.tokenize`` with a config built from these values (paths become strings,
    as YAML or the command line give them)."""
    from pathlib import Path

    from lmforge.corpus.tokenize import TokenizeConfig, tokenize

    docs = [str(d) for d in (documents if isinstance(documents, (list, tuple)) else [documents])]
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items()}
    cfg = TokenizeConfig(documents=docs, tokenizer=str(tokenizer), out=str(out), **fields)
    return tokenize(cfg, progress=progress, raise_on_error=raise_on_error)
