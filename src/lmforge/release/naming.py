"""Revision names, as OLMo names its checkpoints: ``step{N}-tokens{M}{unit}``.

    revision_name(200, 409_600)          # 'step200-tokens410K'
    parse_revision("step200-tokens410K") # (200, 410_000); None for 'main' and other names
    parse_checkpoint_name("stage1-step1000-tokens5B")  # (1000, 5_000_000_000): any name with stepN / tokensM

N is the optimizer step; M is the tokens seen in one unit for the whole release (``unit="auto"``: the
largest of B, M, K in which the final checkpoint's count is at least 10, so M reads as a short
integer: 409,600 -> ``410K``; below 10,000 tokens no unit), rounded half up (:func:`format_tokens`).
OLMo uses B throughout (``unit="B"``: 2.1e12 -> ``2100B``). Units are decimal.

This module imports nothing heavy: evaluation and the quickstart read revision names with it.
"""

from __future__ import annotations

import math
import re

__all__ = ["TOKEN_UNITS", "auto_token_unit", "format_tokens", "parse_checkpoint_name", "parse_revision", "revision_name"]

TOKEN_UNITS = {"B": 10**9, "M": 10**6, "K": 10**3}
_REVISION = re.compile(r"^step(\d+)-tokens(\d+)([KMB]?)$")
# Lenient: names that carry a step and tokens anywhere (stage1-step1000-tokens5B, step20-tokens2.5M).
_STEP = re.compile(r"step(\d+)")
_TOKENS = re.compile(r"tokens(\d+(?:\.\d+)?)([KMBT]?)(?![A-Za-z0-9])", re.IGNORECASE)
_ANY_UNIT = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def auto_token_unit(tokens: int) -> str:
    """The largest unit (B, M, K) in which ``tokens`` is at least 10; '' below 10,000."""
    for unit, mult in TOKEN_UNITS.items():
        if tokens >= 10 * mult:
            return unit
    return ""


def format_tokens(tokens: int, unit: str = "auto") -> str:
    """``tokens`` as OLMo's revision names write it: an integer, rounded half up, and a unit.

    409_600 -> '410K' (auto), 2_100_000_000_000 -> '2100B' (auto or 'B'), 4_194_304 with 'B' -> '0B'
    (OLMo's ``step0-tokens0B``), 4096 -> '4096' (auto: no unit below 10,000)."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    u = auto_token_unit(tokens) if unit == "auto" else unit.upper()
    if u and u not in TOKEN_UNITS:
        raise ValueError(f"token unit must be 'auto', 'B', 'M', 'K' or '', got {unit!r}")
    if not u:
        return str(int(tokens))
    return f"{math.floor(tokens / TOKEN_UNITS[u] + 0.5)}{u}"


def revision_name(step: int, tokens_seen: int, unit: str = "auto") -> str:
    """``step{N}-tokens{M}{unit}``: ``revision_name(200, 409_600)`` -> 'step200-tokens410K'."""
    return f"step{step}-tokens{format_tokens(tokens_seen, unit)}"


def parse_revision(name: str) -> tuple[int, int] | None:
    """(step, approximate tokens) of a revision name, or None for other names (main, ...)."""
    m = _REVISION.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) * TOKEN_UNITS.get(m.group(3), 1)


def parse_checkpoint_name(name: str) -> tuple[int | None, int | None]:
    """``(step, tokens)`` from a directory name, each None when absent: ``step0001000`` -> (1000, None);
    OLMo revisions ``step1000-tokens4B`` -> (1000, 4_000_000_000), ``stage1-step1000-tokens5B``,
    ``step8-tokens4096``, ``step20-tokens2.5M`` (decimals, a T unit, any case)."""
    m = _STEP.search(name)
    step = int(m.group(1)) if m else None
    t = _TOKENS.search(name)
    tokens = None
    if t:
        tokens = int(round(float(t.group(1)) * _ANY_UNIT[t.group(2).upper()]))
    return step, tokens
