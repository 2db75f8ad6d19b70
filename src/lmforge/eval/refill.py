"""Continuous batching on lmforge's KV cache: a row that finishes is replaced by a waiting prompt.

A batch of fixed rows runs as many steps as its longest-running row while finished rows idle, and
evaluation mixes rows that stop after five tokens with rows that use their whole budget. Here up to
``batch_size`` rows decode together; when a quarter of the slots are free, the next prompts (the
queue is sorted longest first) are prefilled together and written into the free slots, so the step
count follows the total number of new tokens, not the longest row of every batch.

The cache layout makes this cheap. All rows write their next token into the same column ``t``, each
row's keys are contiguous and end at ``t`` (left padding before them is masked), so a new prompt of
``n`` tokens is copied into columns ``[t - n, t)`` of its slot (the queue is sorted, so ``n`` never
exceeds ``t``) and its RoPE positions are its own (0..n-1), whatever the column. When the cache runs
out of columns, the last ``W`` columns -- every live row's keys -- are moved to the front of a new
cache with room for the longest budget again: one copy, rarely.

Text: each row goes through :class:`lmforge.generate.RowText` (incremental detokenisation, its own
stop sequences) and stops at EOS, a stop sequence or its budget. Sampled rows draw from their own
generator, so a row's tokens do not depend on its neighbours (greedy rows: up to float rounding in
the masked attention, ~1e-6, far below the gaps greedy decoding decides on).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from lmforge.generate import RowText
from lmforge.generate.config import GenerationConfig
from lmforge.generate.decode import MIN_ROWS
from lmforge.generate.sampling import choose_next, mask_padded_vocab

__all__ = ["PREFILL_ROWS", "refill_decode"]

# Prompts are prefilled in length-sorted buckets of at most this many: one prefill of a whole large
# batch would pad every prompt to the longest (the queue is sorted, so a bucket's prompts are alike).
PREFILL_ROWS = 16


class _Row:
    __slots__ = ("index", "budget", "text", "parts", "tokens", "finish", "generator")

    def __init__(self, index: int, budget: int, text: RowText, generator: torch.Generator | None):
        self.index, self.budget, self.text, self.generator = index, budget, text, generator
        self.parts: list[str] = []
        self.tokens = 0
        self.finish = "length"


def _compact(cache, keep_from: int, room: int):
    """A new cache holding columns ``[keep_from, cache.length)`` of ``cache`` at the front, with
    ``room`` columns after them."""
    width = cache.length - keep_from
    new = type(cache)(cache.k.shape[0], cache.k.shape[1], cache.k.shape[2], width + room, cache.k.shape[4],
                      dtype=cache.k.dtype, device=cache.k.device)
    new.k[:, :, :, :width] = cache.k[:, :, :, keep_from : cache.length]
    new.v[:, :, :, :width] = cache.v[:, :, :, keep_from : cache.length]
    new.key_mask[:, :width] = cache.key_mask[:, keep_from : cache.length]
    new.length, new.has_padding = width, True
    return new


@torch.inference_mode()
def refill_decode(
    model: torch.nn.Module,
    tokenizer: Any,
    ids: Sequence[list[int]],
    budgets: Sequence[int],
    stops: Sequence[Sequence[str]],
    *,
    batch_size: int,
    gen: GenerationConfig,
    seeds: Sequence[int] | None,
    vocab_size: int,
    on_done: Callable[[int], None] | None = None,
) -> list[tuple[str, int, str]]:
    """(text, new tokens, finish) for every prompt ``ids[i]`` (all with the sampling settings of
    ``gen``; ``seeds``: each prompt's own generator when sampling)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    eos_ids = {int(eos)} if eos is not None else set()
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = int(pad if pad is not None else (eos if eos is not None else 0))
    device = next(model.parameters()).device
    queue = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), ids[i], i))
    results: dict[int, tuple[str, int, str]] = {}
    for i in [i for i in queue if budgets[i] == 0]:
        results[i] = ("", 0, "length")
    queue = [i for i in queue if budgets[i] > 0]
    room = max(budgets, default=0) + 1
    slots: list[_Row | None] = []
    cache = None
    positions = torch.zeros(0, dtype=torch.long, device=device)
    pending = torch.zeros(0, dtype=torch.long, device=device)  # each slot's next input token

    def choose(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        scores = mask_padded_vocab(logits.float().clone(), vocab_size)
        if not gen.do_sample:
            return scores.argmax(dim=-1)
        return torch.cat([choose_next(scores[j : j + 1], gen, r.generator) for j, r in enumerate(rows)])

    def admit(new: list[int], free: list[int]) -> None:
        """Prefill prompts ``new`` in length buckets of PREFILL_ROWS and place them in slots ``free``."""
        for k in range(0, len(new), PREFILL_ROWS):
            admit_bucket(new[k : k + PREFILL_ROWS], free[k : k + PREFILL_ROWS])

    def admit_bucket(new: list[int], free: list[int]) -> None:
        nonlocal cache, positions, pending
        L = max(len(ids[i]) for i in new)
        batch = torch.full((len(new), L), pad, dtype=torch.long)
        mask = torch.zeros(len(new), L, dtype=torch.bool)
        for j, i in enumerate(new):
            batch[j, L - len(ids[i]) :] = torch.tensor(ids[i])
            mask[j, L - len(ids[i]) :] = True
        tmp = model.new_cache(len(new), L)
        padded = not bool(mask.all())
        h = model(batch.to(device), attention_mask=mask.to(device) if padded else None, cache=tmp, return_hidden=True)
        rows = []
        for i in new:
            g = torch.Generator(device=device).manual_seed(int(seeds[i])) if gen.do_sample and seeds is not None else None
            rows.append(_Row(i, budgets[i], RowText(tokenizer, list(ids[i]), stops[i]), g))
        first = choose(model.output(h[:, -1:])[:, 0], rows)
        if cache is None:  # the first bucket: the longest prompts set the cache's first columns
            cache = model.new_cache(n_slots, L + room)
            cache.k[:, : len(new), :, :L] = tmp.k[:, :, :, :L]
            cache.v[:, : len(new), :, :L] = tmp.v[:, :, :, :L]
            cache.key_mask[:, :L] = False
            cache.key_mask[: len(new), :L] = tmp.key_mask[:, :L]
            cache.length, cache.has_padding = L, True
            slots[:] = rows + [None] * (n_slots - len(new))
            positions = torch.zeros(n_slots, dtype=torch.long, device=device)
            positions[: len(new)] = torch.tensor([len(ids[i]) for i in new], device=device)
            pending = torch.full((n_slots,), pad, dtype=torch.long, device=device)
            pending[: len(new)] = first
        else:
            need = max(budgets[i] for i in new)
            if cache.length + need >= cache.max_len:  # out of columns: keep the live rows' columns, make room
                live = [s for s in range(len(slots)) if slots[s] is not None and s not in free]
                span = max([int(positions[s]) for s in live] + [L])
                cache = _compact(cache, cache.length - span, room + need)
            t = cache.length
            for j, (i, s) in enumerate(zip(new, free)):
                n = len(ids[i])
                cache.k[:, s, :, t - L : t] = tmp.k[:, j, :, :L]
                cache.v[:, s, :, t - L : t] = tmp.v[:, j, :, :L]
                cache.key_mask[s, :] = False
                cache.key_mask[s, t - n : t] = True
                cache.key_mask[s, t:] = True
                slots[s] = rows[j]
                positions[s] = n
                pending[s] = first[j]
            cache.has_padding = True
        for j, r in enumerate(rows):
            _take(r, int(first[j]))

    def _take(r: _Row, token: int) -> None:
        r.tokens += 1
        if token in eos_ids:
            r.parts.append(r.text.close())
            r.finish = "eos"
        else:
            r.parts.append(r.text.add(token))
            if r.text.stopped:
                r.finish = "stop"
                r.parts.append(r.text.close())

    def finished(r: _Row) -> bool:
        return r.finish != "length" or r.tokens >= r.budget

    def retire() -> list[int]:
        free = []
        for s, r in enumerate(slots):
            if r is not None and finished(r):
                r.parts.append(r.text.close())
                results[r.index] = ("".join(r.parts), min(r.tokens, r.budget), r.finish)
                if on_done:
                    on_done(r.index)
                slots[s] = None
            if slots[s] is None:
                free.append(s)
        return free

    n_slots = min(batch_size, len(queue))
    if queue:
        admit(queue[:n_slots], list(range(n_slots)))
        queue = queue[n_slots:]
    while True:
        free = retire()
        if queue and len(free) >= max(1, len(slots) // 4):
            k = min(len(free), len(queue))
            admit(queue[:k], free[:k])
            queue = queue[k:]
            free = retire()
        live = [s for s, r in enumerate(slots) if r is not None]
        if not live:
            break
        if not queue and len(live) < len(slots) and len(slots) - len(live) >= max(1, len(slots) // 4) and len(slots) > MIN_ROWS:
            keep = live if len(live) >= MIN_ROWS else sorted(live + free[: MIN_ROWS - len(live)])  # small products are slow
            index = torch.tensor(keep, device=device)
            cache.reorder(index)
            positions, pending = positions[index], pending[index]
            slots[:] = [slots[s] for s in keep]
        if cache.length + 1 > cache.max_len:
            span = int(positions.max())
            cache = _compact(cache, cache.length - span, room)
        S = cache.length + 1
        h = model(pending[:, None], attention_mask=torch.ones(len(slots), S, dtype=torch.bool, device=device),
                  position_ids=positions[:, None], cache=cache, return_hidden=True)
        positions = positions + 1
        rows = [r for r in slots]
        active = [j for j, r in enumerate(rows) if r is not None]
        # only live rows reach the vocabulary projection (most of a small model's step), at least
        # MIN_ROWS of them (a 2-3-row product is slower than a 4-row one)
        extra = [j for j in range(len(rows)) if rows[j] is None][: max(0, MIN_ROWS - len(active))]
        index = torch.tensor(active, device=device)
        logits = model.output(h[torch.tensor(active + extra, device=device)])[: len(active), 0]
        nxt = choose(logits, [rows[j] for j in active])
        pending = pending.clone()
        pending[index] = nxt
        for j, tok in zip(active, nxt.tolist()):
            _take(rows[j], tok)
    return [results[i] for i in range(len(ids))]


