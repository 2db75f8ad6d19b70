"""What each training objective is made of: its data (:mod:`lmforge.train.data`) and its train
module (how a step is taken). ``build_trainer`` looks the objective up in :data:`OBJECTIVES`.

    lm    token files (a weighted mixture)      -> LMTrainModule    (next-token loss, z-loss)
    sft   chat conversations, assistant loss    -> SFTTrainModule
    dpo   preference pairs                      -> DPOTrainModule   (sigmoid, dpo_norm, ipo, simpo)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from lmforge.config import ConfigError
from lmforge.distributed import DistInfo
from lmforge.train.config import TrainConfig
from lmforge.train.data import ChatData, TokenStream, TrainingData
from lmforge.train.dpo import DPOTrainModule
from lmforge.train.module import LMTrainModule, TrainModule
from lmforge.train.sft import SFTTrainModule

__all__ = ["OBJECTIVES", "Objective", "build_chat_data", "heldout_evaluator"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """``data(cfg, init_tokenizer, info, quiet) -> (data, tokenizer)``; ``module(cfg, model,
    optimizer, **common) -> TrainModule``; ``epochs``: whether ``trainer.epochs`` applies."""

    data: Callable[..., tuple[TrainingData, Any]]
    module: Callable[..., TrainModule]
    epochs: bool


def _lm_data(cfg: TrainConfig, init_tokenizer, info: DistInfo, quiet: bool):
    """The token-file mixture; the tokenizer named by its tokenize summary (saved with every
    checkpoint), else the one ``run.init_from`` brought."""
    mixture = cfg.data.build(cfg.seq_len)
    tokenizer = init_tokenizer
    spec = mixture.tokenizer_spec()
    if spec is not None:
        from lmforge.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_file(spec["path"], eos_token_id=spec["eos_token_id"], pad_token_id=spec["pad_token_id"],
                                        bos_token_id=spec["bos_token_id"])
    return TokenStream(mixture, vocab_size=cfg.model.vocab_size, document_masking=cfg.data.document_masking), tokenizer


def _chat_data(cfg: TrainConfig, init_tokenizer, info: DistInfo, quiet: bool):
    tokenizer = _chat_tokenizer(cfg, init_tokenizer)
    return ChatData(build_chat_data(cfg, tokenizer, info, quiet=quiet), vocab_size=cfg.model.vocab_size), tokenizer


def _dpo_module(cfg: TrainConfig, model, optimizer, **common) -> TrainModule:
    d = cfg.dpo
    return DPOTrainModule(model, optimizer, cfg.schedule, loss_type=d.loss, beta=d.beta, gamma_beta_ratio=d.gamma_beta_ratio, **common)


OBJECTIVES: dict[str, Objective] = {
    "lm": Objective(_lm_data, lambda cfg, model, opt, **common: LMTrainModule(model, opt, cfg.schedule, z_loss=cfg.trainer.z_loss, **common), epochs=False),
    "sft": Objective(_chat_data, lambda cfg, model, opt, **common: SFTTrainModule(model, opt, cfg.schedule, **common), epochs=True),
    "dpo": Objective(_chat_data, _dpo_module, epochs=True),
}


def _chat_tokenizer(cfg: TrainConfig, init_tokenizer):
    from lmforge.tokenizer import load_tokenizer
    from lmforge.tokenizer.chat import get_chat_template

    tok = load_tokenizer(cfg.chat.tokenizer) if cfg.chat.tokenizer else init_tokenizer
    if tok is None:
        raise ConfigError(
            f"trainer.objective {cfg.trainer.objective!r} needs a tokenizer: run.init_from has none, so set chat.tokenizer "
            "(a tokenizer.json, a directory, or an OLMo name such as olmo2)"
        )
    tok.chat_template = get_chat_template(cfg.chat.template).jinja()  # saved with every checkpoint and export
    return tok


def build_chat_data(cfg: TrainConfig, tokenizer, info: DistInfo, *, quiet: bool = False):
    """The SFT or DPO dataset of ``cfg.chat``; its accounting is printed and kept in the run dir."""
    from lmforge.data.chat import PreferenceDataset, SFTDataset, read_preferences, read_sft

    c = cfg.chat
    if cfg.trainer.objective == "sft":
        examples, acct = read_sft(c.paths, tokenizer, c.template, cfg.seq_len)
        data = SFTDataset(examples, cfg.seq_len, pad_id=tokenizer.pad_token_id, seed=c.seed, packing=c.packing, accounting=acct)
        what = f"{len(examples):,} conversations ({data.loss_tokens:,} assistant tokens, {sum(e.truncated for e in examples):,} truncated)" + (
            f" packed into {data.n:,} rows of <= {cfg.seq_len} tokens" if c.packing else ""
        )
    else:
        pairs, acct = read_preferences(c.paths, tokenizer, c.template, cfg.seq_len)
        data = PreferenceDataset(pairs, cfg.seq_len, pad_id=tokenizer.pad_token_id, seed=c.seed, accounting=acct)
        what = f"{len(pairs):,} preference pairs"
    data.accounting_json = json.dumps(acct.to_json(), indent=1) + "\n"  # written into the run dir by the Trainer, after its checks
    if info.is_main:
        if not quiet:
            print(f"{cfg.trainer.objective} data: {what}; {acct.summary_line()}", flush=True)
            for e in acct.errors:
                print(f"warning: {e}", flush=True)
    if data.n == 0:  # the run cannot start: leave the accounting where the message points
        if info.is_main:
            from lmforge.config import atomic_write_text

            atomic_write_text(Path(cfg.run.dir) / "data_accounting.json", data.accounting_json)
        raise ConfigError(f"chat.paths has no usable {cfg.trainer.objective} examples ({acct.summary_line()}); see {Path(cfg.run.dir) / 'data_accounting.json'}")
    return data


def heldout_evaluator(cfg: TrainConfig, tokenizer, module, info: DistInfo):
    """Held-out SFT loss or DPO margin/accuracy on ``chat.heldout`` (built before any checkpoint is
    loaded, so DPO's held-out reference log-probs come from the starting weights)."""
    from lmforge.data.chat import PreferenceDataset, SFTDataset, read_preferences, read_sft
    from lmforge.train.dpo import DPOHeldout
    from lmforge.train.sft import SFTHeldout

    if cfg.eval.every is None:
        raise ConfigError("chat.heldout is set but eval.every is null; set eval.every to the steps between evaluations")
    c = cfg.chat
    if cfg.trainer.objective == "sft":
        examples, _ = read_sft(c.heldout, tokenizer, c.template, cfg.seq_len)
        data = SFTDataset(examples, cfg.seq_len, pad_id=tokenizer.pad_token_id)
        return SFTHeldout("heldout", data, module, cfg.eval.batch_size, info.rank, info.world_size)
    pairs, _ = read_preferences(c.heldout, tokenizer, c.template, cfg.seq_len)
    data = PreferenceDataset(pairs, cfg.seq_len, pad_id=tokenizer.pad_token_id)
    return DPOHeldout("heldout", data, module, cfg.eval.batch_size, info.rank, info.world_size)
