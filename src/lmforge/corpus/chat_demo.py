"""A small real SFT/DPO set from dictionary text, for trying adaptation on a laptop.

``lmforge data chat-demo --documents DIR --out OUT`` reads documents holding dictionary lines in
the form the quickstart's WordNet source writes (``words (part of speech): gloss; "example"``) and
writes

    OUT/sft/train.jsonl, OUT/sft/heldout.jsonl    {"messages": [user asks what a word means, assistant defines it]}
    OUT/dpo/train.jsonl, OUT/dpo/heldout.jsonl    {"chosen": [... the right definition], "rejected": [... another word's]}
    OUT/summary.json                              counts, sources, the split rule

Held-out words are chosen by a hash of the word (about 10%), so no held-out word appears in any
training conversation. The rejected answer of a pair is the definition of a different word with the
same part of speech: the preference is "define the word that was asked about".
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Sequence

from lmforge.config import atomic_write_text
from lmforge.data.documents import Accounting, DataError, list_shards, read_documents

__all__ = ["build_chat_demo", "parse_definitions"]

_LINE = re.compile(r"^(?P<words>[^():\n]{1,80}) \((?P<pos>noun|verb|adjective|adverb)\): (?P<gloss>[^\n]+)$")
_ASK = ('What does "{w}" mean?', 'Define the {pos} "{w}".', 'What is the meaning of the word "{w}"?', 'Explain "{w}" in one sentence.')


def parse_definitions(text: str) -> list[tuple[str, str, str]]:
    """(word, part of speech, gloss) for every dictionary line of ``text``; the gloss stops before
    its first example (WordNet puts quoted examples after a semicolon)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        word = m["words"].split(",")[0].strip().replace("_", " ")
        gloss = m["gloss"].split('; "')[0].split(";")[0].strip().rstrip(".")
        if word and 3 <= len(gloss) <= 200 and word.isascii():
            out.append((word, m["pos"], gloss))
    return out


def _heldout(word: str, fraction: float) -> bool:
    return int(hashlib.sha256(word.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def _answer(word: str, pos: str, gloss: str) -> str:
    return f'"{word}" ({pos}) means {gloss}.'


def build_chat_demo(
    documents: Sequence[str],
    out: str | Path,
    *,
    max_sft: int = 3000,
    max_pairs: int = 1500,
    heldout_fraction: float = 0.1,
    seed: int = 0,
) -> dict:
    """Write the demo set (see the module doc); returns the summary."""
    acct = Accounting()
    entries: dict[str, tuple[str, str, str]] = {}
    files = list_shards(documents)
    if not files:
        raise DataError(f"no document files in {', '.join(map(str, documents))}")
    for f in files:
        for doc in read_documents(f, acct):
            acct.keep()
            for word, pos, gloss in parse_definitions(doc.text):
                entries.setdefault(word, (word, pos, gloss))
    if len(entries) < 20:
        raise DataError(
            f"found {len(entries)} dictionary lines ('word (noun): gloss') in {', '.join(map(str, documents))}; "
            "point --documents at the quickstart's corpus/documents/encyclopedic"
        )
    rng = random.Random(seed)
    words = sorted(entries)
    rng.shuffle(words)
    split = {"train": [w for w in words if not _heldout(w, heldout_fraction)], "heldout": [w for w in words if _heldout(w, heldout_fraction)]}
    by_pos: dict[str, list[str]] = {}
    for w in words:
        by_pos.setdefault(entries[w][1], []).append(w)
    out = Path(out)
    counts = {}
    for name, ws in split.items():
        share = 1.0 if name == "train" else heldout_fraction
        n_sft = min(len(ws), max(1, int(max_sft * share)))
        n_dpo = min(len(ws), max(1, int(max_pairs * share)))
        sft, dpo = [], []
        for w in ws[:n_sft]:
            word, pos, gloss = entries[w]
            q = rng.choice(_ASK).format(w=word, pos=pos)
            sft.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": _answer(word, pos, gloss)}], "source": "wordnet"})
        for w in ws[-n_dpo:]:  # the other end of the list: pairs mostly ask about other words than the SFT set
            word, pos, gloss = entries[w]
            other = rng.choice([o for o in by_pos[pos] if o != w] or [o for o in words if o != w])
            q = rng.choice(_ASK).format(w=word, pos=pos)
            prompt = [{"role": "user", "content": q}]
            dpo.append({
                "chosen": prompt + [{"role": "assistant", "content": _answer(word, pos, gloss)}],
                "rejected": prompt + [{"role": "assistant", "content": _answer(word, pos, entries[other][2])}],
                "source": "wordnet",
            })
        for kind, rows in (("sft", sft), ("dpo", dpo)):
            (out / kind).mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / kind / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            counts[f"{kind}/{name}"] = len(rows)
    summary = {
        "documents": acct.to_json(),
        "definitions": len(entries),
        "files": counts,
        "heldout_rule": f"sha256(word) < {heldout_fraction} of the range: no held-out word is in any training file",
        "sources": [str(f) for f in files],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
