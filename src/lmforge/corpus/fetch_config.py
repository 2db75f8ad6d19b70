"""The recipe of ``lmforge data fetch``: sources (package, kind, files, extractor, domain, split,
license, caps) and how the package clients run; checked when loaded (names and versions, so no
package spec can pass as a client option)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from lmforge.config import Config, ConfigError
from lmforge.corpus.archives import Limits
from lmforge.corpus.extractors import get_extractor

__all__ = ["KINDS", "LIMIT_DEFAULTS", "ClientsConfig", "RecipeConfig", "SourceConfig", "load_recipe"]

KINDS = ("pip_sdist", "pip_wheel", "deb", "npm", "stdlib", "local")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PACKAGE = {  # what each client accepts as a package name (never an option: it cannot start with "-")
    "pip_sdist": (re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$"), "a PEP 508 name (letters, digits, . _ -)"),
    "deb": (re.compile(r"^[a-z0-9][a-z0-9+.-]+$"), "a Debian package name (lowercase letters, digits, + . -)"),
    "npm": (re.compile(r"^(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*$"), "an npm name ([@scope/]name, lowercase, not starting with . _ -)"),
}
_PACKAGE["pip_wheel"] = _PACKAGE["pip_sdist"]
_VERSION = re.compile(r"^[A-Za-z0-9~^][A-Za-z0-9._+~:!*^-]*$")
LIMIT_DEFAULTS = {"max_member_bytes": Limits.max_member_bytes, "max_unpacked_bytes": Limits.max_unpacked_bytes,
           "max_compression_ratio": Limits.max_ratio}


@dataclasses.dataclass
class ClientsConfig(Config):
    """How packages are fetched. The clients' own configuration (pip.conf, apt sources, .npmrc) decides
    where packages come from; lmforge names no registry host."""

    pip: list[str] | None = None  # default: [this Python, "-m", "pip"]
    apt_get: str = "apt-get"
    npm: str = "npm"
    pip_args: list[str] = dataclasses.field(default_factory=list)  # extra arguments for pip download (indexes: sdists too)
    timeout_s: float = 300.0  # per client call or download; a source that takes longer is skipped
    max_download_bytes: int = 2 << 30  # an sdist bigger than this is not fetched


@dataclasses.dataclass
class SourceConfig(Config):
    name: str
    kind: Literal["pip_sdist", "pip_wheel", "deb", "npm", "stdlib", "local"]
    domain: str
    package: str = ""
    version: str | None = None  # None: what the client picks (the manifest records the version fetched)
    files: list[str] = dataclasses.field(default_factory=lambda: ["**"])  # globs inside the unpacked package
    exclude: list[str] = dataclasses.field(default_factory=list)
    split: Literal["train", "heldout"] = "train"
    license: str = "unknown"
    extractor: str = "plain"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extractor options
    max_bytes: int | None = None  # cap on the text taken from this source
    sample: float | None = None  # keep this fraction of the documents (by a hash of the id), e.g. 0.5
    order: Literal["path", "hash"] = "path"  # file order: by path, or by a hash of the path (an unbiased cap)
    group_bytes: int = 0  # join consecutive short pieces of a file into documents of at least this size
    heldout_fraction: float | None = None  # None: the recipe's
    strip_components: int | None = None  # leading directories dropped from archive paths (sdist/npm: 1)
    local: str | None = None  # an archive or directory to read instead of running the client
    max_member_bytes: int = Limits.max_member_bytes  # a bigger file in an archive is left out (counted in skipped)
    max_unpacked_bytes: int = Limits.max_unpacked_bytes  # more unpacked from the archives: the source fails
    max_compression_ratio: float = Limits.max_ratio  # more (past 64 MiB): a decompression bomb, the source fails
    description: str = ""

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"source name {self.name!r} must be letters, digits and . _ + - (it names files)")
        if not _NAME.match(self.domain):
            raise ConfigError(f"source '{self.name}': domain {self.domain!r} must be letters, digits and . _ + -")
        if self.kind not in ("stdlib", "local") and not self.package:
            raise ConfigError(f"source '{self.name}': kind {self.kind} needs a package")
        if self.kind in _PACKAGE and not _PACKAGE[self.kind][0].match(self.package):
            raise ConfigError(f"source '{self.name}': package {self.package!r} is not {_PACKAGE[self.kind][1]}")
        if self.version is not None and (not _VERSION.match(self.version) or len(self.version) > 100):
            raise ConfigError(f"source '{self.name}': version {self.version!r} must be letters, digits and . _ + ~ : ! * ^ - (not starting with -)")
        if self.version is not None and self.kind in ("pip_sdist", "pip_wheel"):
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(f"=={self.version}")
            except InvalidSpecifier:
                raise ConfigError(f"source '{self.name}': version {self.version!r} is not a PEP 440 version (e.g. 1.2.3)") from None
        if self.kind == "local" and not self.local:
            raise ConfigError(f"source '{self.name}': kind local needs local: PATH")
        for key in ("max_bytes", "max_member_bytes", "max_unpacked_bytes", "max_compression_ratio"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"source '{self.name}': {key} must be > 0")
        if self.sample is not None and not 0 < self.sample <= 1:
            raise ConfigError(f"source '{self.name}': sample must be in (0, 1]")
        if self.heldout_fraction is not None and not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"source '{self.name}': heldout_fraction must be in [0, 1)")
        if not self.files:
            raise ConfigError(f"source '{self.name}': files must name at least one glob")

    @property
    def strip(self) -> int:
        if self.strip_components is not None:
            return self.strip_components
        return 1 if self.kind in ("pip_sdist", "npm") else 0

    @property
    def limits(self) -> Limits:
        return Limits(max_member_bytes=self.max_member_bytes, max_unpacked_bytes=self.max_unpacked_bytes,
                      max_ratio=self.max_compression_ratio)


@dataclasses.dataclass
class RecipeConfig(Config):
    name: str = "corpus"
    description: str = ""
    sources: list[SourceConfig] = dataclasses.field(default_factory=list)
    heldout_fraction: float = 0.005  # of each training source, by a hash of the document id -> validation/
    document_source: Literal["domain", "source"] = "domain"  # what a document's top-level "source" holds
    clients: ClientsConfig = dataclasses.field(default_factory=ClientsConfig)
    imports: list[str] = dataclasses.field(default_factory=list)  # modules that register more extractors
    keep_downloads: bool = True  # keep archives in OUT/downloads/ (reruns reuse them)

    def validate(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError("heldout_fraction must be in [0, 1)")
        for mod in self.imports:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise ConfigError(f"imports: cannot import {mod!r} ({e})") from None
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ConfigError(f"two sources are named '{s.name}'; names must be unique")
            seen.add(s.name)
            try:
                get_extractor(s.extractor).resolve_options(s.options, f"source '{s.name}'")
            except ValueError as e:
                raise ConfigError(f"source '{s.name}': {e}") from None


def load_recipe(recipe: str | os.PathLike | dict | RecipeConfig) -> tuple[RecipeConfig, Path]:
    """The recipe and the directory its relative ``local`` paths are read from."""
    if isinstance(recipe, RecipeConfig):
        return recipe, Path.cwd()
    if isinstance(recipe, dict):
        return RecipeConfig.from_dict(recipe), Path.cwd()
    path = Path(recipe)
    return RecipeConfig.from_yaml(path), path.resolve().parent
