"""The `lmforge` command line, end to end, and the README's commands."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.checkpoint import save_model
from lmforge.cli import main
from tests.conftest import corpus_lines, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def run(*args, input=None, cwd=None):
    """Run the real console entry point in a subprocess (as a user would)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, input=input, env=env, cwd=cwd, timeout=300)


def test_model_info_prints_official_counts(capsys):
    assert main(["model", "info", "olmo2-1b"]) == 0
    out = capsys.readouterr().out
    assert "1,484,916,736" in out and "100352" in out and "2048 / 16 / 16" in out
    assert main(["model", "info", "olmo2-20m", "--model.n_kv_heads=2", "--model.vocab_size=1000"]) == 0
    out = capsys.readouterr().out
    assert "2 (grouped-query)" in out and "1000 (1024" in out
    assert main(["model", "list"]) == 0
    assert "olmo2-13b" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["model", "info", "olmo2-1bb"], "unknown model preset 'olmo2-1bb'; did you mean 'olmo2-1b'?"),
        (["model", "info", "olmo2-1b", "--model.d_modle=8"], "unknown config key 'model.d_modle'; did you mean 'model.d_model'?"),
        (["model", "info", "olmo2-1b", "--model.n_layers=two"], "config key 'model.n_layers' must be an integer, got 'two'"),
        (["model", "info", "olmo2-1b", "--optim.lr=1"], "unknown config section 'optim'"),
        (["generate", "--model", "does/not/exist", "--prompt", "x"], "does/not/exist"),
    ],
)
def test_user_errors_are_one_line(capsys, args, message):
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_tokenizer_train_export_import_generate(tmp_path, capsys, monkeypatch):
    """The whole CLI loop; the first command through the real entry point in a subprocess, the rest
    through ``main`` in this process (the same code, without a start-up each)."""
    import io

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_lines(300)), encoding="utf-8")
    r = run("tokenizer", "train", str(corpus), "--vocab-size", "400", "--out", str(tmp_path / "tok" / "tokenizer.json"))
    assert r.returncode == 0, r.stderr
    assert "vocab_size" in r.stdout and "<|endoftext|>" in r.stdout

    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.from_file(tmp_path / "tok" / "tokenizer.json")
    torch.manual_seed(0)
    save_model(tmp_path / "ckpt", tiny_config(vocab_size=tok.vocab_size).build(), tokenizer=tok)

    def cli(*args, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = cli("export", "--model", tmp_path / "ckpt", "--out", tmp_path / "hf")
    assert code == 0, err
    assert (tmp_path / "hf" / "config.json").is_file()
    code, _, err = cli("export", "--model", tmp_path / "ckpt", "--out", tmp_path / "hf")
    assert code == 2 and "overwrite" in err and err.count("\n") == 1

    code, _, err = cli("import", "--model", tmp_path / "hf", "--out", tmp_path / "back")
    assert code == 0, err
    assert (tmp_path / "back" / "model.safetensors").is_file() and (tmp_path / "back" / "config.yaml").is_file()

    greedy = ["--max-new-tokens", "6", "--no-stream"]
    ca, a, ea = cli("generate", "--model", tmp_path / "ckpt", "--prompt", "the model", *greedy)
    cb, b, eb = cli("generate", "--model", tmp_path / "hf", "--prompt", "the model", *greedy)
    assert ca == 0 and cb == 0, ea + eb
    assert a == b and a.startswith("the model")

    # interactive mode reads prompts from stdin until EOF
    code, out, err = cli("generate", "--model", tmp_path / "hf", "--max-new-tokens", "4", stdin="river\ncity\n")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n# 1\..*?\n(.*?)\n# 2\..*?\n(.*?)\n```", readme, re.S)
    assert block, "README must show the two set-up commands"
    main_job, tests = block.group(1).strip(), block.group(2).strip()
    assert main_job.endswith("lmforge quickstart")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "CI must run the README's test command word for word"


# --- flags generated from configs ------------------------------------------------------------------
def _subparser(*path: str):
    import argparse

    from lmforge.cli import build_parser

    p = build_parser()
    for name in path:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p


@pytest.mark.parametrize("path, config", [
    (("data", "dedup"), "lmforge.corpus.dedup:DedupConfig"),
    (("data", "tokenize"), "lmforge.corpus.tokenize:TokenizeConfig"),
    (("generate",), "lmforge.generate.config:GenerationConfig"),
])  # fmt: skip
def test_stage_flags_are_their_configs_fields(path, config):
    """Every command-line field of the config is a flag with the config's default and choices, so a
    default or a choice list exists once (eval and release are checked in their own test files)."""
    import dataclasses
    import importlib
    from typing import Literal, get_args, get_origin, get_type_hints

    from lmforge.cli.args import config_fields

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    actions = {a.dest: a for a in _subparser(*path)._actions}
    hints = get_type_hints(cls)
    sampling_knobs = {"temperature", "top_k", "top_p"}  # generate: "given" turns sampling on (None until given)
    for f in config_fields(cls):
        assert f.name in actions, f"{' '.join(path)} has no flag for {cls.__name__}.{f.name}"
        a = actions[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if f.name not in sampling_knobs:
            assert a.default == (default or None if isinstance(default, list) else default), (f.name, a.default, default)
        tp = hints[f.name]
        literal = next((get_args(t) for t in (tp, *get_args(tp)) if get_origin(t) is Literal), None)
        if literal:
            assert list(a.choices) == list(literal), f.name
        assert f.metadata["lmforge"]["help"] in (a.help or "").replace("%%", "%"), f.name


def test_the_command_line_starts_without_torch():
    """Data commands (run once per task by a scheduler) must not pay for torch's import (~0.7 s)."""
    import subprocess
    import sys

    code = "import sys; from lmforge.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
