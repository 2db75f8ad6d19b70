"""Conversation data for SFT and preference pairs for DPO: JSONL in, micro-batches of ids out.

Formats (one JSON object per line, plain, .gz or .zst; other keys are kept as metadata):

    SFT  {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    DPO  {"chosen": [...messages...], "rejected": [...messages...]}

A DPO pair shares its prompt: ``chosen[:-1] == rejected[:-1]`` and both end in an assistant turn
(the response). A row that breaks a rule is *malformed* (counted by reason, ``file:line`` examples);
a well-formed row that cannot be trained on (e.g. all of its loss tokens lie beyond the sequence
length) is *dropped* with its reason. ``Accounting`` adds up to the rows read, always.

Batches are deterministic functions of the step, like pretraining's: the instances of epoch ``e``
are visited in the order of a permutation seeded with ``seed + e``, global batch ``k`` is items
``[k*B, (k+1)*B)`` of the concatenated epochs, and rank ``r`` of ``W`` takes every ``W``-th item
from ``r`` (so batch composition never depends on the number of processes). Nothing here imports
torch: micro-batches are dicts of numpy arrays that the trainer turns into tensors.

SFT instances are either one conversation each, right-padded to the longest in the micro-batch
(``packing=False``), or several conversations packed into rows of at most ``seq_len`` tokens
(``packing=True``) with ``document_ids`` (attention stays inside a conversation) and positions that
restart at 0 for each conversation, so a packed row computes exactly what the padded rows would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmforge.data.documents import Accounting, DataError, TruncatedFileError, iter_lines, list_shards
from lmforge.tokenizer.chat import ChatTemplate, encode_chat, get_chat_template, validate_messages

__all__ = ["ChatExample", "PreferenceExample", "mark_loss_tokens", "read_sft", "read_preferences", "SFTDataset", "PreferenceDataset", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # = lmforge.nn.loss.IGNORE_INDEX (data does not import nn)


def _chat_files(paths: Sequence[str]) -> list[Path]:
    files = [p for p in list_shards(paths) if str(p).endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json"))]
    if not files:
        raise DataError(f"no .jsonl(.gz/.zst) files in {', '.join(map(str, paths))}; SFT/DPO data is JSONL with one example per line")
    return files


def _rows(files: list[Path], acct: Accounting):
    """(where, parsed object) for every well-formed JSON line; malformed lines are counted."""
    for f in files:
        try:
            for n, raw in iter_lines(f):
                where = f"{f}:{n}"
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    acct.bad("invalid UTF-8", where)
                    continue
                except json.JSONDecodeError:
                    acct.bad("invalid JSON", where)
                    continue
                if not isinstance(obj, dict):
                    acct.bad("not a JSON object", where)
                    continue
                yield where, obj
        except TruncatedFileError as e:
            acct.errors.append(str(e))


def _check_loss_tokens(mask: list[bool]) -> bool:
    # The label of position t is token t+1, so a loss token at position 0 can never be predicted.
    return any(mask[1:])


@dataclasses.dataclass
class ChatExample:
    ids: np.ndarray  # (n,) int64
    loss_mask: np.ndarray  # (n,) bool: the token is a target of the loss
    where: str  # file:line
    truncated: bool = False  # cut at the sequence length (kept: some of its loss tokens remain)


@dataclasses.dataclass
class PreferenceExample:
    chosen: ChatExample
    rejected: ChatExample
    index: int  # position in the dataset (the key of the reference log-prob cache)


def read_sft(paths: Sequence[str], tokenizer, template: ChatTemplate | str, seq_len: int) -> tuple[list[ChatExample], Accounting]:
    """Conversations -> encoded examples (truncated to ``seq_len``), with the accounting."""
    template = get_chat_template(template) if isinstance(template, str) else template
    acct = Accounting()
    out: list[ChatExample] = []
    for where, obj in _rows(_chat_files(paths), acct):
        reason = validate_messages(obj.get("messages")) if "messages" in obj else "no 'messages' key"
        if reason is not None:
            acct.bad(reason, where)
            continue
        acct.read += 1
        enc = encode_chat(tokenizer, obj["messages"], template, max_length=seq_len)
        if not _check_loss_tokens(enc.loss_mask):
            acct.drop(f"no assistant tokens within {seq_len} tokens")
            continue
        acct.keep()
        out.append(ChatExample(np.asarray(enc.ids, dtype=np.int64), np.asarray(enc.loss_mask, dtype=bool), where, enc.truncated))
    acct.check()
    return out, acct


def read_preferences(
    paths: Sequence[str], tokenizer, template: ChatTemplate | str, seq_len: int
) -> tuple[list[PreferenceExample], Accounting]:
    """Preference pairs -> encoded chosen/rejected examples (loss on the final response only)."""
    template = get_chat_template(template) if isinstance(template, str) else template
    acct = Accounting()
    out: list[PreferenceExample] = []
    for where, obj in _rows(_chat_files(paths), acct):
        chosen, rejected = obj.get("chosen"), obj.get("rejected")
        reason = None
        if chosen is None or rejected is None:
            reason = "no 'chosen'/'rejected' key"
        else:
            reason = validate_messages(chosen) or validate_messages(rejected)
        if reason is None and (chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant"):
            reason = "chosen/rejected do not end in an assistant turn"
        if reason is None and chosen[:-1] != rejected[:-1]:
            reason = "chosen and rejected prompts differ"
        if reason is None and chosen[-1]["content"] == rejected[-1]["content"]:
            reason = "chosen and rejected responses are identical"
        if reason is not None:
            acct.bad(reason, where)
            continue
        acct.read += 1
        c = encode_chat(tokenizer, chosen, template, max_length=seq_len, loss_turns="last")
        r = encode_chat(tokenizer, rejected, template, max_length=seq_len, loss_turns="last")
        if not (_check_loss_tokens(c.loss_mask) and _check_loss_tokens(r.loss_mask)):
            acct.drop(f"response beyond {seq_len} tokens")
            continue
        acct.keep()
        as_ex = lambda e: ChatExample(np.asarray(e.ids, dtype=np.int64), np.asarray(e.loss_mask, dtype=bool), where, e.truncated)  # noqa: E731
        out.append(PreferenceExample(as_ex(c), as_ex(r), len(out)))
    acct.check()
    return out, acct


def mark_loss_tokens(tokenizer, ex: ChatExample) -> str:
    """``ex`` decoded, with the tokens the loss counts inside ``[[...]]``."""
    out, cur, inside = [], [], False
    for t, m in zip(ex.ids.tolist(), ex.loss_mask.tolist()):
        if m != inside:
            out.append(tokenizer.decode(cur))
            out.append("[[" if m else "]]")
            cur, inside = [], m
        cur.append(t)
    return "".join(out) + tokenizer.decode(cur) + ("]]" if inside else "")


def _labels(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Next-token targets: label[t] = ids[t+1] where token t+1 is a loss token, else IGNORE_INDEX."""
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    labels[:-1] = np.where(mask[1:], ids[1:], IGNORE_INDEX)
    return labels


def _pad(rows: list[np.ndarray], value: int, length: int | None = None) -> np.ndarray:
    n = length or max(len(r) for r in rows)
    out = np.full((len(rows), n), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class _Ordered:
    """The deterministic epoch-permutation order over ``self.n`` instances (see the module doc)."""

    n: int
    seed: int

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(self.seed + epoch).permutation(self.n)

    def batch_indices(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> list[int]:
        if self.n == 0:
            raise DataError("the dataset has no usable examples (see its accounting)")
        start = step * global_batch
        idx = []
        cache: dict[int, np.ndarray] = {}
        for k in range(start + rank, start + global_batch, world_size):
            epoch, j = divmod(k, self.n)
            if epoch not in cache:
                cache[epoch] = self._order(epoch)
            idx.append(int(cache[epoch][j]))
        return idx

    def steps_for_epochs(self, epochs: float, global_batch: int) -> int:
        return max(1, int(np.ceil(epochs * self.n / global_batch)))

    def epoch_of(self, step: int, global_batch: int) -> float:
        return step * global_batch / max(1, self.n)


def _fingerprint(kind: str, examples_ids: list[np.ndarray], extra: dict[str, Any]) -> dict[str, Any]:
    h = hashlib.sha256()
    for ids in examples_ids:
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(b"|")
    return {"kind": kind, "instances": len(examples_ids), "sha256": h.hexdigest()[:32], **extra}


class SFTDataset(_Ordered):
    """Conversations as padded or packed instances. ``micro_batches`` is the trainer's interface."""

    def __init__(self, examples: list[ChatExample], seq_len: int, *, pad_id: int, seed: int = 0, packing: bool = False, accounting: Accounting | None = None):
        self.examples, self.seq_len, self.pad_id, self.seed, self.packing = examples, seq_len, pad_id, seed, packing
        self.accounting = accounting
        # An instance is a list of example indices: one each, or greedily packed in file order.
        if packing:
            self.instances: list[list[int]] = []
            cur: list[int] = []
            used = 0
            for i, ex in enumerate(examples):
                n = len(ex.ids)
                if cur and used + n > seq_len:
                    self.instances.append(cur)
                    cur, used = [], 0
                cur.append(i)
                used += n
            if cur:
                self.instances.append(cur)
        else:
            self.instances = [[i] for i in range(len(examples))]
        self.n = len(self.instances)

    @property
    def loss_tokens(self) -> int:
        return int(sum(int(e.loss_mask[1:].sum()) for e in self.examples))

    def _row(self, instance: list[int]) -> dict[str, np.ndarray]:
        exs = [self.examples[i] for i in instance]
        ids = np.concatenate([e.ids for e in exs])
        labels = np.concatenate([_labels(e.ids, e.loss_mask) for e in exs])  # no label crosses a boundary
        row = {"input_ids": ids, "labels": labels}
        if self.packing:
            row["document_ids"] = np.concatenate([np.full(len(e.ids), k, dtype=np.int64) for k, e in enumerate(exs)])
            row["position_ids"] = np.concatenate([np.arange(len(e.ids), dtype=np.int64) for e in exs])
        return row

    def rows_micro_batch(self, instances: list[int]) -> dict[str, np.ndarray]:
        """One micro-batch of the given instances (indices into ``self.instances``), padded."""
        chunk = [self._row(self.instances[i]) for i in instances]
        mb = {"input_ids": _pad([r["input_ids"] for r in chunk], self.pad_id), "labels": _pad([r["labels"] for r in chunk], IGNORE_INDEX)}
        if self.packing:  # padding is a document of its own (-1); its positions are 0 and never used
            mb["document_ids"] = _pad([r["document_ids"] for r in chunk], -1)
            mb["position_ids"] = _pad([r["position_ids"] for r in chunk], 0)
        return mb

    def micro_batches(self, step: int, global_batch: int, micro_batch: int, rank: int = 0, world_size: int = 1) -> list[dict[str, np.ndarray]]:
        idx = self.batch_indices(step, global_batch, rank, world_size)
        return [self.rows_micro_batch(idx[s : s + micro_batch]) for s in range(0, len(idx), micro_batch)]

    def batch_tokens(self, step: int, global_batch: int) -> int:
        """Real (non-padding) tokens in global batch ``step``."""
        return int(sum(sum(len(self.examples[i].ids) for i in self.instances[j]) for j in self.batch_indices(step, global_batch)))

    def fingerprint(self) -> dict[str, Any]:
        return _fingerprint("sft", [e.ids for e in self.examples], {"seed": self.seed, "packing": self.packing, "seq_len": self.seq_len})


class PreferenceDataset(_Ordered):
    """Preference pairs. A micro-batch holds its ``b`` chosen rows then its ``b`` rejected rows,
    padded to one length, so the policy scores both in one forward pass."""

    def __init__(self, pairs: list[PreferenceExample], seq_len: int, *, pad_id: int, seed: int = 0, accounting: Accounting | None = None):
        self.pairs, self.seq_len, self.pad_id, self.seed = pairs, seq_len, pad_id, seed
        self.accounting = accounting
        self.n = len(pairs)

    def pair_micro_batch(self, indices: list[int]) -> dict[str, np.ndarray]:
        ps = [self.pairs[i] for i in indices]
        exs = [p.chosen for p in ps] + [p.rejected for p in ps]
        return {
            "input_ids": _pad([e.ids for e in exs], self.pad_id),
            "labels": _pad([_labels(e.ids, e.loss_mask) for e in exs], IGNORE_INDEX),
            "pair_index": np.asarray(indices, dtype=np.int64),
        }

    def micro_batches(self, step: int, global_batch: int, micro_batch: int, rank: int = 0, world_size: int = 1) -> list[dict[str, np.ndarray]]:
        idx = self.batch_indices(step, global_batch, rank, world_size)
        return [self.pair_micro_batch(idx[s : s + micro_batch]) for s in range(0, len(idx), micro_batch)]

    def batch_tokens(self, step: int, global_batch: int) -> int:
        return int(sum(len(self.pairs[i].chosen.ids) + len(self.pairs[i].rejected.ids) for i in self.batch_indices(step, global_batch)))

    def fingerprint(self) -> dict[str, Any]:
        ids = [x for p in self.pairs for x in (p.chosen.ids, p.rejected.ids)]
        return _fingerprint("dpo", ids, {"seed": self.seed, "seq_len": self.seq_len})
