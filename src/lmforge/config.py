"""Typed configuration: dataclasses with ``build()``, YAML in/out, dotted overrides, validation.

Every component of lmforge is described by a small ``@dataclass`` that subclasses :class:`Config`.
A config is plain data: it can be written to YAML, read back, and overridden from the command line
with dotted keys::

    cfg = ModelConfig.from_yaml("configs/model.yaml", overrides=["d_model=256", "n_layers=4"])
    cfg.save("runs/x/config.yaml")     # atomic; the resolved config lives beside every output
    model = cfg.build()

Validation is strict on purpose. An unknown key or a value of the wrong type raises
:class:`ConfigError` with one line that names the offending key and, for unknown keys, the closest
valid one (``unknown config key 'model.d_modle'; did you mean 'model.d_model'?``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lmforge.storage import atomic_write_bytes, atomic_write_text, temp_path_beside  # noqa: F401 - re-exported

__all__ = ["DTYPES", "Config", "ConfigError", "atomic_write_bytes", "atomic_write_text", "check_sections", "option", "parse_dtype", "parse_overrides"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key and what to do."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    from lmforge.objectstore import as_path

    h = hashlib.sha256()
    with as_path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: dtype name -> torch dtype attribute: what ``--dtype`` and every ``dtype`` setting accept.
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def parse_dtype(value: Any, *, key: str = "--dtype", names: typing.Mapping[str, str] = DTYPES, error: type[Exception] = ConfigError) -> Any:
    """``"bf16"`` -> ``torch.bfloat16`` (a name of ``names``); a torch dtype or None passes through.
    An unknown name raises ``error`` in one line naming ``key``. (torch is imported only here.)"""
    if value is None or not isinstance(value, str):
        return value
    if value not in names:
        raise error(f"{key} must be one of {', '.join(dict.fromkeys(names.values()))}; got {value!r}")
    import torch

    return getattr(torch, names[value])


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    default_factory: Any = dataclasses.MISSING,
    flag: str | None = None,
    positional: bool = False,
    metavar: str | None = None,
    append: bool = False,
    cli: bool = True,
) -> Any:
    """A config field that also describes its command-line flag (``lmforge.cli.args`` turns a config
    into argparse arguments, so a default, a choice list or a help text is written once, here).

    ``flag``: the flag if not ``--field-name`` (``"--sample"``; ``"--no-stream"`` for a bool whose
    flag turns it off); ``positional``: a positional argument; ``append``: a repeatable flag
    collecting a list; ``cli=False``: not on the command line (set in YAML or by the library)."""
    meta = {"help": help, "flag": flag, "positional": positional, "metavar": metavar, "append": append, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"lmforge": meta})


def _closest(name: str, options: typing.Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{_describe(inner)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where it is lossless (int -> float)."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"config key '{key}' must be {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        options = [str(a) for a in get_args(tp)]
        hint = _closest(str(value), options)
        extra = f"; did you mean {hint!r}?" if hint else ""
        raise ConfigError(f"config key '{key}' must be one of {_describe(tp)}, got {value!r}{extra}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return tp.from_dict(value, _prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}' must be {_describe(tp)}, got {value!r}")


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value the way YAML would (``3e-4`` is a float, ``null`` is None)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "3e-4" as a string; numbers written that way are common on command lines.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_overrides(args: typing.Sequence[str]) -> dict[str, Any]:
    """Turn ``["--model.d_model=256", "optim.lr=3e-4"]`` into a nested dict."""
    nested: dict[str, Any] = {}
    for arg in args:
        item = arg[2:] if arg.startswith("--") else arg
        if "=" not in item:
            raise ConfigError(f"override {arg!r} must look like --key.sub=value")
        key, text = item.split("=", 1)
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {arg!r} has an empty key part")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {arg!r} conflicts with another override of '{part}'")
        node[parts[-1]] = _parse_scalar(text)
    return nested


def check_sections(overrides: dict[str, Any], allowed: typing.Collection[str], command: str) -> None:
    """Reject dotted overrides whose first part is not a config section of ``command``."""
    for key in overrides:
        if key not in allowed:
            hint = _closest(key, allowed)
            extra = f"; did you mean '{hint}.…'?" if hint else ""
            valid = ", ".join(f"--{a}.KEY" for a in allowed) or "none"
            raise ConfigError(f"unknown config section '{key}' for {command}{extra} (accepted: {valid})")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _plain(v: Any) -> Any:
    """Configs (also inside lists and dicts) -> plain YAML-able values."""
    if isinstance(v, Config):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@dataclasses.dataclass
class Config:
    """Base class for lmforge's config dataclasses.

    Subclasses are ``@dataclass``-decorated, use only YAML-representable field types (numbers,
    strings, booleans, ``None``, lists, Literals, nested Configs) and implement :meth:`build`
    where they describe something that can be built. :meth:`validate` is the one place to check
    combinations of fields; it runs after every load.
    """

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, _prefix: str = "") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be built from a mapping, got {type(data).__name__}")
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in fields:
                hint = _closest(key, fields)
                extra = f"; did you mean '{_prefix}{hint}'?" if hint else f"; valid keys: {', '.join(fields)}"
                raise ConfigError(f"unknown config key '{_prefix}{key}'{extra}")
            kwargs[key] = _coerce(value, hints[key], f"{_prefix}{key}")
        # Nested configs that were not mentioned keep their defaults, but defaults may be overridden
        # partially: {"model": {"d_model": 8}} merges into the default ModelConfig.
        try:
            obj = cls(**kwargs)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {e}") from None
        obj.validate()
        return obj

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> C:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        return cls.from_dict(_merge(data, parse_overrides(overrides)))

    def merged(self: C, overrides: typing.Sequence[str] | dict[str, Any], *, prefix: str = "") -> C:
        """A copy with dotted overrides (``["d_model=8"]``) or a nested dict applied; validated.

        ``prefix`` is how this config is addressed on the command line (``"model."``), so errors
        name the key as the user typed it.
        """
        update = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        return type(self).from_dict(_merge(self.to_dict(), update), _prefix=prefix)

    def replace(self: C, **changes: Any) -> C:
        return self.merged(changes)

    # --- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the resolved config as YAML, atomically."""
        from lmforge.objectstore import as_path

        path = as_path(path)
        atomic_write_text(path, self.to_yaml())
        return path

    # --- hooks --------------------------------------------------------------------------------
    def validate(self) -> None:  # noqa: B027 - optional hook
        """Check combinations of fields; raise ConfigError with one clear line."""

    def build(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not build anything")
