"""Credentials out of what is recorded: manifests, request records, command lines, error messages.

    redact_secrets({"pip_args": ["--index-url", "https://me:tok@host/simple"]})
    -> {"pip_args": ["--index-url", "https://***@host/simple"]}

Recursive over dicts, lists and tuples; strings are rewritten, other values kept. What goes:

* a URL's userinfo: ``scheme://user:pass@host`` -> ``scheme://***@host``
* query parameters named like a secret (token, key, secret, password, auth, signature, credential):
  ``?token=abc`` -> ``?token=***``
* the value after an option named like one (``--password X``, ``--token=X``, ``--api-key X``), as
  separate list items or inside one string; the value of an ``Authorization:`` header, ``Bearer X``
* a dict value whose key is named like one (``{"password": "x"}``)

Used by ``lmforge data fetch`` on everything it writes and by ``lmforge release`` on what it copies.
Imports nothing from lmforge.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "redact_secrets", "redact_text"]

MASK = "***"

_WORDS = r"token|secret|passw(?:or)?d|pwd|auth(?:orization|entication)?|api[_-]?key|access[_-]?key|private[_-]?key|signature|credentials?"
_WORD = "(?:" + _WORDS + ")"
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@?#'\"]+@")
_QUERY = re.compile(r"([?&;][^=&\s#'\"]*?(?:" + _WORDS + r"|key|sig)[^=&\s#'\"]*=)[^&\s#'\"]*", re.IGNORECASE)
_OPTION = re.compile(r"^--?[A-Za-z0-9_-]*" + _WORD + r"[A-Za-z0-9_-]*$", re.IGNORECASE)
_OPTION_INLINE = re.compile(r"((?:^|\s)--?[A-Za-z0-9_-]*" + _WORD + r"[A-Za-z0-9_-]*)(=|\s+)(?!\*\*\*)[^\s'\"]+", re.IGNORECASE)
_HEADER = re.compile(r"((?:Proxy-)?Authorization\s*[:=]\s*(?:(?:Bearer|Basic|Token|Digest)\s+)?|\bBearer\s+)[^\s'\"),;]+", re.IGNORECASE)
_KEY = re.compile(r"^(?:\w*[_-])?" + _WORD + r"(?:[_-]\w*)?$", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with URL credentials, secret query parameters and secret option values masked."""
    text = _USERINFO.sub(r"\1" + MASK + "@", text)
    text = _QUERY.sub(r"\1" + MASK, text)
    text = _OPTION_INLINE.sub(r"\1\2" + MASK, text)
    return _HEADER.sub(r"\1" + MASK, text)


def _redact_list(items: list | tuple) -> list:
    out: list = []
    mask_next = False
    for item in items:
        if mask_next and isinstance(item, str):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = isinstance(item, str) and bool(_OPTION.match(item))
        out.append(redact_secrets(item))
    return out


def redact_secrets(obj: Any) -> Any:
    """A copy of ``obj`` with credentials masked (see the module docstring)."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and isinstance(v, str) and v and _KEY.match(k) else redact_secrets(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return _redact_list(obj)
    return obj
