"""The extractor of SWORD Bible and commentary modules (zText / zCom): OSIS markup to text."""

from __future__ import annotations

import html
import re
import struct
import zlib
from pathlib import Path
from typing import Iterator

from lmforge.corpus.extractors.registry import Piece, SkipFile, decode_text, register_extractor, tidy

__all__ = ["extract_sword", "osis_to_text"]


# --- SWORD modules (zText / zCom) -------------------------------------------------------------------
_OSIS_NOTE = re.compile(r"<note\b[^>]*?(?:/>|>.*?</note>)", re.DOTALL)
_OSIS_PARA = re.compile(r"<(?:div|milestone)\b[^>]*type=\"x-p\"[^>]*/>|<lb\b[^>]*/>|<p\b[^>]*>|</p>")
_OSIS_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_BOOK = re.compile(r"<div\b[^>]*\btype=\"book\"[^>]*>")
_CHAPTER = re.compile(r"<chapter\b[^>]*?\bosisID=\"([^\"]+)\"[^>]*>")  # start tags; end milestones carry only eID


def osis_to_text(s: str) -> str:
    s = _OSIS_NOTE.sub("", s)
    s = _OSIS_TITLE.sub(lambda m: "\n\n" + m.group(1) + "\n\n", s)
    s = _OSIS_PARA.sub("\n\n", s)
    s = _TAG.sub("", s)
    s = html.unescape(s).replace("\u00b6", "")
    s = re.sub(r"[ \t]+", " ", s)
    return tidy("\n".join(line.strip() for line in s.split("\n")))


def _sword_entries(base: Path, ext: str) -> Iterator[bytes]:
    """Entries of a zText/zCom testament in index order (base: ``ot``/``nt`` path without suffix)."""
    s, z, v = (base.with_name(f"{base.name}.{ext}{c}") for c in "szv")
    for p in (s, z, v):
        if not p.is_file():
            raise SkipFile(f"SWORD module file {p.name} missing")
    bs, bz, bv = s.read_bytes(), z.read_bytes(), v.read_bytes()
    blocks: dict[int, bytes] = {}
    seen: set[tuple[int, int, int]] = set()
    for i in range(0, len(bv) - 9, 10):
        block, off, size = struct.unpack("<IIH", bv[i : i + 10])
        if size == 0 or (block, off, size) in seen:  # linked entries (a comment on a verse range) share one record
            continue
        seen.add((block, off, size))
        if block not in blocks:
            if 12 * block + 12 > len(bs):
                raise SkipFile("SWORD index points past the block table")
            boff, bsize, _ = struct.unpack("<III", bs[12 * block : 12 * block + 12])
            try:
                blocks[block] = zlib.decompress(bz[boff : boff + bsize])
            except zlib.error:
                raise SkipFile("corrupt SWORD block") from None
        yield blocks[block][off : off + size]


@register_extractor("sword", options={"split": "chapter"}, companions=("**/*.bzz", "**/*.bzv", "**/*.czz", "**/*.czv"))
def extract_sword(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """SWORD zText/zCom modules (select the ``*.bzs`` files): OSIS to text, notes dropped,
    one piece per chapter (``split: chapter``) or per entry (``split: entry``)."""
    ext = path.suffix[1:3]  # .bzs -> bz (zText, zCom), .czs -> cz
    base = path.with_suffix("")
    entries = (decode_text(e) for e in _sword_entries(base, ext))
    if opts["split"] == "entry":
        for i, e in enumerate(entries):
            t = osis_to_text(e)
            if t:
                yield Piece(str(i), t)
        return
    if opts["split"] != "chapter":
        raise ValueError(f"sword: split must be 'chapter' or 'entry', got {opts['split']!r}")
    stream = " ".join(entries)
    marks = list(_CHAPTER.finditer(stream))
    if not marks:  # commentaries often carry no chapter milestones: one piece per entry instead
        yield from extract_sword(path, rel, {**opts, "split": "entry"})
        return
    # a chapter runs to the next chapter, or to the next book's opening (its title starts the next chapter)
    books = [b.start() for b in _BOOK.finditer(stream)]
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(stream)
        opening = [b for b in books if m.end() <= b < end]
        prev_end = marks[k - 1].end() if k else 0
        before = [b for b in books if prev_end <= b < m.start()]
        start = before[-1] if before else m.end()
        text = osis_to_text(stream[start : opening[0] if opening else end])
        if text:
            ref = m.group(1)
            book, _, chap = ref.rpartition(".")
            yield Piece(ref, f"{book} {chap}\n\n{text}" if book else text, {"ref": ref})
