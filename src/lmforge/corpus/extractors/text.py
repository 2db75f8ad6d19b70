"""Extractors of documents written for people: plain text, source code, reStructuredText, HTML, man pages."""

from __future__ import annotations

import html
import html.parser
import re
from pathlib import Path
from typing import Iterator

from lmforge.corpus.extractors.registry import Piece, SkipFile, decode_text, read_maybe_gz, register_extractor, tidy

__all__ = ["extract_code", "extract_html", "extract_man", "extract_plain", "extract_rst", "html_to_text", "roff_to_text", "rst_to_text"]


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
