"""Numbers for people: counts (``1.23M``), byte sizes (``4.5 MB``), durations (``4m05s``), table cells.

    format_count(409600)                 '410K'    (model cards, reports, tables)
    format_count(1.5e6, spec=".2f", units="kMG")   '1.50M'   (the training console)
    format_bytes(2_500_000)              '2.5 MB'
    format_seconds(125)                  '2m05s'   style="clock": '2:05', style="words": '2 min 05 s'
    format_number(0.12345)               '0.1235'  None -> '-'

Where lmforge's outputs differ in detail (the console, model cards, reports), a parameter selects
the style, so each keeps the text it has always shown. Nothing here imports lmforge.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = ["format_bytes", "format_count", "format_number", "format_seconds"]

_THOUSANDS = (1e3, 1e6, 1e9, 1e12)


def format_count(n: float | None, *, spec: str = ".3g", units: str = "KMBT") -> str:
    """1234 -> '1.23K', 409600 -> '410K', 2.1e12 -> '2.1T'; below a thousand the number itself
    (a float rounded to an integer); None -> '-'.

    ``spec`` formats the scaled number (``.3g``: 3 significant digits; ``.2f``: '1.23M');
    ``units`` are the suffixes of 1e3, 1e6, 1e9, 1e12 in order (fewer letters: no larger unit)."""
    if n is None:
        return "-"
    for unit, mult in reversed(list(zip(units, _THOUSANDS))):
        if abs(n) >= mult:
            return f"{n / mult:{spec}}{unit}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


def format_bytes(n: float | None, *, megabytes: bool = False) -> str:
    """A size in decimal units with one decimal: '512 B', '4.1 KB', '2.5 MB', '1.2 GB'; None -> '-'.
    ``megabytes``: in MB from 0.1 MB up, else in KB ('0.2 MB', '50.0 KB'), as the quickstart reports."""
    if n is None:
        return "-"
    if megabytes:
        return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"
    for unit, mult in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(seconds: float, *, style: Literal["short", "clock", "words"] = "short") -> str:
    """A duration:

    ``short`` (stage logs)   '12.3s' below a minute, '4m05s' above
    ``clock`` (ETAs)         '4:05', '1:04:05' (whole seconds, truncated); '?' when not finite
    ``words`` (model cards)  '4.2 s' below 10 s, '42 s', '4 min 05 s', '1 h 04 min'
    """
    if style == "clock":
        if not math.isfinite(seconds):
            return "?"
        h, rem = divmod(int(seconds), 3600)
        m, s = divmod(rem, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    if style == "words":
        if seconds < 10:
            return f"{seconds:.1f} s"
        h, rem = divmod(int(round(seconds)), 3600)
        m, s = divmod(rem, 60)
        if h:
            return f"{h} h {m:02d} min"
        return f"{m} min {s:02d} s" if m else f"{s} s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def format_number(x: Any, spec: str = ".4f") -> str:
    """A table cell: a number formatted with ``spec``, None as '-', anything else as its text."""
    if x is None:
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)
