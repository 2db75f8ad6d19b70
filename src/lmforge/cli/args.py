"""Command-line arguments generated from config dataclasses: one source for flags, defaults,
choices and help.

    add_config_arguments(parser, DedupConfig)          # --documents ... --mode {documents,...} ...
    cfg = config_from_args(DedupConfig, args)           # validated like a YAML config

Each field of the config becomes one argument, named ``--field-name`` unless its
:func:`lmforge.config.option` says otherwise:

* ``bool``: ``--flag`` sets True (default False), or ``--no-flag`` sets False (default True)
* ``Literal[...]``: ``choices``; ``int``/``float``/``str`` (optional or not): typed values
* ``list[X]``: ``nargs="+"`` (``append=True``: a repeatable flag); a field without a default: required
* ``positional=True``: a positional argument; ``cli=False``: not on the command line

The help text ends with the default, so what ``--help`` says is what the library does.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from lmforge.config import Config

__all__ = ["add_config_arguments", "config_from_args", "config_fields"]


def _meta(f: dataclasses.Field) -> dict[str, Any]:
    return dict(f.metadata.get("lmforge", {}))


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def config_fields(cls: type[Config]) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are on the command line."""
    return [f for f in dataclasses.fields(cls) if f.init and _meta(f).get("cli", True)]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _scalar(tp: Any):
    if tp in (int, float, str):
        return tp
    if get_origin(tp) is Literal:
        values = get_args(tp)
        kinds = {type(v) for v in values}
        return kinds.pop() if len(kinds) == 1 else str
    return str


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[Config], *, exclude: typing.Collection[str] = ()) -> None:
    """One argument per command-line field of ``cls`` (see the module docstring)."""
    hints = get_type_hints(cls)
    for f in config_fields(cls):
        if f.name in exclude:
            continue
        meta = _meta(f)
        tp, optional = _strip_optional(hints[f.name])
        default = _default(f)
        required = default is dataclasses.MISSING
        text = meta.get("help") or ""
        kw: dict[str, Any] = {}
        origin = get_origin(tp)
        if tp is bool:
            flag = meta.get("flag") or (f"--no-{f.name.replace('_', '-')}" if default is True else f"--{f.name.replace('_', '-')}")
            action = "store_false" if flag.startswith("--no-") else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=text or None)
            continue
        if origin in (list, tuple):
            (inner,) = get_args(tp) or (str,)
            kw["type"] = _scalar(inner)
            if meta.get("append"):
                kw["action"] = "append"
                kw["default"] = None if required else (list(default) or None)
            else:
                kw["nargs"] = "+" if required or not meta.get("positional") else "*"
                if not required:
                    kw["default"] = default
        else:
            kw["type"] = _scalar(tp)
            if get_origin(tp) is Literal:
                kw["choices"] = list(get_args(tp))
            if not required:
                kw["default"] = default
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if not required and default not in (None, [], ()) and not meta.get("append"):
            text = f"{text} (default: {default})" if text else f"(default: {default})"
        kw["help"] = text.replace("%", "%%") or None
        if meta.get("positional"):
            if not required and "nargs" not in kw:
                kw["nargs"] = "?"
            parser.add_argument(f.name, **kw)
        else:
            flag = meta.get("flag") or f"--{f.name.replace('_', '-')}"
            if required:
                kw["required"] = True
            parser.add_argument(flag, dest=f.name, **kw)


def config_from_args(cls: type[Config], args: argparse.Namespace, **extra: Any) -> Config:
    """``cls`` from parsed arguments (plus ``extra`` fields), validated as a YAML config would be;
    fields not on the command line keep their defaults."""
    data = {f.name: getattr(args, f.name) for f in config_fields(cls) if hasattr(args, f.name)}
    for f in config_fields(cls):  # an append flag never given: the field's default
        if data.get(f.name) is None and _meta(f).get("append") and _default(f) is not dataclasses.MISSING:
            data[f.name] = _default(f)
    data.update(extra)
    return cls.from_dict(data)
