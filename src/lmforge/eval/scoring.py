"""Log-likelihood scoring: ``score_requests(model, tokenizer, requests) -> [LoglikelihoodScore]``.

What one request's score is (identical to lm-evaluation-harness's HF backend, ``HFLM``):

    ctx, cont  = token ids of the context and of the continuation (see *Tokenisation* below)
    inp        = (ctx + cont)[-(max_length + 1):][:-1]      left-truncated to the model's length
    logprob    = sum over the last len(cont) positions of log_softmax(logits)[next token]
    is_greedy  = every continuation token is the argmax at its position

The log-softmax is over the model's whole (padded) output vocabulary, as HF's logits are.

Tokenisation (the one known difference between olmo_eval and lm-eval, ``tokenization=``):

- ``"separate"`` (default; olmo_eval / OLMES style): ``ctx = encode(context)``,
  ``cont = encode(continuation)``. Continuations start with a space (``" Paris"``), so the space
  belongs to the continuation's first token.
- ``"joint"`` (lm-eval's ``_encode_pair``): trailing whitespace of the context is first moved onto
  the continuation, then ``whole = encode(context + continuation)``, ``ctx = encode(context)`` and
  ``cont = whole[len(ctx):]``. The two agree whenever the context does not end in whitespace and
  the BPE does not merge across the boundary; they differ e.g. for ``"Answer: "`` + ``"Paris"``:
  separate scores ``encode("Paris")``, joint scores ``encode(" Paris")`` (after ``"Answer:"``).

A context that encodes to no tokens (the empty string) is replaced by one *prefix token*, the
tokenizer's BOS when it has one and its EOS otherwise (lm-eval's ``prefix_token_id``; OLMo
tokenizers have no BOS). lm-eval would fail on a context of only whitespace in "joint" mode (it
encodes to nothing once the whitespace moves); here it gets the prefix token too. A continuation
with no tokens scores 0 with ``n_tokens=0`` (lm-eval fails on it).

Speed:

- requests are de-duplicated, sorted by total length (longest first, like lm-eval's Collator)
  and batched (``batch_size`` rows per forward);
- *shared prefix*: requests with the same context (the N choices of one question; all PMI requests
  of a task, whose context is "Answer:") run the context once, with a KV cache; the cache is then
  expanded over the choices and only their continuations (minus the last token) run, right-padded,
  in one pass or in a few passes of similar lengths when that saves padding. One-token
  continuations need no second pass at all. Requests that would be truncated, and contexts with a
  single continuation (WinoGrande's partial scoring), take the plain computation. The numbers are
  the plain computation's to float precision (tests/eval/test_scoring.py checks 1e-5);
- only the hidden states of scored positions go through the LM head (no (B, T, V) logits tensor).
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import torch

from lmforge.distributed import unwrap
from lmforge.eval.requests import LoglikelihoodRequest, LoglikelihoodScore, Tokenization
from lmforge.eval.spread import Spread

__all__ = ["score_requests", "encode_pair", "encode_requests", "prefix_token_id", "plain_batches", "run_plain_batch", "Tokenization"]


# --- tokenisation -------------------------------------------------------------------------------
def _encode_many(tokenizer: Any, texts: Sequence[str]) -> dict[str, list[int]]:
    """Encode the distinct strings of ``texts`` once (in parallel when the tokenizer can)."""
    uniq = list(dict.fromkeys(texts))
    if not uniq:
        return {}
    if hasattr(tokenizer, "encode_batch"):
        ids = tokenizer.encode_batch(uniq)
    else:
        ids = [tokenizer.encode(t) for t in uniq]
    return {t: list(i) for t, i in zip(uniq, ids)}


def prefix_token_id(tokenizer: Any) -> int:
    """The token an empty context becomes: BOS when the tokenizer has one, else EOS (lm-eval's
    ``prefix_token_id``; OLMo tokenizers have no BOS, so EOS, as in the data between documents)."""
    for attr in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    raise ValueError("an empty context is scored after the BOS/EOS token, but the tokenizer has neither")


def encode_requests(
    tokenizer: Any, requests: Sequence[LoglikelihoodRequest], tokenization: Tokenization = "separate"
) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) of every request; see the module docstring for the rules."""
    if tokenization not in ("separate", "joint"):
        raise ValueError(f"tokenization must be 'separate' or 'joint', got {tokenization!r}")
    out: list[tuple[list[int], list[int]]] = []
    if tokenization == "separate":
        enc = _encode_many(tokenizer, [r.context for r in requests] + [r.continuation for r in requests])
        for r in requests:
            out.append((enc[r.context], enc[r.continuation]))
    else:
        pairs = []
        for r in requests:
            ctx, cont = r.context, r.continuation
            if ctx:  # lm-eval's _encode_pair (an empty context goes straight to the prefix token)
                n_spaces = len(ctx) - len(ctx.rstrip())
                if n_spaces:
                    ctx, cont = ctx[:-n_spaces], ctx[-n_spaces:] + cont
            pairs.append((r.context, ctx, cont))
        enc = _encode_many(
            tokenizer, [c for orig, c, _ in pairs if orig] + [c + k for orig, c, k in pairs if orig] + [k for orig, _, k in pairs if not orig]
        )
        for orig, ctx, cont in pairs:
            if not orig:
                out.append(([], enc[cont]))
            else:
                ctx_ids = enc[ctx]
                out.append((ctx_ids, enc[ctx + cont][len(ctx_ids) :]))
    prefix = None
    for i, (ctx_ids, cont_ids) in enumerate(out):
        if not ctx_ids:
            prefix = prefix_token_id(tokenizer) if prefix is None else prefix
            out[i] = ([prefix], cont_ids)
    return out


def encode_pair(tokenizer: Any, context: str, continuation: str, tokenization: Tokenization = "separate") -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of one pair, exactly as :func:`score_requests` scores it."""
    return encode_requests(tokenizer, [LoglikelihoodRequest(context, continuation)], tokenization)[0]


# --- the computation ----------------------------------------------------------------------------
@dataclasses.dataclass
class _Item:
    ctx: tuple[int, ...]
    cont: tuple[int, ...]
    slot: int  # index into the unique-pair results


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _window(ctx: Sequence[int], cont: Sequence[int], max_length: int) -> list[int]:
    """The model input of a pair: (ctx + cont)[:-1], left-truncated to ``max_length`` (lm-eval)."""
    return (list(ctx) + list(cont))[-(max_length + 1) :][:-1]


_HEAD_CHUNK = 2048  # scored positions per LM-head call: bounds the (N, V) float32 logits in memory


def _token_scores(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (N, d) of the positions that predict ``targets`` (N,) -> (log p (N,) float64, is-argmax (N,))."""
    parts = [_from_logits(model.output(h), t) for h, t in zip(hidden.split(_HEAD_CHUNK), targets.split(_HEAD_CHUNK))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _from_logits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, targets[:, None]).squeeze(-1).double()
    greedy = logp.argmax(-1) == targets
    return tok, greedy


def _sum_per_row(tok: torch.Tensor, greedy: torch.Tensor, lengths: list[int]) -> list[tuple[float, bool]]:
    out = []
    for lp, g in zip(torch.split(tok.cpu(), lengths), torch.split(greedy.cpu(), lengths)):
        out.append((float(lp.sum()), bool(g.all())))
    return out


def _plain_batch(
    model: Any, items: Sequence[_Item], max_length: int, device: torch.device, pad_id: int, *, logits_only: bool = False
) -> list[tuple[float, bool]]:
    """Right-padded (ctx + cont)[:-1] rows, one forward, as lm-eval does (causal attention makes the
    right padding invisible to real tokens). ``logits_only``: call ``model(ids)`` for logits, for
    wrapped (FSDP/DDP) models whose ``output``/``return_hidden`` cannot be used."""
    inps = [_window(it.ctx, it.cont, max_length) for it in items]
    T = max(len(x) for x in inps)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    rows, cols, targets, lengths = [], [], [], []
    for b, (inp, it) in enumerate(zip(inps, items)):
        ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
        # A continuation longer than the window: only its last len(inp) tokens can be predicted
        # inside it (lm-eval would index before the row's start here).
        n = len(inp)
        c = min(len(it.cont), n)
        rows += [b] * c
        cols += range(n - c, n)
        targets += it.cont[len(it.cont) - c :]
        lengths.append(c)
    ids = ids.to(device)
    rows_t = torch.tensor(rows, dtype=torch.long, device=device)
    cols_t = torch.tensor(cols, dtype=torch.long, device=device)
    targets_t = torch.tensor(targets, dtype=torch.long, device=device)
    if logits_only:
        logits = model(ids)
        tok, greedy = _from_logits(logits[rows_t, cols_t], targets_t)
    else:
        hidden = model(ids, return_hidden=True)
        tok, greedy = _token_scores(model, hidden[rows_t, cols_t], targets_t)
    return _sum_per_row(tok, greedy, lengths)


#: The cost of one extra forward, in padded token positions: the continuation pass of a shared
#: batch is split by continuation length only where that saves more padding than this. None: by
#: device (a GPU forward has a fixed launch cost worth a few hundred positions; a CPU's is small).
_PASS_OVERHEAD_TOKENS: int | None = None


def _pass_overhead(device: torch.device) -> int:
    if _PASS_OVERHEAD_TOKENS is not None:
        return _PASS_OVERHEAD_TOKENS
    return 256 if device.type == "cuda" else 32


def _split_by_length(lengths: Sequence[int], overhead: int | None = None) -> list[tuple[int, int]]:
    """Split rows sorted by length (longest first) into contiguous [start, end) runs, minimising
    sum(rows * longest + overhead) over the runs (padded positions plus a per-forward cost)."""
    overhead = _pass_overhead(torch.device("cpu")) if overhead is None else overhead
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of rows [0, j)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + (j - i) * lengths[i] + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    runs, j = [], n
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]


def _shared_batch(
    model: Any, groups: Sequence[tuple[tuple[int, ...], list[_Item]]], device: torch.device, pad_id: int
) -> list[list[tuple[float, bool]]]:
    """Score groups of items that share a context: the contexts run once (left-padded, into a KV
    cache), the cache is expanded over the items, then the continuations (minus their last token)
    run right-padded, in one pass or a few passes of similar lengths (``_split_by_length``).
    Returns per group the per-item (logprob, is_greedy)."""
    G = len(groups)
    ctx_lens = [len(c) for c, _ in groups]
    Lc = max(ctx_lens)
    ids = torch.full((G, Lc), pad_id, dtype=torch.long)
    mask = torch.zeros((G, Lc), dtype=torch.long)
    for g, (ctx, _) in enumerate(groups):
        ids[g, Lc - len(ctx) :] = torch.tensor(ctx, dtype=torch.long)
        mask[g, Lc - len(ctx) :] = 1
    padded = min(ctx_lens) != Lc
    flat = [(g, it) for g, (_, items) in enumerate(groups) for it in items]
    # rows that need the continuation pass, longest first
    more = sorted((r for r, (_, it) in enumerate(flat) if len(it.cont) > 1), key=lambda r: -len(flat[r][1].cont))
    Tc = max((len(flat[r][1].cont) - 1 for r in more), default=0)

    cache = model.new_cache(G, Lc + Tc)
    h_ctx = model(ids.to(device), attention_mask=mask.to(device) if padded else None, cache=cache, return_hidden=True)[:, -1]

    # Hidden states predicting each continuation token: the first token's from the context's last
    # position, the others' from the continuation pass(es).
    h_rest: dict[int, torch.Tensor] = {}
    for start, end in _split_by_length([len(flat[r][1].cont) - 1 for r in more], _pass_overhead(device)):
        rows = more[start:end]
        T = len(flat[rows[0]][1].cont) - 1
        sub = copy.copy(cache)  # shares the context's keys/values; reorder() makes this one's own copy
        sub.reorder(torch.tensor([flat[r][0] for r in rows], dtype=torch.long, device=device))
        cids = torch.full((len(rows), T), pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            cont = flat[r][1].cont
            cids[i, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
        h = model(cids.to(device), cache=sub, return_hidden=True)  # (rows, T, d)
        for i, r in enumerate(rows):
            h_rest[r] = h[i, : len(flat[r][1].cont) - 1]
    parts, targets, lengths = [], [], []
    for r, (g, it) in enumerate(flat):
        parts.append(h_ctx[g : g + 1])
        if r in h_rest:
            parts.append(h_rest[r])
        targets += it.cont
        lengths.append(len(it.cont))
    tok, greedy = _token_scores(model, torch.cat(parts), torch.tensor(targets, dtype=torch.long, device=device))
    per_item = _sum_per_row(tok, greedy, lengths)
    out, k = [], 0
    for _, items in groups:
        out.append(per_item[k : k + len(items)])
        k += len(items)
    return out


def _plan(
    items: Sequence[_Item], max_length: int, batch_size: int, shared_prefix: bool
) -> list[tuple[str, list]]:
    """Batches, longest first: ("plain", [items]) and ("shared", [(ctx, [items]), ...])."""
    plain: list[_Item] = []
    by_ctx: dict[tuple[int, ...], list[_Item]] = defaultdict(list)
    for it in items:
        if shared_prefix and len(it.ctx) + len(it.cont) - 1 <= max_length:
            by_ctx[it.ctx].append(it)
        else:
            plain.append(it)
    for ctx in [c for c, group in by_ctx.items() if len(group) == 1]:  # nothing to share
        plain += by_ctx.pop(ctx)
    batches: list[tuple[int, str, list]] = []  # (longest row, kind, batch)
    plain.sort(key=lambda it: (-(len(it.ctx) + len(it.cont)), it.ctx + it.cont))
    for i in range(0, len(plain), batch_size):
        chunk = plain[i : i + batch_size]
        batches.append((len(chunk[0].ctx) + len(chunk[0].cont), "plain", chunk))
    units = []  # groups, split so that no unit has more rows than a batch
    for ctx, group in by_ctx.items():
        group.sort(key=lambda it: -len(it.cont))
        for i in range(0, len(group), batch_size):
            units.append((ctx, group[i : i + batch_size]))
    units.sort(key=lambda u: (-(len(u[0]) + len(u[1][0].cont)), u[0]))
    cur: list = []
    rows = 0
    for u in units:
        if cur and rows + len(u[1]) > batch_size:
            batches.append((len(cur[0][0]) + len(cur[0][1][0].cont), "shared", cur))
            cur, rows = [], 0
        cur.append(u)
        rows += len(u[1])
    if cur:
        batches.append((len(cur[0][0]) + len(cur[0][1][0].cont), "shared", cur))
    batches.sort(key=lambda b: -b[0])  # stable: equal lengths keep their order
    return [(kind, batch) for _, kind, batch in batches]


def _unique_items(encoded: Sequence[tuple[list[int], list[int]]]) -> tuple[list[_Item], list[int]]:
    """De-duplicate (ctx, cont) pairs: the items to compute and, per request, its item slot."""
    slots: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    items: list[_Item] = []
    where = []
    for ctx, cont in encoded:
        key = (tuple(ctx), tuple(cont))
        if key not in slots:
            slots[key] = len(items)
            items.append(_Item(key[0], key[1], len(items)))
        where.append(slots[key])
    return items, where


def score_requests(
    model: Any,
    tokenizer: Any,
    requests: Sequence[LoglikelihoodRequest],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = True,
    tokenization: Tokenization = "separate",
    shared_prefix: bool = True,
    desc: str = "loglikelihood",
    spread: Spread | None = None,
) -> list[LoglikelihoodScore]:
    """One :class:`LoglikelihoodScore` per request, in the order given.

    ``model``: an lmforge ``OLMo`` (anything with ``model(ids, return_hidden=True, cache=...,
    attention_mask=...)``, ``model.output`` and ``model.new_cache``). ``max_length`` defaults to
    ``model.config.max_seq_len``. ``shared_prefix=False`` computes every request on its own (the
    plain lm-eval computation; for checking and benchmarking). ``spread``: this process computes
    its share of the batches (:class:`lmforge.eval.spread.Spread`) and every process returns all
    scores, bitwise those of one process.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_length is None:
        cfg = getattr(unwrap(model), "config", None)
        if cfg is None:
            raise ValueError("pass max_length=: the model has no config.max_seq_len")
        max_length = int(cfg.max_seq_len)
    encoded = encode_requests(tokenizer, requests, tokenization)
    for (ctx, cont), req in zip(encoded, requests):
        if len(cont) > max_length:
            raise ValueError(
                f"continuation of {len(cont)} tokens is longer than max_length {max_length}: {req.continuation[:60]!r}..."
            )
    items, where = _unique_items(encoded)
    results: list[tuple[float, bool] | None] = [None] * len(items)
    for it in items:
        if not it.cont:
            results[it.slot] = (0.0, True)
    todo = [it for it in items if it.cont]
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    device = _device_of(model)
    plan = _plan(todo, max_length, batch_size, shared_prefix)
    spread = spread or Spread()
    plan = spread.take(plan)

    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    total = sum(len(b) if kind == "plain" else sum(len(g) for _, g in b) for kind, b in plan)
    bar = tqdm(total=total, desc=desc, disable=not progress or not spread.is_main, unit="req")
    try:
        with torch.inference_mode():
            for kind, batch in plan:
                if kind == "plain":
                    for it, res in zip(batch, _plain_batch(model, batch, max_length, device, pad_id)):
                        results[it.slot] = res
                    bar.update(len(batch))
                else:
                    for (_, group), res in zip(batch, _shared_batch(model, batch, device, pad_id)):
                        for it, r in zip(group, res):
                            results[it.slot] = r
                        bar.update(len(group))
    finally:
        bar.close()
        model.train(was_training)
    if spread.world > 1:
        merged = spread.merge({i: r for i, r in enumerate(results) if r is not None})
        results = [merged.get(i) for i in range(len(items))]
    out = []
    for (_, cont), slot in zip(encoded, where):
        lp, greedy = results[slot]  # type: ignore[misc]
        out.append(LoglikelihoodScore(logprob=lp, n_tokens=len(cont), is_greedy=greedy))
    return out


# --- for in-loop evaluation under FSDP/DDP ------------------------------------------------------
def plain_batches(
    tokenizer: Any,
    requests: Sequence[LoglikelihoodRequest],
    *,
    batch_size: int,
    max_length: int,
    tokenization: Tokenization = "separate",
) -> tuple[list[list[_Item]], list[int], list[tuple[list[int], list[int]]]]:
    """The plain-path plan of :func:`score_requests`: (batches of unique items, item slot per
    request, encoded pairs). Used by in-loop evaluators that must control their forward count."""
    encoded = encode_requests(tokenizer, requests, tokenization)
    items, where = _unique_items(encoded)
    todo = [it for it in items if it.cont]
    plan = _plan(todo, max_length, batch_size, shared_prefix=False)
    return [b for _, b in plan], where, encoded


@torch.no_grad()
def run_plain_batch(model: Any, batch: Sequence[_Item], max_length: int, pad_id: int = 0) -> list[tuple[float, bool]]:
    """(logprob, is_greedy) per item of a plain batch, calling ``model(ids)`` for logits (works on
    FSDP/DDP-wrapped models)."""
    return _plain_batch(model, batch, max_length, _device_of(model), pad_id, logits_only=True)

