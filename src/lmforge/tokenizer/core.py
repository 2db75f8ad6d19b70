"""The :class:`Tokenizer`: a HF ``tokenizers`` backend plus special-token ids that are always explicit.

Why explicit ids: the same token string can sit at very different ids in closely related files.
OLMo-1's tokenizer has ``<|endoftext|>`` at 50279 and ``|||IP_ADDRESS|||`` at 0, while the GPT-NeoX
PII-special file it was derived from has them the other way round. A model trained with one and
sampled with the other ends documents with the wrong token and nobody notices until evaluation. So a
:class:`Tokenizer` never guesses silently: it is built with ids, and every id is checked when the
tokenizer is created (it must exist, be a *special* token and decode to its own string). When the
caller gives no ids, they are found by well-known token strings and then checked the same way.

Every failure raises :class:`TokenizerError` with one line that names the file and says what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import tokenizers

from lmforge.config import atomic_write_text

__all__ = [
    "EOS_TOKEN",
    "PAD_TOKENS",
    "PII_TOKENS",
    "Tokenizer",
    "TokenizerError",
    "check_fits",
    "load_tokenizer_path",
]

#: The end-of-text token of every OLMo / GPT-NeoX tokenizer and of the ones :func:`train_bpe` makes.
EOS_TOKEN = "<|endoftext|>"
#: Padding tokens, by convention: OLMo-2 (and lmforge) use ``<|pad|>``, OLMo-1/GPT-NeoX ``<|padding|>``.
PAD_TOKENS = ("<|pad|>", "<|padding|>")
#: Placeholders that Dolma writes in place of personal data; kept as single tokens.
PII_TOKENS = ("|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||")

_ROLE_NAMES = {"eos": "EOS", "pad": "PAD", "bos": "BOS"}
_WELL_KNOWN = {"eos": (EOS_TOKEN,), "pad": PAD_TOKENS, "bos": ()}


class TokenizerError(ValueError):
    """A tokenizer problem, described in one line that names the file and says what to do."""


def _write_text(path: Path, text: str) -> None:
    """Atomic write, then the usual 0644 mode (the temporary file it comes from is 0600)."""
    atomic_write_text(path, text)
    os.chmod(path, 0o644)


def _one_line(text: object) -> str:
    """First line of an exception text, so that messages from libraries stay one line."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(text).__name__


def _read_backend(path: Path) -> tokenizers.Tokenizer:
    """Read a tokenizers JSON file, turning each way it can be broken into a clear one-line error."""
    if path.is_dir():
        raise TokenizerError(f"tokenizer file {path} is a directory; load it with Tokenizer.from_dir()")
    if not path.is_file():
        raise TokenizerError(
            f"tokenizer file {path} does not exist; check the path, or use a known name "
            "('olmo1', 'olmo2', 'gpt-neox-pii') after 'lmforge tokenizer fetch'"
        )
    data = path.read_bytes()
    redo = "re-download or re-export it"
    if not data.strip():
        raise TokenizerError(f"tokenizer file {path} is empty; {redo}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"tokenizer file {path} is not UTF-8 text (byte {e.start}); {redo}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()):
            raise TokenizerError(
                f"tokenizer file {path} is truncated (its JSON stops after {len(data)} bytes); {redo}"
            ) from None
        raise TokenizerError(
            f"tokenizer file {path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); {redo}"
        ) from None
    if not isinstance(doc, dict) or "model" not in doc:
        raise TokenizerError(
            f"tokenizer file {path} is JSON but not a tokenizers file (no 'model' section); "
            "expected a tokenizer.json written by the HF tokenizers library"
        )
    try:
        return tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # the Rust side raises plain Exception with its own message
        raise TokenizerError(f"tokenizer file {path} could not be read by tokenizers: {_one_line(e)}; {redo}") from None


def _detect(backend: tokenizers.Tokenizer, role: str) -> int | None:
    for token in _WELL_KNOWN[role]:
        token_id = backend.token_to_id(token)
        if token_id is not None:
            return token_id
    return None


class Tokenizer:
    """A byte-level BPE (or any HF ``tokenizers``) tokenizer with checked, explicit special ids.

    Build one with :meth:`from_file`, :meth:`from_dir`, :func:`lmforge.tokenizer.load_olmo_tokenizer`
    or :func:`lmforge.tokenizer.train_bpe`. The constructor checks every id it is given.
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        eos_token_id: int,
        pad_token_id: int,
        bos_token_id: int | None = None,
        source: str = "<in memory>",
    ) -> None:
        self._backend = backend
        self.source = source
        self._specials = {i: t for i, t in backend.get_added_tokens_decoder().items() if t.special}
        self.eos_token_id = self._check_id("eos", eos_token_id)
        self.pad_token_id = self._check_id("pad", pad_token_id)
        self.bos_token_id = None if bos_token_id is None else self._check_id("bos", bos_token_id)
        self.chat_template: str | None = None  # Jinja, written to tokenizer_config.json (see tokenizer.chat)
        self.pii_token_ids: dict[str, int] = {
            tok: tid for tok in PII_TOKENS if (tid := backend.token_to_id(tok)) is not None
        }

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
    ) -> Tokenizer:
        """Load a tokenizers JSON file; ids not given are found by their well-known token strings."""
        path = Path(path)
        backend = _read_backend(path)
        return cls._with_detected_ids(backend, str(path), eos_token_id, pad_token_id, bos_token_id)

    @classmethod
    def from_dir(
        cls,
        directory: str | os.PathLike,
        *,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
    ) -> Tokenizer:
        """Load ``tokenizer.json`` from an HF export or lmforge checkpoint directory.

        The special tokens come from ``tokenizer_config.json`` (or ``special_tokens_map.json``),
        the files ``transformers`` itself reads, so both libraries agree on them. Explicit ids win.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise TokenizerError(f"tokenizer directory {directory} does not exist or is not a directory")
        tok_file = directory / "tokenizer.json"
        if not tok_file.is_file():
            raise TokenizerError(
                f"tokenizer directory {directory} has no tokenizer.json; export one with Tokenizer.to_hf_files()"
            )
        backend = _read_backend(tok_file)
        named = _special_tokens_from_config(directory)
        ids = {"eos": eos_token_id, "pad": pad_token_id, "bos": bos_token_id}
        for role, token in named.items():
            if ids[role] is not None or token is None:
                continue
            token_id = backend.token_to_id(token)
            if token_id is None:
                raise TokenizerError(
                    f"{directory}/tokenizer_config.json names {role}_token {token!r}, but {tok_file} has no such "
                    "token; re-export the directory with a matching tokenizer_config.json"
                )
            ids[role] = token_id
        tok = cls._with_detected_ids(backend, str(tok_file), ids["eos"], ids["pad"], ids["bos"])
        tok.chat_template = _chat_template_from_config(directory)
        return tok

    @classmethod
    def _with_detected_ids(
        cls,
        backend: tokenizers.Tokenizer,
        source: str,
        eos_token_id: int | None,
        pad_token_id: int | None,
        bos_token_id: int | None,
    ) -> Tokenizer:
        if eos_token_id is None:
            eos_token_id = _detect(backend, "eos")
            if eos_token_id is None:
                raise TokenizerError(
                    f"tokenizer file {source} has no {EOS_TOKEN!r} token; pass eos_token_id= explicitly"
                )
        if pad_token_id is None:
            pad_token_id = _detect(backend, "pad")
            if pad_token_id is None:
                raise TokenizerError(
                    f"tokenizer file {source} has no padding token ({' or '.join(map(repr, PAD_TOKENS))}); "
                    f"pass pad_token_id= explicitly (the EOS id {eos_token_id} is a common choice)"
                )
        return cls(
            backend, eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id, source=source
        )

    def _check_id(self, role: str, token_id: Any) -> int:
        """An id must exist, be a special token, and decode to its own string; else say which id to use."""
        name = _ROLE_NAMES[role]
        where = f"tokenizer file {self.source}"
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise TokenizerError(f"{name} id for {where} must be an integer, got {token_id!r}")
        n = self.vocab_size
        if not 0 <= token_id < n:
            raise TokenizerError(f"{name} id {token_id} is outside the {n} ids of {where}; {self._hint(role)}")
        token = self._backend.id_to_token(token_id)
        if token_id not in self._specials:
            raise TokenizerError(
                f"{name} id {token_id} of {where} is {token!r}, which is not a special token; {self._hint(role)}"
            )
        decoded = self._backend.decode([token_id], skip_special_tokens=False)
        if decoded != token:
            raise TokenizerError(
                f"{name} id {token_id} of {where} decodes to {decoded!r} instead of {token!r}; the file is "
                "inconsistent, re-download or re-export it"
            )
        return token_id

    def _hint(self, role: str) -> str:
        arg = f"{role}_token_id"
        for token in _WELL_KNOWN[role]:
            token_id = self._backend.token_to_id(token)
            if token_id is not None and token_id in self._specials:
                return f"this file's {token!r} is id {token_id}: pass {arg}={token_id}"
        listed = ", ".join(f"{t.content!r}={i}" for i, t in sorted(self._specials.items())[:8])
        return f"pass {arg}= with one of its special tokens ({listed or 'it has none'})"

    # --- encoding -----------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``.

        ``add_special_tokens=True`` means lmforge's document rule, ``[BOS] + ids + [EOS]`` (BOS only
        when the tokenizer has one), applied here rather than by the file's post-processor so that it
        is the same for every tokenizer file.
        """
        ids = self._backend.encode(text, add_special_tokens=False).ids
        return self._wrap(ids) if add_special_tokens else ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        """:meth:`encode` for many texts at once (the backend runs them in parallel)."""
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._wrap(e.ids) if add_special_tokens else e.ids for e in encodings]

    def _wrap(self, ids: list[int]) -> list[int]:
        head = [] if self.bos_token_id is None else [self.bos_token_id]
        return head + ids + [self.eos_token_id]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (any iterable of ints, e.g. a 1-D tensor); ids outside the vocabulary raise."""
        ids = [int(i) for i in ids]
        n = self.vocab_size
        bad = next((i for i in ids if not 0 <= i < n), None)
        if bad is not None:
            raise TokenizerError(
                f"cannot decode id {bad}: tokenizer {self.source} has ids 0..{n - 1}; mask logits beyond the "
                "vocabulary before sampling"
            )
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    # --- vocabulary ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included: the smallest embedding that can hold every id."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eos_token(self) -> str:
        return self._backend.id_to_token(self.eos_token_id)

    @property
    def pad_token(self) -> str:
        return self._backend.id_to_token(self.pad_token_id)

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_token_id is None else self._backend.id_to_token(self.bos_token_id)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (for things this class does not cover, e.g. offsets)."""
        return self._backend

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def special_token_ids(self) -> dict[str, int]:
        """Role -> id for EOS, PAD, BOS (if any) and the PII placeholders; handy for logs and configs."""
        out = {"eos": self.eos_token_id, "pad": self.pad_token_id}
        if self.bos_token_id is not None:
            out["bos"] = self.bos_token_id
        out.update(self.pii_token_ids)
        return out

    def __repr__(self) -> str:
        ids = ", ".join(f"{r}={getattr(self, f'{r}_token_id', None)}" for r in ("eos", "pad", "bos"))
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, {ids})"

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizers JSON file (atomically). Special ids are not in it: see :meth:`to_hf_files`."""
        path = Path(path)
        _write_text(path, self._backend.to_str(pretty=True))
        return path

    def to_hf_files(self, out_dir: str | os.PathLike, *, model_max_length: int | None = None) -> Path:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        The result loads with stock ``transformers.AutoTokenizer.from_pretrained(out_dir)`` and then
        encodes exactly like :meth:`encode`: no BOS/EOS added, no token_type_ids, left padding (what
        batched generation with a decoder-only model needs) and no "clean up" of spaces on decode.
        :meth:`from_dir` reads the directory back with the same special tokens.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        specials = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token}
        config: dict[str, Any] = {
            # PreTrainedTokenizerFast loads tokenizer.json as-is (transformers 4 and 5) instead of
            # rebuilding a model-specific tokenizer from vocab and merges.
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "unk_token": None,
            "add_bos_token": False,
            "add_eos_token": False,
            "padding_side": "left",
            "model_input_names": ["input_ids", "attention_mask"],
            "clean_up_tokenization_spaces": False,
        }
        if model_max_length is not None:
            config["model_max_length"] = int(model_max_length)
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        self.save(out_dir / "tokenizer.json")
        _write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        special_map = {k: v for k, v in specials.items() if v is not None}
        _write_text(
            out_dir / "special_tokens_map.json", json.dumps(special_map, indent=2, ensure_ascii=False) + "\n"
        )
        return out_dir


def _special_tokens_from_config(directory: Path) -> dict[str, str | None]:
    """``{"eos": "<|endoftext|>", ...}`` from tokenizer_config.json, else special_tokens_map.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path} is not valid JSON ({_one_line(e)}); re-export the directory") from None
        if not isinstance(doc, dict):
            raise TokenizerError(f"{path} must hold a JSON object; re-export the directory")
        out: dict[str, str | None] = {}
        for role in ("eos", "pad", "bos"):
            key = f"{role}_token"
            value = doc.get(key)
            if isinstance(value, dict):  # transformers may write {"content": "<|endoftext|>", ...}
                value = value.get("content")
            if value is not None and not isinstance(value, str):
                raise TokenizerError(
                    f"{path}: {key!r} must be a token string (or {{\"content\": TOKEN}}), got {doc.get(key)!r:.80}; "
                    "re-export the directory"
                )
            out[role] = value
        return out
    return {}


def _chat_template_from_config(directory: Path) -> str | None:
    """The ``chat_template`` of tokenizer_config.json (or transformers' chat_template.jinja), if any."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    path = directory / "tokenizer_config.json"
    if path.is_file():
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None  # _special_tokens_from_config has already said what is wrong with the file
        if isinstance(value, list):  # transformers' named templates: [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default")
        if value is not None and not isinstance(value, str):
            raise TokenizerError(
                f"{path}: 'chat_template' must be a Jinja string (or a list of {{\"name\", \"template\"}} with a "
                f"'default'), got {value!r:.80}; re-export the directory"
            )
        return value
    return None


def load_tokenizer_path(path: str | os.PathLike, **ids: int | None) -> Tokenizer:
    """:meth:`Tokenizer.from_dir` for a directory, :meth:`Tokenizer.from_file` otherwise."""
    path = Path(path)
    return Tokenizer.from_dir(path, **ids) if path.is_dir() else Tokenizer.from_file(path, **ids)


def check_fits(tokenizer: Tokenizer, embedding_rows: int) -> None:
    """Raise if some token id has no row in the model's embedding (rows may exceed ids: OLMo pads to 128s)."""
    n = tokenizer.vocab_size
    if n > embedding_rows:
        raise TokenizerError(
            f"tokenizer {tokenizer.source} has {n} ids but the model's embedding has {embedding_rows} rows; "
            f"set --model.vocab_size={n} or use a matching tokenizer"
        )
