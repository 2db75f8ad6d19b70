"""Regular-expression PII detection: e-mail addresses, phone numbers, IPv4 addresses.

The same kind of detector as Dolma's ``pii_regex`` taggers and the PII step of many web corpora
(e.g. Gopher, Rae et al. 2021, and C4-derived sets); the expressions here are our own."""

from __future__ import annotations

import re

from lmforge.data.documents import Document
from lmforge.corpus.taggers.base import Spans, Tagger, doc_span, register

# E-mail: found from the '@' (a literal the regex engine scans for quickly), then the local part is
# read backwards from it; at most 64 characters (RFC 5321) preceded by a character that cannot be in it.
_EMAIL_DOMAIN_RE = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")
_EMAIL_LOCAL_RE = re.compile(r"[\w.%+-]{1,64}\Z")
_EMAIL_LOCAL_CHAR_RE = re.compile(r"[\w.%+-]")

_SEP = r"[-. ]"
PHONE_RE = re.compile(
    r"(?<![\w+.-])(?:"
    # US/NANP: optional +1, area code with or without parentheses, separators required
    r"(?:\+?1" + _SEP + r"?)?(?:\(\d{3}\)[ ]?|\d{3}" + _SEP + r")\d{3}" + _SEP + r"\d{4}"
    r"|"
    # international: +CC, an optional parenthesised group, 1-5 more groups; 8-15 digits (checked after)
    r"\+\d{1,3}(?:" + _SEP + r"?\(\d{1,4}\))?(?:" + _SEP + r"\d{1,6}){1,5}"
    r")(?![\w-])"
)
# every phone number lies inside a run of these characters at least 10 long: PHONE_RE (slow to scan
# with) only runs inside such runs (the look-behind still sees the text before the run)
_PHONE_RUN_RE = re.compile(r"[\d(+][\d\-. ()+]{9,}")
_DIGITS_RE = re.compile(r"\d")
# IPv4: found from its first dot (a literal, scanned for fast), ".B.C.D", then the first octet is read
# backwards; octets (0-255, no leading zero) are checked after. Equivalent to
# (?<![\w.])A\.B\.C\.D(?!\w|\.\d) with A..D one to three digits.
_IPV4_TAIL_RE = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")
_IPV4_HEAD_RE = re.compile(r"(?<![\w.])\d{1,3}\Z")


def find_emails(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    if "@" not in text:
        return out
    last_end = 0
    for m in _EMAIL_DOMAIN_RE.finditer(text):
        at = m.start()
        local = _EMAIL_LOCAL_RE.search(text, max(last_end, at - 64), at)
        if local is None:
            continue
        start = local.start()
        if start > 0 and _EMAIL_LOCAL_CHAR_RE.match(text, start - 1):
            continue  # local part longer than 64 characters, or overlapping the previous address
        out.append((start, m.end()))
        last_end = m.end()
    return out


def find_phones(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for run in _PHONE_RUN_RE.finditer(text):
        for m in PHONE_RE.finditer(text, run.start(), run.end() + 1):  # +1: the look-ahead sees past the run
            if 8 <= len(_DIGITS_RE.findall(m.group())) <= 15:
                out.append(m.span())
    return out


def _valid_octet(o: str) -> bool:
    return int(o) <= 255 and (len(o) == 1 or o[0] != "0")


def find_ipv4(text: str) -> list[tuple[int, int]]:
    if "." not in text:
        return []
    out = []
    for m in _IPV4_TAIL_RE.finditer(text):
        dot = m.start()
        head = _IPV4_HEAD_RE.search(text, max(0, dot - 3), dot)  # the look-behind sees before pos
        if head is not None and all(map(_valid_octet, text[head.start() : m.end()].split("."))):
            out.append((head.start(), m.end()))
    return out


@register("pii")
class PII(Tagger):
    """Spans for ``email``, ``phone`` (US forms like ``(555) 123-4567``, ``555-123-4567``,
    ``+1 555 123 4567`` and international ``+CC`` forms with 8-15 digits) and ``ip`` (IPv4 with every
    octet 0-255, no leading zeros), each with score 1.0; document-level ``email_count``,
    ``phone_count``, ``ip_count``."""

    def tag(self, doc: Document) -> dict[str, Spans]:
        text = doc.text
        email = [[s, e, 1.0] for s, e in find_emails(text)]
        phone = [[s, e, 1.0] for s, e in find_phones(text)]
        ip = [[s, e, 1.0] for s, e in find_ipv4(text)]
        return {
            "email": email,
            "phone": phone,
            "ip": ip,
            "email_count": doc_span(text, len(email)),
            "phone_count": doc_span(text, len(phone)),
            "ip_count": doc_span(text, len(ip)),
        }
