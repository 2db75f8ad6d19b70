"""``lmforge release``'s flags are ReleaseConfig's fields: names, defaults, choices and help as the
command has always had them, and the config a command line parses to is what ``release`` gets."""

import argparse
import dataclasses

import pytest

from lmforge.cli import build_parser
from lmforge.cli.args import config_from_args
from lmforge.release.config import ReleaseConfig

# The command as it was before its flags came from the config: flag -> (dest, default, choices, action kind).
FLAGS = {
    "run": ("run", None, None, "store"),
    "--repo": ("repo", None, None, "store"),
    "--eval": ("eval", None, None, "store"),
    "--manifest": ("manifest", None, None, "store"),
    "--license": ("license", "apache-2.0", None, "store"),
    "--dtype": ("dtype", None, None, "store"),
    "--token-unit": ("token_unit", "auto", ["auto", "B", "M", "K"], "store"),
    "--tokenizer": ("tokenizer", None, None, "store"),
    "--name": ("name", None, None, "store"),
    "--push": ("push", None, None, "store"),
    "--public": ("public", False, None, "store_true"),
    "--force": ("force", False, None, "store_true"),
}


def _release_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["release"]


def _actions() -> dict[str, argparse.Action]:
    return {(a.option_strings[0] if a.option_strings else a.dest): a for a in _release_parser()._actions if a.dest != "help"}


def _kind(a: argparse.Action) -> str:
    return "store_true" if isinstance(a, argparse._StoreTrueAction) else "store"


def test_flags_are_the_commands_flags():
    actions = _actions()
    assert list(actions) == list(FLAGS)  # same flags, same order (as --help lists them)
    for flag, (dest, default, choices, kind) in FLAGS.items():
        a = actions[flag]
        assert (a.dest, a.default, a.choices, _kind(a)) == (dest, default, choices, kind), flag
    assert actions["run"].required and actions["--repo"].required
    assert actions["--push"].metavar == "REPO_ID"


def test_flags_are_the_configs_fields():
    actions = _actions()
    fields = {f.name: f for f in dataclasses.fields(ReleaseConfig)}
    assert [a.dest for a in actions.values()] == list(fields)
    for a in actions.values():
        f = fields[a.dest]
        if f.default is not dataclasses.MISSING:
            assert a.default == f.default, a.dest
        assert (a.help or "").startswith(f.metadata["lmforge"]["help"]), a.dest
    assert actions["--token-unit"].choices == ["auto", "B", "M", "K"]


def test_command_line_to_config():
    args = build_parser().parse_args(["release", "runs/x", "--repo", "out"])
    assert config_from_args(ReleaseConfig, args) == ReleaseConfig(run="runs/x", repo="out")
    argv = ["release", "runs/x", "--repo", "out", "--eval", "ev", "--manifest", "m.json", "--license", "mit", "--dtype", "bf16",
            "--token-unit", "B", "--tokenizer", "tok.json", "--name", "n", "--push", "me/x", "--public", "--force"]
    cfg = config_from_args(ReleaseConfig, build_parser().parse_args(argv))
    assert cfg == ReleaseConfig(run="runs/x", repo="out", eval="ev", manifest="m.json", license="mit", dtype="bf16", token_unit="B",
                                tokenizer="tok.json", name="n", push="me/x", public=True, force=True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["release", "runs/x", "--repo", "out", "--token-unit", "T"])


def test_release_passes_the_config_to_release_run(monkeypatch):
    import lmforge.release.revisions as revisions

    seen = {}
    monkeypatch.setattr(revisions, "release_run", lambda *a, **kw: seen.update(args=a, kw=kw) or "done")
    cfg = ReleaseConfig(run="r", repo="o", eval="e", manifest="m", license="mit", dtype="bf16", token_unit="K", tokenizer="t",
                        name="n", push="me/x", public=True, force=True)
    assert revisions.release(cfg, progress=False) == "done"
    assert seen["args"] == ("r", "o")
    assert seen["kw"] == dict(eval_dir="e", manifest="m", license="mit", dtype="bf16", token_unit="K", push="me/x", private=False,
                              tokenizer="t", name="n", datasets=None, reproduce=None, progress=False, force=True)


def test_an_unknown_dtype_is_the_clis_one_line_error(tmp_path, capsys):
    from lmforge.cli import main

    assert main(["release", str(tmp_path), "--repo", str(tmp_path / "repo"), "--dtype", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--dtype must be one of" in err and err.count("\n") == 1 and not (tmp_path / "repo").exists()
