"""Extractors of reference works and corpora, one piece per entry: dictd dictionaries, WordNet,
fortune files, the Brown corpus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from lmforge.corpus.extractors.registry import Piece, SkipFile, decode_text, read_maybe_gz, register_extractor, tidy

__all__ = ["extract_brown", "extract_dict", "extract_fortunes", "extract_wordnet"]


# --- dictd dictionaries -----------------------------------------------------------------------------
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


@register_extractor(
    "dict",
    options={
        "drop_headwords": r"^00-?(database|[\w]+-)",
        "drop_lines": r"^\s*\[(?:[^\]\n]*Webster[^\]\n]*|WordNet[^\]\n]*|PJC|Century Dict\.?|RHD|Chambers[^\]\n]*)\]\s*$",
    },
    companions=("**/*.index",),
)
def extract_dict(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """dictd databases (``*.dict.dz`` + ``*.index``): one piece per entry, header entries and source
    markers such as ``[1913 Webster]`` dropped. Without an index, entries start at column 0."""
    data = read_maybe_gz(path)
    name = path.name
    for suffix in (".dict.dz", ".dict.gz", ".dict"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    index = path.with_name(name + ".index")
    drop_head = re.compile(opts["drop_headwords"]) if opts["drop_headwords"] else None
    drop_line = re.compile(opts["drop_lines"], re.MULTILINE) if opts["drop_lines"] else None

    def clean(body: str) -> str:
        if drop_line is not None:
            body = drop_line.sub("", body)
        return tidy(body)

    if index.is_file():
        spans: dict[tuple[int, int], list[str]] = {}
        for line in decode_text(index.read_bytes()).split("\n"):
            f = line.split("\t")
            if len(f) < 3:
                continue
            try:
                span = (_b64num(f[1]), _b64num(f[2]))
            except KeyError:
                continue
            spans.setdefault(span, []).append(f[0])
        for (off, size), heads in sorted(spans.items()):
            if drop_head is not None and any(drop_head.search(h) for h in heads):
                continue
            body = clean(decode_text(data[off : off + size]))
            if body:
                yield Piece(str(off), body, {"headword": heads[0]})
        return
    entry: list[str] = []
    start = 0
    lines = decode_text(data).split("\n")
    for i, line in enumerate(lines + [""]):
        if i == len(lines) or (line and not line[0].isspace() and entry and not entry[-1].strip()):
            body = "\n".join(entry)
            head = entry[0].strip() if entry else ""
            if body.strip() and not (drop_head is not None and drop_head.search(head)):
                yield Piece(str(start), clean(body), {"headword": head})
            entry, start = [], i
        entry.append(line)


# --- WordNet ----------------------------------------------------------------------------------------
_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


@register_extractor("wordnet", options={})
def extract_wordnet(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """WordNet ``data.{noun,verb,adj,adv}``: one piece per synset, ``words (pos): gloss``."""
    for line in decode_text(path.read_bytes()).split("\n"):
        if not line or line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        f = head.split()
        try:
            offset, pos, n = f[0], f[2], int(f[3], 16)
            words = [f[4 + 2 * k].replace("_", " ") for k in range(n)]
        except (IndexError, ValueError):
            continue
        words = [re.sub(r"\((?:a|p|ip)\)$", "", w) for w in words]
        yield Piece(f"{pos}{offset}", f"{', '.join(words)} ({_POS.get(pos, pos)}): {gloss.strip()}")


# --- fortunes ---------------------------------------------------------------------------------------
@register_extractor("fortunes", options={"separator": "%"})
def extract_fortunes(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """fortune(6) files: one piece per fortune (separated by lines holding just ``%``)."""
    text = decode_text(read_maybe_gz(path))
    sep = opts["separator"]
    cur: list[str] = []
    k = 0
    for line in text.split("\n") + [sep]:
        if line.rstrip() == sep:
            body = tidy("\n".join(cur))
            if body:
                yield Piece(str(k), body)
            k += 1
            cur = []
        else:
            cur.append(line)


# --- Brown corpus -----------------------------------------------------------------------------------
def _detokenize(tokens: list[str]) -> str:
    s = " ".join(tokens)
    s = s.replace("``", "\u201c").replace("''", "\u201d")
    s = re.sub(r"\u201c\s+", "\u201c", s)
    s = re.sub(r"\s+\u201d", "\u201d", s)
    s = re.sub(r"\s+([,.;:!?%)\]}])", r"\1", s)
    s = re.sub(r"([(\[{$])\s+", r"\1", s)
    s = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    s = re.sub(r"\s+--\s+", " -- ", s)
    return s


@register_extractor("brown", options={})
def extract_brown(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """Brown corpus files (``word/tag`` tokens): tags removed, text detokenized, paragraphs kept."""
    paras: list[str] = []
    cur: list[str] = []
    for line in decode_text(path.read_bytes()).split("\n"):
        if not line.strip():
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        tokens: list[str] = []
        for t in line.split():
            w = t.rsplit("/", 1)[0] if "/" in t else t
            if not (w == ";" and tokens and tokens[-1] == ";"):  # the package doubles semicolons
                tokens.append(w)
        cur.append(_detokenize(tokens))
    if cur:
        paras.append(" ".join(cur))
    if not paras:
        raise SkipFile("no tagged text")
    yield Piece(None, "\n\n".join(paras))
