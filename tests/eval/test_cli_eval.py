"""``lmforge eval`` subcommands: their flags are the configs' fields (names, defaults, choices, help),
they are the flags the commands always had, and user errors are one line with exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from lmforge.cli import build_parser, main
from lmforge.cli.args import config_fields, config_from_args
from lmforge.cli.eval import SUBCOMMANDS
from lmforge.eval.config import CheckpointsEvalConfig, DownstreamEvalConfig, PerplexityEvalConfig, pmi_setting
from lmforge.eval.registry import FORMULATIONS


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    ev = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    return next(a for a in ev._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def _actions(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(name)._actions if a.dest != "help"}


def _literal(tp):
    for t in (tp, *get_args(tp)):
        if get_origin(t) is Literal:
            return list(get_args(t))
    return None


# Today's flags (and positionals) of each subcommand: option strings, default, choices, nargs, required.
FLAGS = {
    "downstream": {
        "model": ([], None, None, None, True),
        "tasks": (["--tasks"], None, None, None, True),
        "formulation": (["--formulation"], "rc_0shot", ["rc_0shot", "rc_5shot", "mc_5shot"], None, False),
        "limit": (["--limit"], None, None, None, False),
        "batch_size": (["--batch-size"], 32, None, None, False),
        "tokenization": (["--tokenization"], "separate", ["separate", "joint"], None, False),
        "out": (["--out"], None, None, None, False),
        "tokenizer": (["--tokenizer"], None, None, None, False),
        "device": (["--device"], None, None, None, False),
        "dtype": (["--dtype"], None, None, None, False),
        "shared_prefix": (["--no-shared-prefix"], True, None, 0, False),
        "pmi": (["--pmi"], "true", ["true", "false", "primary"], None, False),
        "progress": (["--no-progress"], True, None, 0, False),
        "backend": (["--backend"], "lmforge", ["lmforge", "hf", "vllm"], None, False),
        "chat": (["--chat"], False, None, 0, False),
        "samples": (["--samples"], 1, None, None, False),
        "temperature": (["--temperature"], 0.8, None, None, False),
        "top_p": (["--top-p"], 0.95, None, None, False),
        "seed": (["--seed"], 1234, None, None, False),
        "max_gen_toks": (["--max-gen-toks"], None, None, None, False),
        "gen_batch_size": (["--gen-batch-size"], 16, None, None, False),
    },
    "perplexity": {
        "model": ([], None, None, None, True),
        "data": ([], None, None, "+", True),
        "out": (["--out"], None, None, None, True),
        "tokenizer": (["--tokenizer"], None, None, None, False),
        "max_seq_len": (["--max-seq-len"], None, None, None, False),
        "batch_size": (["--batch-size"], 8, None, None, False),
        "max_documents": (["--max-documents"], None, None, None, False),
        "split": (["--split"], "val", ["val", "test"], None, False),
        "device": (["--device"], None, None, None, False),
        "dtype": (["--dtype"], None, None, None, False),
        "progress": (["--no-progress"], True, None, 0, False),
    },
    "checkpoints": {
        "checkpoints": ([], None, None, "+", True),
        "out": (["--out"], None, None, None, True),
        "tasks": (["--tasks"], None, None, None, False),
        "formulation": (["--formulation"], "rc_0shot", ["rc_0shot", "rc_5shot", "mc_5shot"], None, False),
        "limit": (["--limit"], None, None, None, False),
        "data": (["--data"], None, None, "+", False),
        "max_documents": (["--max-documents"], None, None, None, False),
        "batch_size": (["--batch-size"], 16, None, None, False),
        "tokenizer": (["--tokenizer"], None, None, None, False),
        "device": (["--device"], None, None, None, False),
        "dtype": (["--dtype"], None, None, None, False),
        "progress": (["--no-progress"], True, None, 0, False),
    },
}
CONFIGS = {"downstream": DownstreamEvalConfig, "perplexity": PerplexityEvalConfig, "checkpoints": CheckpointsEvalConfig}


@pytest.mark.parametrize("name", list(FLAGS))
def test_flags_are_the_ones_the_commands_always_had(name):
    got = {dest: (a.option_strings, a.default, a.choices, a.nargs, a.required) for dest, a in _actions(name).items()}
    assert got == FLAGS[name]
    assert list(got) == list(FLAGS[name])  # the order --help shows


@pytest.mark.parametrize("name", list(CONFIGS))
def test_flags_are_the_config_fields(name):
    cls = CONFIGS[name]
    assert SUBCOMMANDS[name][0] is cls
    hints = get_type_hints(cls)
    actions = _actions(name)
    assert list(actions) == [f.name for f in config_fields(cls)]
    for f in config_fields(cls):
        a, meta = actions[f.name], f.metadata["lmforge"]
        has_default = f.default is not dataclasses.MISSING
        assert a.required == (not has_default), f.name
        if has_default:
            assert a.default == f.default, f.name
        assert a.choices == _literal(hints[f.name]), f.name
        if meta["help"]:
            assert a.help.startswith(meta["help"].replace("%", "%%")), f.name
        if meta["positional"]:
            assert a.option_strings == []
        else:
            assert a.option_strings == [meta["flag"] or "--" + f.name.replace("_", "-")]


def test_formulations_are_written_once():
    for name in ("downstream", "checkpoints"):
        assert tuple(_actions(name)["formulation"].choices) == FORMULATIONS


def test_parsed_arguments_make_the_config():
    parser = build_parser()
    args = parser.parse_args(["eval", "downstream", "M", "--tasks", "arc_easy", "--limit", "3", "--pmi", "primary", "--no-shared-prefix"])
    cfg = config_from_args(DownstreamEvalConfig, args)
    assert cfg == DownstreamEvalConfig(model="M", tasks="arc_easy", limit=3, pmi="primary", shared_prefix=False)
    assert [pmi_setting(c) for c in ("true", "false", "primary")] == [True, False, "primary"]
    args = parser.parse_args(["eval", "checkpoints", "a", "b", "--out", "o", "--data", "d1", "d2", "--no-progress"])
    cfg = config_from_args(CheckpointsEvalConfig, args)
    assert (cfg.checkpoints, cfg.data, cfg.progress, cfg.batch_size) == (["a", "b"], ["d1", "d2"], False, 16)


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "downstream", "M", "--tasks", "arc_easy", "--limit", "0"], "--limit must be positive, got 0"),
        (["eval", "downstream", "M", "--tasks", "nope"], "unknown task 'nope'"),
        (["eval", "checkpoints", "does/not/exist", "--out", "o", "--data", "."], "does/not/exist: no such checkpoint directory"),
        (["eval", "downstream", "M", "--tasks", "arc_easy", "--x.y=1"], "unknown config section 'x'"),
    ],
)
def test_user_errors_are_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and message in err and "\n" not in err
