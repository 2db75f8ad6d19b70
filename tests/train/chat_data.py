"""Small generated conversations for the SFT/DPO tests: a toy world of objects and their colours.

SFT conversations ask for an object's colour (sometimes after a system turn, sometimes two
rounds); the answer follows one pattern, so a tiny model learns it in a few dozen steps. DPO pairs
share the question; the chosen answer states the colour in that pattern, the rejected one evades.
That preference carries over to objects never seen in training, which is what held-out pairs test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OBJECTS = [f"{a} {b}" for a in ("red", "tall", "old", "small", "round", "quiet", "bright", "heavy") for b in ("lamp", "chair", "door", "kettle", "clock", "boat", "stone", "drum")]
COLOURS = ("green", "blue", "white", "black", "yellow", "purple")
SYSTEMS = ("You answer in one sentence.", "Be helpful and brief.")


def colour(obj: str) -> str:
    return COLOURS[sum(map(ord, obj)) % len(COLOURS)]


def _ask(obj: str, rng: random.Random) -> str:
    return rng.choice(("What colour is the {}?", "Tell me the colour of the {}.", "Which colour does the {} have?")).format(obj)


def _answer(obj: str) -> str:
    return f"The {obj} is {colour(obj)}."


def sft_rows(objects, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        obj = rng.choice(objects)
        msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.3 else []
        msgs += [{"role": "user", "content": _ask(obj, rng)}, {"role": "assistant", "content": _answer(obj)}]
        if rng.random() < 0.3:
            other = rng.choice(objects)
            msgs += [{"role": "user", "content": _ask(other, rng)}, {"role": "assistant", "content": _answer(other)}]
        rows.append({"messages": msgs})
    return rows


def dpo_rows(objects, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        obj = rng.choice(objects)
        prompt = [{"role": "user", "content": _ask(obj, rng)}]
        rejected = rng.choice(("I do not know.", "Colours are hard to say.", "No idea, sorry."))
        rows.append({"chosen": prompt + [{"role": "assistant", "content": _answer(obj)}], "rejected": prompt + [{"role": "assistant", "content": rejected}]})
    return rows


def write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TRAIN_OBJECTS = OBJECTS[:48]
HELDOUT_OBJECTS = OBJECTS[48:]
