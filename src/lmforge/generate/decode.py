"""Batched incremental decoding with a KV cache: the token-level core of ``lmforge.generate``.

One batch holds every prompt, LEFT-padded to the longest so that all rows' next tokens sit in the
same (last) column. Decoding then costs:

* one prefill forward over the padded prompts, which fills the KV cache; only the last position is
  projected to the vocabulary (the prompt positions' logits would be thrown away, and for a small
  model the vocabulary projection is most of the work);
* one forward of a single token per row per step, attending to the cache.

Finished rows (EOS, or told to stop by the text layer when a stop string appears) are dropped from
the batch with ``KVCache.reorder`` once they make up a quarter of it, so later steps stop spending
compute on them while the number of cache copies stays small (at most ~log(B) / log(4/3)).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from lmforge.generate.config import GenerationConfig
from lmforge.generate.cpu_kernels import packed_linears
from lmforge.generate.sampling import apply_repetition_penalty, choose_next, mask_padded_vocab


def _as_id_set(token_ids: int | Sequence[int] | None) -> frozenset[int]:
    if token_ids is None:
        return frozenset()
    if isinstance(token_ids, int):
        return frozenset((token_ids,))
    return frozenset(int(t) for t in token_ids)


class BatchDecoder:
    """Decode a batch of token-id prompts step by step.

    Iterate over :meth:`steps`; each step yields ``[(row, token), ...]`` for the rows still running
    (``row`` indexes ``prompts``). Between steps, :meth:`finish` stops a row early. ``tokens[row]``
    holds each row's new tokens so far (an EOS that ended a row is included).

    For inspection (tests, debugging), ``logits`` and ``rows`` hold the raw logits (b, V) the latest
    step chose from and which prompt each of their b rows belongs to.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]],
        gen: GenerationConfig,
        *,
        pad_token_id: int,
        eos_token_id: int | Sequence[int] | None,
        vocab_size: int | None = None,
        row_seeds: Sequence[int] | None = None,
    ):
        gen.validate()
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token (an empty prompt has nothing to condition on)")
        self.model, self.gen = model, gen
        self.prompts = [list(map(int, p)) for p in prompts]
        self.pad_token_id = int(pad_token_id)
        self.eos_ids = _as_id_set(eos_token_id) if gen.stop_at_eos else frozenset()
        self.vocab_size = vocab_size if vocab_size is not None else model.config.vocab_size
        self.tokens: list[list[int]] = [[] for _ in self.prompts]
        self.done = [False] * len(self.prompts)
        self.rows: list[int] = list(range(len(self.prompts)))
        self.logits: torch.Tensor | None = None
        self.device = next(model.parameters()).device
        self.generator = None
        if gen.do_sample and gen.seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(gen.seed)
        # One generator per prompt: a row's draws then depend on its own seed only, not on which
        # other prompts share its batch (sampled evaluation gives the same text for any batch size).
        self.row_generators = None
        if gen.do_sample and row_seeds is not None:
            if len(row_seeds) != len(self.prompts):
                raise ValueError(f"row_seeds: {len(row_seeds)} seeds for {len(self.prompts)} prompts")
            self.row_generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in row_seeds]
        # Per-batch-row state, set up by _prefill and reindexed whenever finished rows are dropped:
        self.cache = None  # KVCache with room for the longest prompt + max_new_tokens
        self.mask: torch.Tensor | None = None  # (b, L + max_new_tokens) key mask; False = left padding
        self.padded = False  # any left padding at all (if not, the model needs no mask)
        self.positions: torch.Tensor | None = None  # (b,) RoPE position of each row's next input token
        self.seen: torch.Tensor | None = None  # (b, V) ids seen in prompt/output, for repetition_penalty

    def finish(self, row: int) -> None:
        """Stop decoding prompt ``row`` (its remaining steps are skipped)."""
        self.done[row] = True

    # --- the loop -------------------------------------------------------------------------------
    def steps(self) -> Iterator[list[tuple[int, int]]]:
        """Run the decoding; yield each step's new ``(row, token)`` pairs, in batch order."""
        n_new = self.gen.max_new_tokens
        if not self.prompts or n_new == 0:
            return
        with packed_linears(self.model, "aten" if self.gen.compile else self.gen.cpu_kernels):
            yield from self._steps(n_new)

    def _steps(self, n_new: int) -> Iterator[list[tuple[int, int]]]:
        next_tokens = self._prefill()  # (B,)
        for step in range(n_new):
            out = []
            for row, tok in zip(self.rows, next_tokens.tolist()):
                if self.done[row]:
                    continue  # finished, but not yet dropped from the batch: its token is discarded
                self.tokens[row].append(tok)
                out.append((row, tok))
                if tok in self.eos_ids:
                    self.done[row] = True
            # The consumer runs between steps (and may call finish()); no inference mode across yields.
            yield out
            if step == n_new - 1 or all(self.done[r] for r in self.rows):
                return
            if self.gen.compile:  # static shapes: finished rows stay in the batch
                next_tokens = self._decode_one_static(next_tokens)
            else:
                next_tokens = self._drop_finished_rows(next_tokens)
                next_tokens = self._decode_one(next_tokens)

    @torch.inference_mode()
    def _prefill(self) -> torch.Tensor:
        """One forward over the left-padded prompts; fills the cache; returns the first new tokens (B,)."""
        B, n_new = len(self.prompts), self.gen.max_new_tokens
        lengths = [len(p) for p in self.prompts]
        L = max(lengths)
        ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        # Key mask over every position this batch will ever have: prompt (left-padded) + new tokens.
        mask = torch.ones(B, L + n_new, dtype=torch.bool)
        for i, p in enumerate(self.prompts):
            ids[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, : L - len(p)] = False
        self.padded = min(lengths) < L
        self.mask = mask.to(self.device)  # (B, L + n_new)
        self.positions = torch.tensor(lengths, device=self.device)  # (B,) the first new token's position
        if self.gen.repetition_penalty != 1.0:
            V = self.model.config.padded_vocab_size
            self.seen = torch.zeros(B, V, dtype=torch.bool, device=self.device)
            for i, p in enumerate(self.prompts):
                self.seen[i, torch.tensor(p, device=self.device)] = True

        self.cache = self.model.new_cache(B, L + n_new)
        ids = ids.to(self.device)
        h = self.model(
            ids, attention_mask=self.mask[:, :L] if self.padded else None, cache=self.cache, return_hidden=True
        )  # (B, L, d)
        if self.gen.compile:
            self.cache.key_mask.copy_(self.mask)  # the whole key mask up front: static steps read all of it
            self.cache.make_static()
        return self._choose(self.model.output(h[:, -1:])[:, 0])  # logits (B, V) -> (B,)

    @torch.inference_mode()
    def _decode_one_static(self, tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`_decode_one` through the compiled static step (shapes never change)."""
        logits = _compiled_step(self.device)(self.model, tokens[:, None], self.positions[:, None], self.cache)
        self.cache.advance(1)
        self.positions = self.positions + 1
        return self._choose(logits)

    @torch.inference_mode()
    def _decode_one(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row's latest token (b,) through the cached model; return the next tokens (b,)."""
        S = self.cache.length + 1
        h = self.model(
            tokens[:, None],  # (b, 1)
            attention_mask=self.mask[:, :S] if self.padded else None,  # the model reads its new column
            position_ids=self.positions[:, None],  # (b, 1); saves the model a cumsum over the mask
            cache=self.cache,
            return_hidden=True,
        )  # (b, 1, d)
        self.positions = self.positions + 1
        return self._choose(self.model.output(h)[:, 0])

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits (b, V) -> next tokens (b,), updating the per-row state that depends on them."""
        self.logits = logits
        if not self.gen.do_sample and self.seen is None:
            # greedy: the argmax of the ids the tokenizer has (what masking the padded rows to -inf
            # and taking the argmax of all gives), without a copy of the logits
            return logits[:, : self.vocab_size].argmax(dim=-1)
        scores = mask_padded_vocab(logits.float().clone(), self.vocab_size)
        if self.seen is not None:
            scores = apply_repetition_penalty(scores, self.seen, self.gen.repetition_penalty)
        if self.row_generators is not None:  # each row draws from its own generator
            tokens = torch.cat([choose_next(scores[j : j + 1], self.gen, self.row_generators[row]) for j, row in enumerate(self.rows)])
        else:
            tokens = choose_next(scores, self.gen, self.generator)  # (b,)
        if self.seen is not None:
            self.seen[torch.arange(len(tokens), device=tokens.device), tokens] = True
        return tokens

    @torch.inference_mode()
    def _drop_finished_rows(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Remove finished rows from the batch once they are at least a quarter of it.

        Returns ``next_tokens`` (b,) restricted to the rows kept.
        """
        keep = [j for j, row in enumerate(self.rows) if not self.done[row]]
        if len(keep) < min(MIN_ROWS, len(self.rows)):  # finished rows ride along to MIN_ROWS
            keep = sorted(keep + [j for j in range(len(self.rows)) if self.done[self.rows[j]]][: MIN_ROWS - len(keep)])
        if len(self.rows) - len(keep) < max(1, len(self.rows) / 4):
            return next_tokens
        index = torch.tensor(keep, device=self.device)
        self.cache.reorder(index)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        if self.seen is not None:
            self.seen = self.seen[index]
        self.rows = [self.rows[j] for j in keep]
        return next_tokens[index]


# A batch is not shrunk below this many rows: on CPUs a matrix product with 2-3 rows can cost more
# than one with 4 (MKL: a 3-row output projection of a 100k vocabulary took 21.5 ms, 4 rows 11.7 ms).
MIN_ROWS = 4

_COMPILED: dict[str, object] = {}


def _static_step(model, input_ids, position_ids, cache):
    return model.decode_step(input_ids, position_ids, cache)


def _compiled_step(device: torch.device):
    """``model.decode_step`` compiled once per device type: CUDA graphs on a GPU ("reduce-overhead"),
    inductor's fused kernels on a CPU. Recompiled only for a new batch size or cache length."""
    key = device.type
    if key not in _COMPILED:
        mode = "reduce-overhead" if key == "cuda" else None
        _COMPILED[key] = torch.compile(_static_step, mode=mode, fullgraph=True, dynamic=False)
    return _COMPILED[key]


def generate_ids(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    gen: GenerationConfig | None = None,
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """Continue each prompt (token ids); return only the new tokens of each, in prompt order.

    All prompts run in one left-padded batch. A row that emits ``eos_token_id`` (when
    ``gen.stop_at_eos``) stops there, the EOS included. ``vocab_size`` (default
    ``model.config.vocab_size``) bounds the ids that may be generated. ``gen.stop_strings`` need a
    tokenizer and are honoured by :func:`lmforge.generate.generate` / :func:`stream`, not here.
    """
    decoder = BatchDecoder(
        model, prompts, gen or GenerationConfig(), pad_token_id=pad_token_id, eos_token_id=eos_token_id, vocab_size=vocab_size
    )
    for _ in decoder.steps():
        pass
    return decoder.tokens
