"""The generation engine of evaluation: many prompts, each with its own stop sequences and budget.

    outs = generate_all(model, tokenizer, [Prompt("Q: 2+2?\\nA:", stop=("\\n\\n",), max_new_tokens=50)])
    outs[0].text, outs[0].n_tokens, outs[0].finish   # "stop" | "eos" | "length"

How it runs (:func:`lmforge.eval.refill.refill_decode`, continuous batching on lmforge's KV cache):

* prompts are encoded, left-truncated to fit ``max_length`` together with their budget (which gives
  way first, down to half the context: :func:`fit_budget`), grouped by sampling settings and queued
  longest first;
* up to ``batch_size`` rows decode together, greedily or sampled; a row leaves when it emits EOS,
  when a stop sequence appears in its text (found on the detokenised text, so a stop sequence split
  across tokens is seen) or when it has used its own ``max_new_tokens``, and its slot is refilled
  with the next prompts of the queue (prefilled together), so the decoding steps follow the number
  of new tokens, not the longest row of each batch;
* sampled rows draw from their own generator (``Prompt.seed``), so a row's text does not depend on
  the other rows of its batch.

Batch size and the number of processes do not change the text: a row's logits differ between
batches only by float rounding in the padded attention (~1e-6), far below the gaps between the
tokens greedy decoding picks (tests/eval/test_generation.py checks batch sizes 1, 3 and 8 on a
model trained to produce varied text, and each prompt against :func:`lmforge.generate.generate`).
Under ``Spread`` each process decodes every ``world``-th prompt of the queue and the generations
are gathered (tests/eval/test_generative.py: two processes give the one-process results).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import torch

from lmforge.distributed import unwrap
from lmforge.eval.spread import Spread
from lmforge.generate import GenerationConfig

__all__ = ["Prompt", "Generation", "fit_budget", "generate_all", "plan_batches"]


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    seed: int = 0  # sampling only: this prompt's own generator


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str  # the new text, cut before the first stop sequence, without the EOS
    n_tokens: int  # new tokens decoded (the token that completed a stop sequence included)
    finish: str  # "stop" (a stop sequence), "eos", or "length" (the budget)
    prompt_tokens: int  # prompt tokens fed to the model
    truncated: int = 0  # prompt tokens dropped from the left to fit the model's context


def _encode(tokenizer: Any, prompts: Sequence[Prompt], max_length: int) -> tuple[list[list[int]], list[int], list[int]]:
    """Token ids per prompt (left-truncated), each prompt's budget, and how many tokens were cut."""
    eos = getattr(tokenizer, "eos_token_id", None)
    ids_all, budgets, cut = [], [], []
    for p in prompts:
        ids = list(tokenizer.encode(p.text))
        if not ids:
            if eos is None:
                raise ValueError("an empty prompt needs a tokenizer with an eos_token_id to start from")
            ids = [int(eos)]
        budget = fit_budget(len(ids), p.max_new_tokens, max_length)
        keep = max_length - budget
        cut.append(max(0, len(ids) - keep))
        ids_all.append(ids[-keep:])
        budgets.append(budget)
    return ids_all, budgets, cut


def fit_budget(prompt_tokens: int, max_new_tokens: int, max_length: int) -> int:
    """New tokens a prompt gets in a context of ``max_length``: its ``max_new_tokens`` when prompt and
    budget fit; otherwise the budget gives way until the prompt keeps at least half the context (a
    512-token budget in a 256-token model must not leave the prompt one token)."""
    return max(0, min(max_new_tokens, max_length - min(prompt_tokens, max_length // 2), max_length - 1))


def plan_batches(prompts: Sequence[Prompt], ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices per batch: grouped by budget and sampling settings (a batch runs as many steps
    as its longest-running row: a 512-token gsm8k row must not hold up a batch of 50-token DROP rows),
    longest first, then cut."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[(p.max_new_tokens, p.do_sample, p.temperature, p.top_p) if p.do_sample else (p.max_new_tokens, False)].append(i)
    batches = []
    for key in sorted(groups, key=repr):
        order = sorted(groups[key], key=lambda i: (-len(ids[i]), ids[i], i))
        batches += [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    batches.sort(key=lambda b: -len(ids[b[0]]))  # stable: longest batches first, for every rank
    return batches


def generate_all(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = True,
    spread: Spread | None = None,
    desc: str = "generate",
) -> list[Generation]:
    """One :class:`Generation` per prompt, in the order given (see the module docstring).

    ``max_length``: the model's context (default ``model.config.max_seq_len``); where prompt and budget
    do not fit, the budget shrinks until the prompt keeps half the context (:func:`fit_budget`), then
    the prompt loses its beginning.
    ``spread``: this process decodes its share of the batches; every process returns everything.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spread = spread or Spread()
    cfg = unwrap(model).config
    max_length = int(max_length or cfg.max_seq_len)
    ids, budgets, cut = _encode(tokenizer, prompts, max_length)
    vocab_size = cfg.vocab_size
    if getattr(tokenizer, "vocab_size", None):
        vocab_size = min(vocab_size, int(tokenizer.vocab_size))
    groups: dict[tuple, list[int]] = defaultdict(list)  # one decoding run per sampling setting
    for i, p in enumerate(prompts):
        groups[(True, p.temperature, p.top_p) if p.do_sample else (False,)].append(i)
    mine = {key: spread.take(sorted(group, key=lambda i: (-len(ids[i]), ids[i], i))) for key, group in groups.items()}

    from tqdm.auto import tqdm

    from lmforge.eval.refill import refill_decode

    done: dict[int, tuple[str, int, str]] = {}
    was_training = model.training
    model.eval()
    bar = tqdm(total=sum(map(len, mine.values())), desc=desc, unit="prompt", disable=not progress or not spread.is_main)
    try:
        for key in sorted(mine, key=repr):
            order = mine[key]
            if not order:
                continue
            first = prompts[order[0]]
            gen = GenerationConfig(do_sample=first.do_sample, temperature=first.temperature if first.do_sample else 1.0,
                                   top_p=first.top_p if first.do_sample else 1.0)
            outs = refill_decode(
                model, tokenizer, [ids[i] for i in order], [budgets[i] for i in order], [prompts[i].stop for i in order],
                batch_size=batch_size, gen=gen, seeds=[prompts[i].seed for i in order], vocab_size=vocab_size,
                on_done=lambda _: bar.update(1),
            )
            done.update(zip(order, outs))
    finally:
        bar.close()
        model.train(was_training)
    done = spread.merge(done)
    return [Generation(*done[i], prompt_tokens=len(ids[i]), truncated=cut[i]) for i in range(len(prompts))]
