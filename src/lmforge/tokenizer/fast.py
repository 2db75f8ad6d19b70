"""A faster BPE engine (tiktoken's) for byte-level BPE tokenizers, used only where it gives the ids of
HF ``tokenizers``.

    engine = fast_engine(tokenizer)        # or EngineRefused, with the reason
    ids = engine.encode_batch(texts)       # int64 arrays: tokenizer.encode_batch's ids

tiktoken's ``Encoding`` holds *mergeable ranks* (byte strings ranked by merge priority), one split
regex and special tokens. A HF byte-level BPE file maps onto it when it has the structure tiktoken
can express, and the engine is built only when every condition below holds; otherwise it is refused
with a one-line reason and HF ``tokenizers`` (the reference) runs:

* **structure** (read from the tokenizer JSON): a BPE model without dropout, unknown token, byte
  fallback or subword prefixes; no truncation or padding; normalizer none or NFC; a pre-tokenizer
  that is GPT-2's byte-level regex (``ByteLevel(use_regex=True)``) or one ``Split`` regex (isolated
  pieces kept) followed by a regex-less ``ByteLevel``, without a prefix space; added tokens without
  strip or single-word rules (they are cut out as HF does: leftmost-longest, first those matched on
  the raw text, then, after NFC, those matched on normalised text); every byte that UTF-8 text can
  hold in the vocabulary;
* **ranks**: a byte's rank is the byte, the token made by merge ``i`` ranks ``256 + i`` (HF applies the
  merge with the lowest index first, tiktoken the pair whose concatenation ranks lowest: the same
  order when no token is made by two merges); a token that two merges make is refused;
* **whole pieces**: tiktoken takes a piece that is itself a token without merging; HF merges it.
  Every ranked token's own bytes must merge (in HF) back to that one token;
* **samples**: the ids of both engines must be equal on a built-in corpus of prose, code, long runs
  of spaces and digits, emoji, CJK, combining marks, lone surrogates and special-token text
  (:func:`check_texts`).

The first three are checked exactly, over the whole vocabulary. That the two merge rules then agree
on every text, and that the two regex engines (fancy-regex, Oniguruma) split every text alike, is
shown on samples, not proven: hence the built-in sample, and ``lmforge data tokenize`` audits the
engine on its own documents as it goes (:mod:`lmforge.corpus.tokenize`). Measured while building it:
OLMo-1 and OLMo-2 agree on every Unicode code point in three contexts, and 3,000 random merge lists
that pass the checks agree on every string of up to 6 letters over their alphabet.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from lmforge.config import atomic_write_text
from lmforge.tokenizer.core import Tokenizer

__all__ = ["ENGINES", "EngineRefused", "FastEngine", "check_texts", "choose_engine", "fast_engine"]

#: GPT-2's pre-tokenizer pattern (what ``ByteLevel(use_regex=True)`` splits with)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: what a command's ``engine`` option takes
ENGINES = ("auto", "hf", "tiktoken")
#: bytes that never occur in UTF-8 text
NOT_IN_UTF8 = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])


class EngineRefused(ValueError):
    """The fast engine cannot be shown to give this tokenizer's ids (the message says why)."""


@functools.lru_cache(maxsize=1)
def _byte_chars() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), inverted: char -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


@functools.lru_cache(maxsize=1)
def _to_latin1() -> dict[int, int]:
    """str.translate table: each stand-in char -> the char whose latin-1 byte it stands for."""
    return {ord(c): b for c, b in _byte_chars().items()}


def _token_bytes(token: str) -> bytes:
    try:
        return token.translate(_to_latin1()).encode("latin-1")
    except UnicodeEncodeError:
        raise EngineRefused(f"token {token!r} is not byte-level text") from None


def _pattern(doc: dict) -> str:
    """The split regex of a supported pre-tokenizer, else refused."""
    pre = doc.get("pre_tokenizer") or {}

    def byte_level(p: dict, regex: bool) -> bool:
        return p.get("type") == "ByteLevel" and not p.get("add_prefix_space", False) and bool(p.get("use_regex", True)) == regex

    if byte_level(pre, True):
        return GPT2_PATTERN
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, level = pre["pretokenizers"]
        regex = (split.get("pattern") or {}).get("Regex")
        if (split.get("type") == "Split" and regex and split.get("behavior") == "Removed" and split.get("invert")
                and byte_level(level, False)):
            return regex
    raise EngineRefused(f"pre-tokenizer {json.dumps(pre)[:80]} is not a byte-level regex split")


def _check_structure(doc: dict) -> bool:
    """Refuse what tiktoken cannot express; returns whether texts are NFC-normalised first."""
    model = doc.get("model") or {}
    for key in ("truncation", "padding"):
        if doc.get(key):
            raise EngineRefused(f"the file sets {key} (HF would cut or pad the ids)")
    if model.get("type") != "BPE":
        raise EngineRefused(f"model type {model.get('type')!r} is not BPE")
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise EngineRefused(f"BPE option {key}={model[key]!r}")
    if model.get("byte_fallback"):
        raise EngineRefused("BPE option byte_fallback")
    norm = doc.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        raise EngineRefused(f"normalizer {norm.get('type')!r} (only none or NFC)")
    for t in doc.get("added_tokens", []):
        if t.get("lstrip") or t.get("rstrip") or t.get("single_word"):
            raise EngineRefused(f"added token {t.get('content')!r} has strip or single-word rules")
    return norm is not None


def _merges(model: dict) -> list[tuple[str, str]]:
    out = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        out.append((a, b))
    return out


def _alternation(tokens: list[str]) -> re.Pattern | None:
    """A splitting regex for literal tokens, longest first (so that the leftmost match is the longest)."""
    if not tokens:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")")


class FastEngine:
    """tiktoken's encoder over a tokenizer's ranks; :meth:`encode_batch` gives HF's ids."""

    name = "tiktoken"

    def __init__(self, tokenizer: Tokenizer, doc: dict, *, verify: bool = True):
        """``verify=False`` skips the whole-piece check (for a file already verified: same sha256)."""
        import tiktoken

        self.reference = tokenizer
        self.nfc = _check_structure(doc)
        pattern = _pattern(doc)
        model, vocab = doc["model"], doc["model"]["vocab"]
        ranks: dict[bytes, int] = {}
        to_id = np.full(256 + len(model["merges"]), -1, dtype=np.int64)
        byte_of = _byte_chars()
        for char, b in byte_of.items():
            if char not in vocab:
                if b in NOT_IN_UTF8:  # never in text: a vocabulary may leave it out
                    continue
                raise EngineRefused(f"byte {b:#04x} ({char!r}) is not in the vocabulary")
            ranks[bytes([b])] = b
            to_id[b] = vocab[char]
        for i, (a, b) in enumerate(_merges(model)):
            token = a + b
            if token not in vocab or a not in vocab or b not in vocab:
                raise EngineRefused(f"merge {i} ({a!r} {b!r}) names a token that is not in the vocabulary")
            key = _token_bytes(token)
            if key in ranks:
                raise EngineRefused(f"token {token!r} is made by two merges")
            ranks[key] = 256 + i
            to_id[256 + i] = vocab[token]
        if verify:
            self._check_whole_pieces(tokenizer, ranks, to_id, byte_of)
        # added tokens are cut out here, leftmost-longest as HF matches them (tiktoken's own special
        # matching takes the first alternative of a hash-ordered list, not the longest): first those
        # matched on the raw text, then (after the normaliser) those matched on normalised text
        added = doc.get("added_tokens", [])
        n = len(to_id)  # added tokens get ranks past the merges (only here, never seen by tiktoken)
        self._added = {t["content"]: n + k for k, t in enumerate(added)}
        self._raw_re = _alternation([t["content"] for t in added if not t.get("normalized")])
        self._norm_re = _alternation([t["content"] for t in added if t.get("normalized")])
        self._to_id = np.concatenate([to_id, np.array([t["id"] for t in added], dtype=np.int64)])
        self._encoding = tiktoken.Encoding(name=f"lmforge:{tokenizer.source}", pat_str=pattern, mergeable_ranks=ranks,
                                           special_tokens={})

    @staticmethod
    def _check_whole_pieces(tokenizer: Tokenizer, ranks: dict[bytes, int], to_id: np.ndarray, byte_of: dict[str, int]) -> None:
        """HF's BPE must turn every ranked token's own bytes into that token (tiktoken looks whole
        pieces up without merging)."""
        char_of = {b: c for c, b in byte_of.items()}
        model = tokenizer.backend.model
        for key, rank in ranks.items():
            if len(key) == 1:
                continue
            got = model.tokenize("".join(char_of[b] for b in key))
            if len(got) != 1 or got[0].id != to_id[rank]:
                raise EngineRefused(f"HF's merges turn token {key!r} into {len(got)} tokens")

    def _pieces(self, text: str, pieces: list[str]) -> list[int | str]:
        """``text`` as HF splits it: indices into ``pieces`` (text to encode, appended there) and added
        tokens (str)."""
        parts: list[int | str] = []
        raw = self._raw_re.split(text) if self._raw_re is not None and self._raw_re.search(text) else [text]
        for j, part in enumerate(raw):
            if j % 2:
                parts.append(part)
                continue
            if not part:
                continue
            if self.nfc:
                part = unicodedata.normalize("NFC", part)
            normed = self._norm_re.split(part) if self._norm_re is not None and self._norm_re.search(part) else [part]
            for k, piece in enumerate(normed):
                if k % 2:
                    parts.append(piece)
                elif piece:
                    parts.append(len(pieces))
                    pieces.append(piece)
        return parts

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[np.ndarray]:
        """HF ``encode_batch(texts, add_special_tokens=False)``'s ids, one int64 array per text."""
        pieces: list[str] = []  # every text's pieces between added tokens, encoded in one call
        layout = [self._pieces(t, pieces) for t in texts]
        encode = self._encoding.encode_ordinary  # releases the GIL while it encodes

        def run(chunk: list[str]) -> list[list[int]]:
            return [encode(p) for p in chunk]

        if num_threads > 1 and len(pieces) > 1:  # contiguous chunks (tiktoken's own batch call pays per piece)
            step = -(-len(pieces) // num_threads)
            with ThreadPoolExecutor(num_threads) as pool:
                encoded = [e for chunk in pool.map(run, [pieces[i:i + step] for i in range(0, len(pieces), step)]) for e in chunk]
        else:
            encoded = run(pieces)
        to_id, added = self._to_id, self._added
        out = []
        for parts in layout:
            if len(parts) == 1 and isinstance(parts[0], int):
                ranks = encoded[parts[0]]
            else:
                ranks = []
                for p in parts:
                    if isinstance(p, int):
                        ranks += encoded[p]
                    else:
                        ranks.append(added[p])
            out.append(to_id[np.asarray(ranks, dtype=np.int64)])
        return out

    def agrees(self, texts: Sequence[str]) -> int | None:
        """Index of the first text whose ids differ from the reference's, or None when all agree."""
        mine = self.encode_batch(texts)
        theirs = self.reference.encode_batch(list(texts))
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if not np.array_equal(a, np.asarray(b, dtype=np.int64)):
                return i
        return None


def check_texts() -> list[str]:
    """The built-in sample the engines must agree on: prose, code, whitespace, digits, scripts, emoji,
    combining marks, lone surrogates (as text read with ``surrogatepass`` would hold them, and replaced)
    and special-token text."""
    import random

    rng = random.Random(0)
    words = ("the model reads open data and learns to predict the next token it's they'll we've I'm "
             "don't DON'T Hello WORLD naïve café résumé Zürich straße ﬁne").split()
    pieces = ["日本語のテキスト", "中文文本，标点。", "한국어 텍스트", "Ελληνικά", "русский текст", "עברית", "العربية", "हिन्दी",
              "🙂", "👩‍👩‍👧‍👦", "🇫🇷", "e\u0301", "a\u0308\u0323", "\u200b", "\ufeff", "\x00", "\x7f", "\t", "\r\n", "\n\n\n",
              "    ", " " * 17, "\t\t  \n ", "1234567890123", "3.14159", "1,000,000", "0x1F", "١٢٣", "²³", "Ⅻ",
              "def f(a, b):\n    return a + b\n", "for (int i = 0; i < n; ++i) { x[i] = 0; }", "<div class=\"x\">&amp;</div>",
              "https://example.org/a?b=c&d=e", "user@example.com", "\\n\\t", "''''", "'s's", "...", "—", "“quoted”",
              "<|endoftext|>", "<|pad|>", "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "<|endoftext|><|endoftext|>",
              "x<|endoftext|>y", "<|endoftext", "|endoftext|>", "<|im_start|>user", "\ud800", "\udfff"]
    texts = []
    for i in range(600):
        parts = []
        for _ in range(rng.randint(1, 30)):
            parts.append(rng.choice(words) if rng.random() < 0.6 else rng.choice(pieces))
            parts.append(rng.choice([" ", " ", " ", "", "\n", "  ", "\t", ", ", ". "]))
        texts.append("".join(parts))
    texts += pieces + ["", " ", "a", " " * 300, "9" * 300, "ab" * 200, "\n" * 50 + "x"]
    # lone surrogates cannot be UTF-8 encoded: both engines get what a reader would give them
    return [t.encode("utf-8", "replace").decode("utf-8") if any(0xD800 <= ord(c) < 0xE000 for c in t) else t for t in texts]


def fast_engine(tokenizer: Tokenizer, *, verified: bool = False) -> FastEngine:
    """The fast engine for ``tokenizer``, shown to give the same ids (module doc); else
    :class:`EngineRefused` with the reason in one line. ``verified=True``: the caller has shown it
    for this very file (same sha256) in this run; only the structure is checked again."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        raise EngineRefused("tiktoken is not installed") from None
    doc = json.loads(tokenizer.backend.to_str())
    engine = FastEngine(tokenizer, doc, verify=not verified)
    if not verified:
        texts = check_texts()
        bad = engine.agrees(texts)
        if bad is not None:
            raise EngineRefused(f"ids differ on sample text {bad} ({texts[bad][:40]!r})")
    return engine


#: bump when a check changes: cached verdicts of an older version are not used
CHECKS_VERSION = 1


def _verdict_key(sha256: str) -> str:
    import tiktoken

    return f"{sha256}:tiktoken-{tiktoken.__version__}:checks-{CHECKS_VERSION}"


def _verdicts_path() -> Path:
    from lmforge.tokenizer.olmo import default_cache_dir

    return default_cache_dir() / "fast-engine-verdicts.json"


def _cached_verdict(sha256: str) -> str | None:
    try:
        return json.loads(_verdicts_path().read_text(encoding="utf-8")).get(_verdict_key(sha256))
    except (OSError, ValueError, AttributeError, ImportError):
        return None


def _store_verdict(sha256: str, verdict: str) -> None:
    """Remember (best effort: a read-only cache only costs the check next time)."""
    path = _verdicts_path()
    try:
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        known[_verdict_key(sha256)] = verdict
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, indent=1) + "\n")
    except (OSError, ImportError):
        pass


def choose_engine(requested: str, tokenizer: Tokenizer, *, sha256: str | None = None) -> tuple[str, str | None]:
    """``("tiktoken" | "hf", why tiktoken is not used or None)`` for a command's ``engine`` option:
    ``auto`` takes tiktoken where :func:`fast_engine` accepts the tokenizer; ``tiktoken`` that it
    refuses raises :class:`EngineRefused`. With the file's ``sha256`` the verdict is cached (per
    tiktoken version and version of these checks) in the tokenizer cache directory."""
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "hf":
        return "hf", "engine=hf was asked for"
    try:
        verdict = _cached_verdict(sha256) if sha256 else None
        if verdict is None:
            try:
                fast_engine(tokenizer)
                verdict = "ok"
            except EngineRefused as e:
                if str(e) == "tiktoken is not installed":
                    raise
                verdict = str(e)
            if sha256:
                _store_verdict(sha256, verdict)
        if verdict != "ok":
            raise EngineRefused(verdict)
    except EngineRefused as e:
        if requested == "tiktoken":
            raise
        return "hf", str(e)
    return "tiktoken", None
