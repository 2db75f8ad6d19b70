"""SFT and DPO: train modules on the one Trainer, from an lmforge checkpoint or an HF directory.

Tiny OLMo-2 models on small generated conversations (tests/train/chat_data.py): SFT lowers the
held-out assistant-token loss and trains on assistant tokens only (checked on the labels the
trainer hands to the module); packed rows compute what padded rows compute; DPO raises the
reward margin on held-out pairs; every DPO loss equals a hand-computed value; both resume exactly;
the export carries the chat template so transformers produces the training tokens and `pipeline`
answers as `lmforge generate --chat` does.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.checkpoint.sharded import latest_checkpoint
from lmforge.checkpoint.unsharded import CheckpointError, load_model, save_model
from lmforge.config import ConfigError
from lmforge.models import ModelConfig
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import encode_chat
from lmforge.train.callbacks import Callback, read_metrics
from lmforge.train.config import TrainConfig
from lmforge.train.dpo import REFERENCE_CACHE, preference_loss
from lmforge.train.run import build_trainer, train
from tests.train.chat_data import HELDOUT_OBJECTS, TRAIN_OBJECTS, dpo_rows, sft_rows, write_jsonl

ADAPT_DIR = Path(__file__).resolve().parents[2] / "configs" / "adapt"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat(tmp_path_factory, bpe_tokenizer) -> dict[str, Path]:
    """A tiny random OLMo-2 base checkpoint (with tokenizer), its HF export, and SFT/DPO files."""
    from lmforge.release import export_hf

    d = tmp_path_factory.mktemp("chat")
    tok = Tokenizer.from_file(bpe_tokenizer.source)
    torch.manual_seed(0)
    model = ModelConfig(arch="olmo2", d_model=64, n_layers=2, n_heads=4, mlp_hidden=128, vocab_size=tok.vocab_size, max_seq_len=256).build()
    save_model(d / "base", model, tokenizer=tok)
    export_hf(model, tok, d / "base-hf")
    return {
        "base": d / "base",
        "base_hf": d / "base-hf",
        "sft": write_jsonl(d / "sft" / "train.jsonl", sft_rows(TRAIN_OBJECTS, 160, seed=1)),
        "sft_heldout": write_jsonl(d / "sft" / "heldout.jsonl", sft_rows(HELDOUT_OBJECTS, 24, seed=2)),
        "dpo": write_jsonl(d / "dpo" / "train.jsonl", dpo_rows(TRAIN_OBJECTS, 96, seed=3)),
        "dpo_heldout": write_jsonl(d / "dpo" / "heldout.jsonl", dpo_rows(HELDOUT_OBJECTS, 24, seed=4)),
    }


def _cfg(files, run_dir: Path, objective: str, **sections) -> TrainConfig:
    d = {
        "run": {"name": run_dir.name, "dir": str(run_dir), "seed": 1, "device": "cpu", "init_from": str(files["base"])},
        "chat": {"paths": [str(files[objective])], "template": "tulu", "seed": 2},
        "optim": {"lr": 3e-3 if objective == "sft" else 1e-3, "weight_decay": 0.0},
        "schedule": {"kind": "linear", "warmup_ratio": 0.1, "final_lr_ratio": 0.0},
        "trainer": {"objective": objective, "epochs": 1, "seq_len": 128, "global_batch": 8, "micro_batch": 4, "stability": {"spike_k": None}},
        "checkpoint": {"every": 5, "keep_last": 3},
        "logging": {"progress": False, "plot": False},
    }
    for name, update in sections.items():
        d[name] = {**d.get(name, {}), **update}
    return TrainConfig.from_dict(d)


def _evals(run_dir: Path, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_metrics(run_dir) if key in r]


# --- SFT ------------------------------------------------------------------------------------------
def test_sft_loss_is_on_assistant_tokens_only(chat, tmp_path, bpe_tokenizer):
    """The labels the trainer hands to the module are exactly the assistant tokens (and EOS)."""
    cfg = _cfg(chat, tmp_path / "run", "sft")
    trainer = build_trainer(cfg, quiet=True)
    tok = Tokenizer.from_file(bpe_tokenizer.source)
    data = trainer.data.dataset
    rows = [r for mb in trainer.micro_batches(0) for r in zip(mb.input_ids, mb.labels)]
    assert len(rows) == 8
    for (ids, labels), i in zip(rows, data.batch_indices(0, 8)):
        ex = data.examples[data.instances[i][0]]
        n = len(ex.ids)
        target = labels[: n - 1]
        counted = target != IGNORE_INDEX
        assert counted.tolist() == ex.loss_mask[1:].tolist()  # the mask itself: token t+1 counts iff it is the assistant's
        assert (target[counted] == ids[1:n][counted]).all()
        assert (labels[n - 1 :] == IGNORE_INDEX).all()
        said = tok.decode(ids[1:n][counted].tolist())
        assert said.endswith(tok.eos_token) or ex.truncated
        assert "<|user|>" not in said and "What colour" not in said and "<|assistant|>" not in said


def test_sft_lowers_heldout_assistant_loss(chat, tmp_path):
    run = tmp_path / "sft"
    cfg = _cfg(chat, run, "sft", chat={"heldout": [str(chat["sft_heldout"])], "packing": True}, trainer={"epochs": 3}, eval={"every": 10})
    last = train(cfg, quiet=True)
    heldout = _evals(run, "eval/heldout/loss")
    assert heldout[0][0] == 0 and heldout[-1][0] == last["step"]  # before the first step and at the end
    assert heldout[-1][1] < 0.6 * heldout[0][1], heldout
    train_losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert train_losses[-1] < 0.6 * train_losses[0]
    saved = TrainConfig.from_yaml(run / "config.yaml")
    assert saved.model == ModelConfig.from_dict(yaml.safe_load((chat["base"] / "config.yaml").read_text())["model"])
    assert saved.trainer.max_steps == last["step"] and saved.schedule.total_steps == last["step"]  # 3 epochs, resolved


def test_packed_rows_compute_what_padded_rows_compute(chat, tmp_path):
    padded = build_trainer(_cfg(chat, tmp_path / "a", "sft", trainer={"seq_len": 256}), quiet=True)
    packed = build_trainer(_cfg(chat, tmp_path / "b", "sft", chat={"packing": True}, trainer={"seq_len": 256}), quiet=True)
    k = next(k for k, inst in enumerate(packed.data.dataset.instances) if len(inst) >= 3)
    inst = packed.data.dataset.instances[k]
    pk = packed.data.dataset.rows_micro_batch([k])
    pd = padded.data.dataset.rows_micro_batch(inst)

    def loss_and_grads(trainer, arrays):
        from lmforge.train.module import MicroBatch

        t = {k: torch.from_numpy(v) for k, v in arrays.items()}
        mb = MicroBatch(t.pop("input_ids"), t.pop("labels"), t.pop("document_ids", None), t)
        trainer.module.model.zero_grad()
        loss, _ = trainer.module.loss_sum(mb)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trainer.module.model.parameters()]

    la, ga = loss_and_grads(packed, pk)
    lb, gb = loss_and_grads(padded, pd)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_sft_from_an_hf_directory(chat, tmp_path):
    run = tmp_path / "hf"
    train(_cfg(chat, run, "sft", run={"init_from": str(chat["base_hf"])}, trainer={"epochs": None, "max_steps": 2}), quiet=True)
    a = load_model(latest_checkpoint(run))
    base = load_model(chat["base"])
    assert a.config == base.config
    assert not torch.equal(a.embed.weight, base.embed.weight)  # trained
    # A run directory as init_from means its latest checkpoint.
    run2 = tmp_path / "from-run"
    train(_cfg(chat, run2, "sft", run={"init_from": str(run)}, trainer={"epochs": None, "max_steps": 1}, optim={"lr": 1e-9}), quiet=True)
    torch.testing.assert_close(load_model(latest_checkpoint(run2)).embed.weight, a.embed.weight)


# --- DPO ------------------------------------------------------------------------------------------
def test_every_dpo_loss_matches_a_hand_computed_value():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -2.5]), torch.tensor([-11.5, -2.5])
    beta = 0.1
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # Pair 0: logits = (pc - rc) - (pr - rr) = (1) - (-0.5) = 1.5; pair 1: (-0.5) - (0.5) = -1.
    want_dpo = [-math.log(sig(0.1 * 1.5)), -math.log(sig(0.1 * -1.0))]
    losses, cr, rj = preference_loss(pc, pr, rc, rr, loss_type="sigmoid", beta=beta)
    torch.testing.assert_close(losses, torch.tensor(want_dpo))
    torch.testing.assert_close(cr, torch.tensor([0.1, -0.05]))
    torch.testing.assert_close(rj, torch.tensor([-0.05, 0.05]))
    losses, _, _ = preference_loss(pc, pr, rc, rr, loss_type="ipo", beta=beta)
    torch.testing.assert_close(losses, torch.tensor([(1.5 - 5.0) ** 2, (-1.0 - 5.0) ** 2]))
    losses, cr, rj = preference_loss(pc, pr, None, None, loss_type="simpo", beta=2.0, gamma_beta_ratio=0.5)
    # SimPO: -log σ(β (pc - pr) - β γ/β) = -log σ(2 (2 - 0.5)) and -log σ(2 (-1 - 0.5))
    torch.testing.assert_close(losses, torch.tensor([-math.log(sig(3.0)), -math.log(sig(-3.0))]))
    torch.testing.assert_close(cr, 2.0 * pc)
    torch.testing.assert_close(rj, 2.0 * pr)
    with pytest.raises(ValueError, match="needs reference"):
        preference_loss(pc, pr, None, None, loss_type="sigmoid")


def test_dpo_norm_is_the_sigmoid_loss_on_length_normalised_logprobs():
    """dpo_norm (Tulu 3) takes each response's log-probability averaged over its tokens: from
    per-token log-probs of responses of different lengths, by hand."""
    tokens = {  # pair -> (policy chosen, policy rejected, reference chosen, reference rejected), per token
        0: ([-1.0, -2.0, -0.5, -0.5], [-3.0, -1.0], [-1.5, -2.0, -1.0, -1.5], [-2.0, -1.0]),
        1: ([-2.0, -2.0], [-1.0, -1.0, -1.0], [-1.0, -2.0], [-1.0, -0.5, -0.5]),
    }
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    avg = {k: [mean(v) for v in vs] for k, vs in tokens.items()}
    # pair 0: averages -1, -2, -1.5, -1.5 -> logits (-1 + 1.5) - (-2 + 1.5) = 1       (summed: (-4 + 6) - (-4 + 3) = 3)
    # pair 1: averages -2, -1, -1.5, -2/3 -> logits (-2 + 1.5) - (-1 + 2/3) = -1/6    (summed: (-4 + 3) - (-3 + 2) = 0)
    assert avg == {0: [-1.0, -2.0, -1.5, -1.5], 1: [-2.0, -1.0, -1.5, pytest.approx(-2 / 3)]}
    beta = 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = torch.tensor([-math.log(sig(beta * 1.0)), -math.log(sig(beta * -1 / 6))])
    pc, pr, rc, rr = (torch.tensor([avg[0][j], avg[1][j]]) for j in range(4))
    losses, cr, rj = preference_loss(pc, pr, rc, rr, loss_type="dpo_norm", beta=beta)
    torch.testing.assert_close(losses, want)
    torch.testing.assert_close(cr, torch.tensor([beta * 0.5, beta * -0.5]))  # β (pc - rc)
    torch.testing.assert_close(rj, torch.tensor([beta * -0.5, beta * -1 / 3]))  # β (pr - rr)
    # the averaging matters on these inputs: the summed log-probs give another loss
    summed = [torch.tensor([sum(tokens[0][j]), sum(tokens[1][j])]) for j in range(4)]
    on_sums, _, _ = preference_loss(*summed, loss_type="sigmoid", beta=beta)
    assert (on_sums - want).abs().min() > 0.02


def _token_logps(model, mb) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each row's label tokens, and their counts, from the model's plain logits."""
    with torch.no_grad():
        logp = torch.log_softmax(model(mb.input_ids).float(), -1)
    keep = mb.labels != IGNORE_INDEX
    tok_lp = logp.gather(-1, mb.labels.clamp(min=0)[..., None]).squeeze(-1) * keep
    return tok_lp.sum(-1), keep.sum(-1)


@pytest.mark.parametrize("loss_type", ["sigmoid", "dpo_norm", "ipo", "simpo"])
def test_dpo_module_uses_sequence_logprobs(chat, tmp_path, loss_type):
    """The module's loss on a micro-batch of a policy that has moved away from the reference equals
    the loss computed by hand from log-probs summed (or averaged) from plain logits: the policy's
    for the policy, the starting weights' (the cached reference) for the reference."""
    beta, ratio = 0.2, 0.5
    cfg = _cfg(chat, tmp_path / loss_type, "dpo", dpo={"loss": loss_type, "beta": beta, "gamma_beta_ratio": ratio})
    trainer = build_trainer(cfg, quiet=True)
    module = trainer.module
    module.prepare(trainer)  # the reference: the starting weights
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # the policy moves away from the reference
        for p in module.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    mb = trainer.micro_batches(0)[0]
    b = mb.input_ids.shape[0] // 2
    reference = load_model(chat["base"]).eval()
    module.model.eval()  # as the reference pass (no dropout either way)
    pol, n = _token_logps(module.model, mb)
    ref, n_ref = _token_logps(reference, mb)
    assert torch.equal(n, n_ref) and (n[:b] != n[b:]).any()  # responses of different lengths
    if loss_type != "sigmoid":  # the other three average over response tokens
        pol, ref = pol / n, ref / n
    pc, pr, rc, rr = pol[:b], pol[b:], ref[:b], ref[b:]
    if loss_type == "simpo":
        want = -torch.nn.functional.logsigmoid(beta * (pc - pr) - beta * ratio)
        margin = beta * (pc - pr)
    else:
        logits = (pc - rc) - (pr - rr)
        want = (logits - 1 / (2 * beta)) ** 2 if loss_type == "ipo" else -torch.nn.functional.logsigmoid(beta * logits)
        margin = beta * logits
    with torch.no_grad():
        got, parts = module.loss_sum(mb)
    torch.testing.assert_close(got, want.sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["rewards_margin"], margin.sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts["rewards_accuracy"], (margin > 0).float().sum())
    if loss_type != "simpo":
        assert (tmp_path / loss_type / REFERENCE_CACHE).is_file()
        assert margin.abs().max() > 1e-2  # the policy differs from the reference: the loss is not a constant
        constant = b * (math.log(2.0) if loss_type != "ipo" else (1 / (2 * beta)) ** 2)  # its value at policy = reference
        assert abs(got.item() - constant) > 1e-3 * constant, (got, constant)


def test_dpo_raises_the_heldout_margin(chat, tmp_path):
    run = tmp_path / "dpo"
    cfg = _cfg(chat, run, "dpo", chat={"heldout": [str(chat["dpo_heldout"])]}, trainer={"epochs": 2}, eval={"every": 6})
    last = train(cfg, quiet=True)
    margins = _evals(run, "eval/heldout/rewards_margin")
    accuracy = _evals(run, "eval/heldout/rewards_accuracy")
    assert margins[0] == (0, pytest.approx(0.0, abs=1e-4))  # the policy is the reference before step 1
    assert margins[-1][0] == last["step"] and margins[-1][1] > 0.5, margins
    assert accuracy[-1][1] > 0.9, accuracy
    records = [r for r in read_metrics(run) if "loss" in r]
    assert {"rewards_chosen", "rewards_rejected", "rewards_margin", "rewards_accuracy", "pairs"} <= set(records[-1])
    assert records[-1]["loss"] < records[0]["loss"]


# --- resume ---------------------------------------------------------------------------------------
class _Crash(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.at:
            raise KeyboardInterrupt(f"simulated crash after step {self.at}")


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_resume_is_exact(chat, tmp_path, objective):
    extra = dict(trainer={"epochs": 1.5}, checkpoint={"every": 4, "keep_last": 5})
    whole = tmp_path / "whole"
    train(_cfg(chat, whole, objective, **extra), quiet=True)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(chat, part, objective, **extra), quiet=True, callbacks=[_Crash(6)])
    if objective == "dpo":
        (part / REFERENCE_CACHE).rename(part / "moved")  # a resumed DPO run must not recompute it from the trained policy
        with pytest.raises(Exception, match="reference_logps.safetensors is missing"):
            train(_cfg(chat, part, objective, **extra), quiet=True, resume=True)
        (part / "moved").rename(part / REFERENCE_CACHE)
    train(_cfg(chat, part, objective, **extra), quiet=True, resume=True)
    a = [(r["step"], r["loss"], r["grad_norm"], r["tokens_seen"]) for r in read_metrics(whole) if "loss" in r]
    b = [(r["step"], r["loss"], r["grad_norm"], r["tokens_seen"]) for r in read_metrics(part) if "loss" in r]
    assert a == b and len(a) > 6
    ma, mb = load_model(latest_checkpoint(whole)), load_model(latest_checkpoint(part))
    for (k, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(x, y), k


# --- export and chat ------------------------------------------------------------------------------
def test_export_carries_the_chat_template(chat, tmp_path, monkeypatch):
    import transformers

    from lmforge.generate import GenerationConfig
    from lmforge.cli.generate import run_generate
    from lmforge.config import ConfigError
    from lmforge.release import export_hf, load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "sft"
    train(_cfg(chat, run, "sft", trainer={"epochs": 2}), quiet=True)
    model, tok = load_pretrained(run)  # a run directory: its latest checkpoint
    assert tok.chat_template is not None
    export_hf(model, tok, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    conv = sft_rows(TRAIN_OBJECTS, 3, seed=9)[2]["messages"]
    ids = hf_tok.apply_chat_template(conv, tokenize=True)
    ids = list(ids if isinstance(ids, list) else ids["input_ids"])
    assert ids == encode_chat(tok, conv, "tulu").ids

    question = [{"role": "user", "content": "What colour is the old boat?"}]
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "hf"), device="cpu")
    hf_reply = pipe(question, max_new_tokens=12, do_sample=False)[0]["generated_text"][-1]
    assert hf_reply["role"] == "assistant"
    out = io.StringIO()
    assert run_generate(str(tmp_path / "hf"), [question[0]["content"]], GenerationConfig(max_new_tokens=12), stream=False, chat=True, stdout=out) == 0
    ours = out.getvalue().split("assistant: ", 1)[1].rstrip("\n")
    assert ours == hf_reply["content"]
    # Interactive: turns add up; an empty line ends the conversation.
    out = io.StringIO()
    assert run_generate(str(tmp_path / "hf"), None, GenerationConfig(max_new_tokens=8), stream=True, chat=True, stdin=io.StringIO("What colour is the red lamp?\nAnd the tall door?\n\n"), stdout=out) == 0
    assert len(out.getvalue().splitlines()) == 2
    # A model without a template says so.
    with pytest.raises(ConfigError, match="no chat template"):
        run_generate(str(chat["base_hf"]), ["hi"], GenerationConfig(max_new_tokens=2), chat=True, stdout=io.StringIO())


# --- configs and errors ---------------------------------------------------------------------------
def test_config_errors(chat, tmp_path):
    with pytest.raises(ConfigError, match="chat.paths is empty"):
        TrainConfig.from_dict({"trainer": {"objective": "sft"}})
    with pytest.raises(ConfigError, match="trainer.objective is 'lm'"):
        TrainConfig.from_dict({"chat": {"paths": ["x.jsonl"]}})
    with pytest.raises(ConfigError, match="eval.every is null"):
        build_trainer(_cfg(chat, tmp_path / "a", "sft", chat={"heldout": [str(chat["sft_heldout"])]}), quiet=True)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        build_trainer(_cfg(chat, tmp_path / "b", "sft", run={"init_from": str(tmp_path / "missing")}), quiet=True)
    with pytest.raises(ConfigError, match="unknown config key 'dpo.betta'"):
        TrainConfig.from_dict({"dpo": {"betta": 0.1}})
    bad = write_jsonl(tmp_path / "bad.jsonl", [], ["{oops", '{"messages": []}'])
    with pytest.raises(ConfigError, match="no usable sft examples .*malformed"):
        build_trainer(_cfg(chat, tmp_path / "c", "sft", chat={"paths": [str(bad)]}), quiet=True)
    assert (tmp_path / "c" / "data_accounting.json").is_file()


ADAPT_CONFIGS = sorted(ADAPT_DIR.glob("*.yaml"))


def test_official_adaptation_recipes():
    sft = TrainConfig.from_yaml(ADAPT_DIR / "olmo-7b-sft.yaml")
    assert sft.trainer.objective == "sft" and sft.optim.lr == 2e-6 and sft.trainer.epochs == 3
    assert sft.schedule.kind == "linear" and sft.schedule.warmup_ratio == 0.03 and sft.schedule.final_lr_ratio == 0.0
    assert sft.trainer.seq_len == 2048 and sft.optim.weight_decay == 0.0 and sft.chat.template == "tulu"
    dpo = TrainConfig.from_yaml(ADAPT_DIR / "olmo-7b-instruct-dpo.yaml")
    assert dpo.trainer.objective == "dpo" and dpo.optim.lr == 5e-7 and dpo.dpo.beta == 0.1 and dpo.dpo.loss == "sigmoid"
    assert dpo.trainer.epochs == 3 and dpo.schedule.warmup_ratio == 0.1 and dpo.schedule.final_lr_ratio == 0.0
    for cfg in (sft, dpo):
        cfg.micro_batch(8)  # launched on 8 GPUs


@pytest.mark.parametrize("path", ADAPT_CONFIGS, ids=lambda p: p.name)
def test_adaptation_config_trains_one_step(path, chat, tmp_path):
    shipped = TrainConfig.from_yaml(path)
    d = shipped.to_dict()
    d["run"].update(dir=str(tmp_path / "run"), device="cpu", init_from=str(chat["base"]))
    d["chat"].update(paths=[str(chat[shipped.trainer.objective])], heldout=[])
    d["trainer"].update(global_batch=2, micro_batch=1, seq_len=128, epochs=None, max_steps=1, precision="fp32", parallel="none", activation_checkpointing=False)
    d["checkpoint"].update(every=None)
    d["logging"].update(plot=False, progress=False)
    d["eval"].update(every=None)
    cfg = TrainConfig.from_dict(d)
    last = train(cfg, quiet=True)
    assert last["step"] == 1 and math.isfinite(last["loss"]) and last["lr"] > 0
    assert cfg.schedule.kind == shipped.schedule.kind and cfg.dpo == shipped.dpo and cfg.chat.template == shipped.chat.template


@pytest.mark.parametrize("objective", ["sft", "dpo"])
def test_data_inspect_shows_the_step_with_loss_tokens_marked(chat, tmp_path, capsys, objective):
    from lmforge.cli import main
    from lmforge.data.inspect import inspect_step

    run = tmp_path / objective
    cfg = _cfg(chat, run, objective, trainer={"epochs": None, "max_steps": 2})
    trainer = build_trainer(cfg, quiet=True)
    cfg.save(run / "config.yaml")
    trainer.fit()
    rows = list(inspect_step(run, 2))
    assert [r["rank"] for r in rows] == [0] * 8
    # The same sequences step 2 trained on (0-based batch 1), in order: conversations, or chosen responses.
    trained = []
    for mb in trainer.micro_batches(1):
        trained += list(mb.input_ids if objective == "sft" else mb.input_ids[: mb.input_ids.shape[0] // 2])
    assert [t[: len(r["tokens"])].tolist() for t, r in zip(trained, rows)] == [r["tokens"] for r in rows]
    for r in rows:
        assert "[[" in r["text"] and r["doc_ids"][0].startswith(str(chat[objective]))
        for span in r["text"].split("[[")[1:]:
            assert "<|user|>" not in span.split("]]")[0]
    assert main(["data", "inspect", "--run", str(run), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "=== step 1 instance 0" in out and ("CHOSEN: " in out) == (objective == "dpo")
