"""A tiny model trained enough to produce varied, task-shaped text (for the generation tests).

``talker``: an OLMo-2 of 64 dimensions trained for a few seconds on the prompts and gold answers of
gsm8k, DROP, NaturalQuestions and HumanEval (and the same pairs in the Tulu chat format), with the
test BPE tokenizer (whose chat template is set to Tulu's, as lmforge's SFT runs do). Its greedy
text changes from prompt to prompt, runs into the tasks' stop sequences and sometimes into EOS.
"""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import tiny_config

TRAIN_TASKS = ("gsm8k", "drop", "naturalqs_open", "codex_humaneval")
SEQ = 256


@pytest.fixture(scope="module")
def hf_offline():
    """transformers, datasets and the hub never reach the network (the tests' models are local)."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(k, "1")
        yield


def _texts(tok) -> list[str]:
    from lmforge.eval.generative_tasks import load_generation_task
    from lmforge.generate.chat import render_chat

    out = []
    for name in TRAIN_TASKS:
        for r in load_generation_task(name, limit=60):
            answer = r.gold_continuation or ""
            out.append(r.context[-600:] + answer + "\n\n")
            out.append(render_chat(tok, [{"role": "user", "content": r.context[-300:]}]) + answer.strip() + tok.eos_token + "\n")
    return out


def _train(tok):
    from lmforge.tokenizer.chat import get_chat_template

    tok.chat_template = get_chat_template("tulu").jinja()
    stream: list[int] = []
    texts = _texts(tok)
    random.Random(0).shuffle(texts)
    for t in texts:
        stream += tok.encode(t) + [tok.eos_token_id]
    data = torch.tensor(stream)
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=tok.vocab_size, max_seq_len=SEQ, d_model=96, n_layers=2, n_heads=4, mlp_hidden=192)
    model = cfg.build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(220):
        starts = torch.randint(0, len(data) - SEQ - 1, (16,), generator=g)
        batch = torch.stack([data[s : s + SEQ + 1] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), float(loss.detach())


@pytest.fixture(scope="session")
def talker(bpe_tokenizer, tmp_path_factory):
    """Trained once per test run (pytest-xdist workers share it through a locked directory)."""
    import fcntl
    import json

    from lmforge.checkpoint import save_model
    from lmforge.release import export_hf, load_pretrained

    root = tmp_path_factory.getbasetemp().parent / "talker"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done.json").exists():
            threads = torch.get_num_threads()
            torch.set_num_threads(min(2, threads))
            try:
                model, loss = _train(copy.copy(bpe_tokenizer))  # the session's tokenizer stays without a template
            finally:
                torch.set_num_threads(threads)
            save_model(root / "ckpt", model, tokenizer=model_tok(bpe_tokenizer))
            export_hf(model, model_tok(bpe_tokenizer), root / "hf", overwrite=True)
            (root / "done.json").write_text(json.dumps({"loss": loss}))
    model, tok = load_pretrained(root / "ckpt")
    loss = json.loads((root / "done.json").read_text())["loss"]
    return SimpleNamespace(model=model.eval(), tok=tok, ckpt=root / "ckpt", hf=root / "hf", loss=loss)


def model_tok(bpe_tokenizer):
    from lmforge.tokenizer.chat import get_chat_template

    tok = copy.copy(bpe_tokenizer)
    tok.chat_template = get_chat_template("tulu").jinja()
    return tok
