"""The Trainer and its train module, in-process: real tiny models on real token files, a few steps each."""

from __future__ import annotations

import copy
import json
import math
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from lmforge.checkpoint.sharded import list_checkpoints
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.data.documents import DataError
from lmforge.data.mixture import document_ids
from lmforge.data.token_files import read_token_file
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.optim import OptimConfig, ScheduleConfig
from lmforge.train.callbacks import Callback, read_metrics
from lmforge.train.config import StabilityConfig, TrainConfig
from lmforge.train.module import LMTrainModule, MicroBatch, TrainingError
from lmforge.train.run import build_trainer, train
from tests.conftest import tiny_config
from tests.train.conftest import run_config, write_run_config

TRAIN_KEYS = {"step", "loss", "ce", "grad_norm", "lr", "tokens", "tokens_seen", "step_time", "tokens_per_s", "tokens_per_s_per_device"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(token_dirs, run_dir, **sections) -> TrainConfig:
    return TrainConfig.from_dict(run_config(token_dirs, run_dir, **sections))


def _train_records(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "loss" in r]


def _one_line(msg: str) -> None:
    assert msg and "\n" not in msg.strip(), msg


# --- a run end to end ------------------------------------------------------------------------------
def test_run_learns_logs_evaluates_and_plots(token_dirs, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(
        token_dirs,
        run,
        schedule={"total_steps": 15},
        eval={"every": 5, "perplexity": [{"paths": [str(token_dirs["val"])], "name": "val"}], "max_instances": 16},
        logging={"progress": False, "plot": True},
    )
    last = train(cfg, quiet=True)

    records = read_metrics(run)
    steps = _train_records(run)
    assert [r["step"] for r in steps] == list(range(1, 16))
    for r in steps:
        assert TRAIN_KEYS <= r.keys(), TRAIN_KEYS - r.keys()
        assert "skipped" not in r
        assert r["tokens"] == 8 * 63  # the last position of each instance has no next token
        assert r["tokens_seen"] == r["step"] * 8 * 64
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["tokens_per_s"] > 0
        assert r["ce"] == pytest.approx(r["loss"])  # no z-loss
    assert last["step"] == 15 and last["loss"] == steps[-1]["loss"]
    losses = [r["loss"] for r in steps]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    # warmup 2, then cosine decay to 10% of the peak
    assert steps[0]["lr"] == pytest.approx(1.5e-3) and steps[1]["lr"] == pytest.approx(3e-3)
    assert all(a["lr"] >= b["lr"] for a, b in zip(steps[1:], steps[2:]))

    evals = [r for r in records if "eval/val/loss" in r]
    assert [r["step"] for r in evals] == [5, 10, 15]  # every 5 steps; the end is step 15, not evaluated twice
    for r in evals:
        assert r["eval/val/tokens"] == 16 * 63
        assert r["eval/val/ppl"] == pytest.approx(math.exp(r["eval/val/loss"]))
    assert evals[-1]["eval/val/loss"] < evals[0]["eval/val/loss"]

    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(run / "curves.png") as im:
        im.verify()
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200

    assert [s for s, _ in list_checkpoints(run)] == [10, 15]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run"]["dir"] == str(run) and saved["schedule"]["total_steps"] == 15
    assert (run / "data_order.json").is_file()


def test_gradient_accumulation_matches_one_big_batch(token_dirs, tmp_path):
    sections = dict(schedule={"total_steps": 5}, checkpoint={"every": None, "at_end": False})
    train(_cfg(token_dirs, tmp_path / "big", trainer={"global_batch": 8, "micro_batch": 8}, **sections), quiet=True)
    train(_cfg(token_dirs, tmp_path / "accum", trainer={"global_batch": 8, "micro_batch": 2}, **sections), quiet=True)
    big, accum = _train_records(tmp_path / "big"), _train_records(tmp_path / "accum")
    assert len(big) == len(accum) == 5
    for a, b in zip(big, accum):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["tokens"] == a["tokens"]
    assert not list_checkpoints(tmp_path / "big")


# --- loss normalisation ----------------------------------------------------------------------------
class RecordingSGD(torch.optim.SGD):
    """Plain SGD that keeps a copy of the gradients it was asked to apply."""

    def step(self, closure=None):
        self.seen = {id(p): p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None}
        return super().step(closure)


def _micro_batch(gen: torch.Generator, b: int, T: int, counted: int, vocab: int = 384) -> MicroBatch:
    ids = torch.randint(0, vocab, (b, T), generator=gen)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]
    flat = labels.view(-1)
    keep = torch.randperm(flat.numel(), generator=gen)
    keep = keep[flat[keep] != IGNORE_INDEX][:counted]
    masked = torch.full_like(flat, IGNORE_INDEX)
    masked[keep] = flat[keep]
    return MicroBatch(ids, masked.view(b, T))


def test_loss_is_the_mean_over_counted_tokens_of_the_global_batch():
    torch.manual_seed(0)
    model = tiny_config(max_seq_len=32).build("cpu")
    gen = torch.Generator().manual_seed(1)
    mbs = [_micro_batch(gen, 2, 16, counted=5), _micro_batch(gen, 2, 16, counted=27), _micro_batch(gen, 2, 16, counted=12)]
    assert [mb.n_label_tokens for mb in mbs] == [5, 27, 12]

    reference = copy.deepcopy(model)
    sums = []
    for mb in mbs:
        logits = reference(mb.input_ids)  # plain logits, (b, T, V)
        sums.append(F.cross_entropy(logits.flatten(0, 1).float(), mb.labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"))
    n = sum(mb.n_label_tokens for mb in mbs)
    ref_loss = sum(sums) / n
    ref_loss.backward()
    # A per-micro-batch mean (averaged over micro-batches) is a different number: the test can tell.
    mean_of_means = sum(s.item() / mb.n_label_tokens for s, mb in zip(sums, mbs)) / len(mbs)
    assert abs(mean_of_means - ref_loss.item()) > 1e-4 * ref_loss.item()  # vs rel=1e-6 below

    opt = RecordingSGD(model.parameters(), lr=0.0)
    module = LMTrainModule(model, opt, ScheduleConfig(kind="constant", total_steps=10), peak_lr=0.1, grad_clip=None, stability=None)
    metrics = module.train_batch(mbs, 0)
    assert metrics["tokens"] == n == 44
    assert metrics["loss"] == pytest.approx(ref_loss.item(), rel=1e-6)
    assert metrics["ce"] == pytest.approx(ref_loss.item(), rel=1e-6)
    assert metrics["lr"] == 0.1

    ref_grads = {name: p.grad for name, p in reference.named_parameters()}
    grad_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in ref_grads.values()))
    assert metrics["grad_norm"] == pytest.approx(grad_norm.item(), rel=1e-5)
    for name, p in model.named_parameters():
        got = opt.seen[id(p)]
        torch.testing.assert_close(got, ref_grads[name], rtol=1e-4, atol=1e-7, msg=name)
    assert all(p.grad is None for p in model.parameters())  # zeroed after the step


# --- stability: skipped updates ---------------------------------------------------------------------
class FaultyLM(LMTrainModule):
    """Next-token prediction whose loss is multiplied by ``faults[step]`` at chosen (0-based) steps:
    ``nan`` makes the loss and every gradient NaN, a large factor makes a loss spike."""

    def __init__(self, *args, faults: dict[int, float], **kwargs):
        super().__init__(*args, **kwargs)
        self.faults, self._step = faults, None

    def train_batch(self, micro_batches, step):
        self._step = step
        return super().train_batch(micro_batches, step)

    def loss_sum(self, mb):
        loss, parts = super().loss_sum(mb)
        factor = self.faults.get(self._step)
        if factor is not None:
            loss = loss * factor
            parts = {k: v * factor for k, v in parts.items()}
        return loss, parts

    @classmethod
    def replacing(cls, module: LMTrainModule, faults: dict[int, float]) -> FaultyLM:
        return cls(
            module.model,
            module.optimizer,
            module.schedule,
            peak_lr=module.peak_lr,
            grad_clip=module.grad_clip,
            autocast_dtype=module.autocast_dtype,
            stability=module.stability,
            device=module.device,
            z_loss=module.z_loss,
            faults=faults,
        )


def _faulty_module(faults: dict[int, float], **stability) -> FaultyLM:
    torch.manual_seed(0)
    model = tiny_config(max_seq_len=32).build("cpu")
    opt = OptimConfig(lr=1e-3).build(model)
    return FaultyLM(
        model, opt, ScheduleConfig(kind="constant", total_steps=100), peak_lr=1e-3, stability=StabilityConfig(**stability), faults=faults
    )


def _state(module: LMTrainModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def _unchanged(before: dict[str, torch.Tensor], module: LMTrainModule) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.model.state_dict().items())


def test_nonfinite_loss_skips_the_update():
    module = _faulty_module({1: float("nan")})
    gen = torch.Generator().manual_seed(0)
    mbs = [_micro_batch(gen, 2, 16, counted=30)]
    m0 = module.train_batch(mbs, 0)
    assert "skipped" not in m0
    before, adam_steps = _state(module), [s["step"].item() for s in module.optimizer.state.values()]
    m1 = module.train_batch(mbs, 1)
    assert math.isnan(m1["loss"]) and m1["skipped"].startswith("non-finite loss")
    assert _unchanged(before, module)
    assert [s["step"].item() for s in module.optimizer.state.values()] == adam_steps  # no optimizer step either
    assert module.consecutive_skips == 1 and len(module.recent_losses) == 1
    m2 = module.train_batch(mbs, 2)  # the next step trains again
    assert "skipped" not in m2 and math.isfinite(m2["loss"])
    assert not _unchanged(before, module)
    assert module.consecutive_skips == 0


def test_loss_spike_skips_the_update():
    module = _faulty_module({5: 100.0}, spike_k=6.0, window=10, min_history=4)
    gen = torch.Generator().manual_seed(0)
    mbs = [_micro_batch(gen, 2, 16, counted=30)]
    for step in range(5):
        assert "skipped" not in module.train_batch(mbs, step)
    before = _state(module)
    m = module.train_batch(mbs, 5)
    assert m["skipped"].startswith("loss spike") and math.isfinite(m["loss"])
    assert _unchanged(before, module)
    assert len(module.recent_losses) == 5  # a skipped loss does not enter the history
    assert "skipped" not in module.train_batch(mbs, 6)
    assert not _unchanged(before, module)


def test_no_spike_detection_before_min_history():
    module = _faulty_module({2: 100.0}, spike_k=6.0, min_history=4)
    gen = torch.Generator().manual_seed(0)
    mbs = [_micro_batch(gen, 2, 16, counted=30)]
    assert all("skipped" not in module.train_batch(mbs, s) for s in range(3))


def test_too_many_consecutive_skips_stop_training():
    module = _faulty_module({0: float("nan"), 1: float("nan"), 2: float("nan")}, max_consecutive_skips=2)
    gen = torch.Generator().manual_seed(0)
    mbs = [_micro_batch(gen, 2, 16, counted=30)]
    assert "skipped" in module.train_batch(mbs, 0)
    assert "skipped" in module.train_batch(mbs, 1)
    with pytest.raises(TrainingError) as e:
        module.train_batch(mbs, 2)
    _one_line(str(e.value))
    assert "step 3" in str(e.value) and "3 updates in a row skipped" in str(e.value)


def test_trainer_logs_skipped_steps_and_stops_after_too_many(token_dirs, tmp_path):
    run = tmp_path / "skips"
    cfg = _cfg(
        token_dirs,
        run,
        schedule={"total_steps": 5},
        trainer={"stability": {"max_consecutive_skips": 1}},
        logging={"progress": False, "plot": False, "every": 2},
    )
    trainer = build_trainer(cfg, quiet=True)
    trainer.module = FaultyLM.replacing(trainer.module, {2: float("nan")})
    trainer.fit()
    records = _train_records(run)
    # logging.every=2 logs steps 2, 4, 5 (the last); a skipped step is always logged
    assert [r["step"] for r in records] == [2, 3, 4, 5]
    assert [bool(r.get("skipped")) for r in records] == [False, True, False, False]
    assert math.isnan(records[1]["loss"]) and "non-finite" in records[1]["skipped"]

    run2 = tmp_path / "stops"
    cfg2 = _cfg(token_dirs, run2, schedule={"total_steps": 6}, trainer={"stability": {"max_consecutive_skips": 1}})
    trainer = build_trainer(cfg2, quiet=True)
    trainer.module = FaultyLM.replacing(trainer.module, {2: float("nan"), 3: float("nan")})
    with pytest.raises(TrainingError) as e:
        trainer.fit()
    _one_line(str(e.value))
    assert "step 4: 2 updates in a row skipped" in str(e.value)
    assert [r["step"] for r in _train_records(run2)] == [1, 2, 3]  # the failing step is not logged
    assert not list_checkpoints(run2)  # nothing saved from a failed run


# --- data errors, checkpoints, config -------------------------------------------------------------
def test_token_ids_outside_the_vocabulary_fail_with_file_and_offset(token_dirs, tmp_path):
    cfg = _cfg(token_dirs, tmp_path / "small-vocab", model={"vocab_size": 100})
    with pytest.raises(DataError) as e:
        train(cfg, quiet=True)
    msg = str(e.value)
    _one_line(msg)
    assert ".npy" in msg and "token offset" in msg and "vocab_size 100" in msg
    path = msg.split(":", 1)[0]
    assert path.endswith(".npy") and str(token_dirs["train"]) in path
    # the offset names a token that really is out of range
    offset = int(msg.split("token offset ")[1].split()[0])
    tokens = read_token_file(path, None)
    assert int(tokens[offset]) >= 100


def test_checkpoint_pruning_during_a_run(token_dirs, tmp_path):
    run = tmp_path / "prune"
    train(_cfg(token_dirs, run, schedule={"total_steps": 10}, checkpoint={"every": 2, "keep_last": 2, "keep_every": 4}), quiet=True)
    assert [s for s, _ in list_checkpoints(run)] == [4, 8, 10]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step0000004", "step0000008", "step0000010"]


def test_save_at_steps_saves_the_given_steps_once(token_dirs, tmp_path, monkeypatch):
    from lmforge.train.callbacks import SaveAtSteps
    from lmforge.train.trainer import Trainer

    saved = []
    real = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self, background=False: saved.append(self.step) or real(self, background))
    run = tmp_path / "at"
    first = _cfg(token_dirs, run, schedule={"total_steps": 10}, trainer={"max_steps": 6}, checkpoint={"every": 5, "keep_last": 100})
    train(first, quiet=True, callbacks=[SaveAtSteps([8, 3, 3, 5])])
    assert saved == [3, 5, 6]  # step 5 once (the cadence saved it first), and the end (checkpoint.at_end)
    train(first.merged({"trainer": {"max_steps": 10}}), resume=True, quiet=True, callbacks=[SaveAtSteps([3, 5, 8])])
    assert saved == [3, 5, 6, 8, 10] and [s for s, _ in list_checkpoints(run)] == [3, 5, 6, 8, 10]


def test_unknown_config_key_is_a_one_line_error(token_dirs, tmp_path, capsys):
    cfg = run_config(token_dirs, tmp_path / "bad")
    cfg["trainer"]["global_bacth"] = 16
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="global_bacth"):
        TrainConfig.from_dict(cfg)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lmforge: error: ") and "global_bacth" in err

    good = write_run_config(token_dirs, tmp_path / "bad2")
    assert main(["train", str(good), "--trainer.no_such_key=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_key" in err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()  # nothing was started


# --- W&B -------------------------------------------------------------------------------------------
def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B transaction log (``run-ID.wandb``): a 7-byte header, then
    LevelDB-log-style chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) in
    32 KiB blocks. wandb itself has no Python reader for it any more (wandb-core is in Go)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, records, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding up to the end of the block
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_history_and_summary(run_dir: Path) -> tuple[list[dict], dict]:
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, offline
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    history, summary = [], {}
    for record in _wandb_records(next(offline[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in record.summary.update})
    summary_file = offline[0] / "files" / "wandb-summary.json"  # written by wandb versions that have one
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    return history, summary


@pytest.mark.required_in_ci
def test_wandb_offline(token_dirs, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "wb"
    wandb_cfg = {"enabled": True, "mode": "offline"}
    cfg = _cfg(token_dirs, run, schedule={"total_steps": 4}, logging={"progress": False, "plot": False, "wandb": wandb_cfg})
    try:
        train(cfg, quiet=True)
    finally:
        wandb.teardown()  # run.finish() returns before wandb-core has flushed the run file; this waits
    run_id = (run / "wandb_id").read_text().strip()
    assert len(run_id) == 8
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith("-" + run_id)

    records = _train_records(run)
    history, summary = _wandb_history_and_summary(run)
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == [r["loss"] for r in records]
    assert [h["grad_norm"] for h in history] == [r["grad_norm"] for r in records]
    assert summary["loss"] == records[-1]["loss"] and summary["_step"] == 4
    assert summary["lr"] == records[-1]["lr"]


# --- document masking ------------------------------------------------------------------------------
def test_document_masking_run(token_dirs, tmp_path):
    sections = dict(schedule={"total_steps": 3}, checkpoint={"every": None, "at_end": False})
    train(_cfg(token_dirs, tmp_path / "masked", data={"document_masking": True}, **sections), quiet=True)
    train(_cfg(token_dirs, tmp_path / "plain", **sections), quiet=True)
    masked, plain = _train_records(tmp_path / "masked"), _train_records(tmp_path / "plain")
    assert [r["step"] for r in masked] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in masked)
    # The same batches, so the difference is the attention mask (rows hold several documents).
    assert masked[0]["loss"] != plain[0]["loss"]
    assert masked[0]["tokens"] == plain[0]["tokens"]


def test_document_ids_attend_within_a_document_only():
    torch.manual_seed(0)
    model = tiny_config(max_seq_len=64).build("cpu").eval()
    eos, s, T = 0, 11, 27
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 384, (1, T), generator=gen)
    ids[0, s - 1] = eos  # document 1 is ids[:s] (ending with its EOS), document 2 is ids[s:]
    docs = torch.from_numpy(document_ids(ids.numpy(), eos))
    assert docs.tolist() == [[0] * s + [1] * (T - s)]
    with torch.no_grad():
        packed = model(ids, document_ids=docs)
        first = model(ids[:, :s])
        second = model(ids[:, s:], position_ids=torch.arange(s, T)[None])  # positions are not reset
        unmasked = model(ids)
    torch.testing.assert_close(packed[:, :s], first, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed[:, s:], second, rtol=0, atol=1e-5)
    assert (unmasked[:, s:] - second).abs().max() > 1e-3  # without document ids, document 2 sees document 1
    torch.testing.assert_close(unmasked[:, :s], first, rtol=0, atol=1e-5)


def test_in_loop_downstream_tasks(token_dirs, tmp_path):
    """eval.downstream plugs the downstream evaluator into the trainer: per-task metrics every N
    steps, equal to evaluating the saved checkpoint offline on the same examples."""
    from lmforge.checkpoint import load_model
    from lmforge.eval.downstream import evaluate_tasks
    from lmforge.tokenizer import Tokenizer

    run = tmp_path / "run"
    cfg = _cfg(
        token_dirs,
        run,
        schedule={"total_steps": 4},
        checkpoint={"every": 2},
        eval={"every": 2, "downstream": {"tasks": ["arc_easy", "winogrande"], "limit": 6, "pmi": "all"}},
    )
    train(cfg, quiet=True)
    evals = [r for r in read_metrics(run) if "eval/downstream/primary_avg" in r]
    assert [r["step"] for r in evals] == [2, 4]
    last = evals[-1]
    model = load_model(run / "checkpoints" / "step0000004")
    tok = Tokenizer.from_file(token_dirs["tokenizer"], eos_token_id=0, pad_token_id=1)
    offline = evaluate_tasks(model, tok, ["arc_easy", "winogrande"], limit=6, progress=False, max_length=64)
    for task in ("arc_easy", "winogrande"):
        for metric in ("acc", "acc_per_char"):
            assert last[f"eval/downstream/{task}/{metric}"] == pytest.approx(offline["tasks"][task][metric]), (task, metric)
        assert last[f"eval/downstream/{task}/bpb"] == pytest.approx(offline["tasks"][task]["bpb"], rel=1e-4)


def test_background_checkpoints_equal_synchronous_ones_and_resume_exactly(token_dirs, tmp_path):
    """checkpoint.background: the same files as a synchronous save (weights, optimizer, RNG, step),
    written while training goes on; pruning after completion; resuming from one is exact."""
    from lmforge.checkpoint.sharded import COMPLETE, checkpoint_dir
    from lmforge.checkpoint.unsharded import load_model

    runs = {}
    for bg in (False, True):
        run = tmp_path / f"bg-{bg}"
        cfg = TrainConfig.from_dict(run_config(token_dirs, run, checkpoint={"every": 4, "keep_last": 2, "background": bg}))
        train(cfg, quiet=True)
        runs[bg] = run
    sync, bg = runs[False], runs[True]
    assert [s for s, _ in list_checkpoints(bg)] == [8, 10] == [s for s, _ in list_checkpoints(sync)]  # pruned to keep_last
    assert not [p for p in (bg / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    for step in (8, 10):
        a, b = load_model(checkpoint_dir(sync, step)), load_model(checkpoint_dir(bg, step))
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
        assert (checkpoint_dir(bg, step) / COMPLETE).is_file()
    # Optimizer state and RNG restored from the background checkpoint: the continuation is exact.
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(bg, resumed)
    shutil.rmtree(checkpoint_dir(resumed, 10))
    cfg = TrainConfig.from_dict(run_config(token_dirs, resumed, checkpoint={"every": 4, "keep_last": 2, "background": True}))
    train(cfg, quiet=True, resume=checkpoint_dir(resumed, 8))
    want = [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(sync) if "loss" in r]
    got = [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(resumed) if "loss" in r]
    assert got == want


def test_fast_path_gives_the_plain_paths_losses(token_dirs, tmp_path):
    """The speed levers (per-block torch.compile, background checkpoints) on the CPU in float32 over
    20 steps: the same losses and grad norms as the plain path. Not bit for bit: inductor fuses the
    norm/SwiGLU element-wise ops and sums float32 in another order, so they agree to ~1e-6 (grad norms to ~1e-5); every
    block compiles to one graph (no graph breaks) and nothing recompiles after the first step."""
    import torch._dynamo

    curves = {}
    for fast in (False, True):
        run = tmp_path / f"fast-{fast}"
        cfg = TrainConfig.from_dict(
            run_config(
                token_dirs, run,
                trainer={"compile": fast, "max_steps": 20}, schedule={"total_steps": 20},
                checkpoint={"every": 10, "background": fast},
            )
        )  # fmt: skip
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        train(cfg, quiet=True)
        if fast:
            c = torch._dynamo.utils.counters
            assert sum(c["graph_break"].values()) == 0, dict(c["graph_break"])
            assert c["stats"]["unique_graphs"] <= 2, dict(c["stats"])  # one graph per block (train + eval modes at most)
        curves[fast] = [(r["loss"], r["grad_norm"]) for r in read_metrics(run) if "loss" in r]
    plain, fast = torch.tensor(curves[False], dtype=torch.float64), torch.tensor(curves[True], dtype=torch.float64)
    assert plain.shape == (20, 2)
    torch.testing.assert_close(fast[:, 0], plain[:, 0], rtol=1e-5, atol=1e-5)  # losses
    # grad norms: a sum of squares over every parameter, where the reordered float32 sums show most
    # (seen: 1.8e-5 relative at one step of twenty)
    torch.testing.assert_close(fast[:, 1], plain[:, 1], rtol=1e-4, atol=1e-4)


def test_async_metrics_give_the_same_run(token_dirs, tmp_path):
    """trainer.async_metrics: no host sync inside a step (metrics read one step later); the records,
    checkpoints and weights are those of the synchronous run, bit for bit."""
    from lmforge.checkpoint.unsharded import load_model
    from lmforge.checkpoint.sharded import checkpoint_dir

    off = {"skip_nonfinite": False, "spike_k": None}
    recs = {}
    for asyn in (False, True):
        run = tmp_path / f"async-{asyn}"
        cfg = TrainConfig.from_dict(run_config(token_dirs, run, trainer={"async_metrics": asyn, "stability": off}, logging={"every": 3}))
        train(cfg, quiet=True)
        recs[asyn] = [{k: r[k] for k in ("step", "loss", "grad_norm", "lr", "tokens", "tokens_seen")} for r in read_metrics(run) if "loss" in r]
    assert recs[True] == recs[False] and [r["step"] for r in recs[True]] == [3, 6, 9, 10]
    a, b = load_model(checkpoint_dir(tmp_path / "async-False", 10)), load_model(checkpoint_dir(tmp_path / "async-True", 10))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ConfigError, match="async_metrics reads the loss after the update"):
        TrainConfig.from_dict(run_config(token_dirs, tmp_path / "x", trainer={"async_metrics": True}))


class _ComputeDtypes(Callback):
    """A callback that records, for every ``nn.Linear`` call of the training steps, the dtypes of its
    input, its weight (as the forward sees it) and its output."""

    def __init__(self):
        self.seen: set[tuple[str, str, str]] = set()

    def on_start(self, trainer) -> None:
        def hook(module, args, output):
            self.seen.add((str(args[0].dtype), str(module.weight.dtype), str(output.dtype)))

        for m in trainer.module.model.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(hook)

    def column(self, i: int) -> set[str]:
        return {t[i] for t in self.seen}


def test_fsdp_in_one_process(token_dirs, tmp_path):
    """trainer.fsdp_single_process: one process wrapped by FSDP2 on a 1-rank in-memory group. In
    float32 it trains exactly like the plain model; with bf16 its mixed-precision policy (bf16
    parameters in compute, float32 master weights) computes in bf16 and stays within bf16
    tolerance of autocast."""
    import torch.distributed as dist

    from lmforge.checkpoint.unsharded import load_model
    from lmforge.checkpoint.sharded import checkpoint_dir

    curves, dtypes = {}, {}
    for name, trainer in {
        "plain": {"parallel": "none"},
        "fsdp1": {"parallel": "fsdp", "fsdp_single_process": True},
        "autocast-bf16": {"parallel": "none", "precision": "bf16"},
        "fsdp1-bf16": {"parallel": "fsdp", "fsdp_single_process": True, "precision": "bf16"},
    }.items():
        run = tmp_path / name
        dtypes[name] = _ComputeDtypes()
        train(TrainConfig.from_dict(run_config(token_dirs, run, trainer=trainer)), quiet=True, callbacks=[dtypes[name]])
        assert not dist.is_initialized()  # the 1-rank group is torn down with the run
        curves[name] = torch.tensor([r["loss"] for r in read_metrics(run) if "loss" in r], dtype=torch.float64)
    torch.testing.assert_close(curves["fsdp1"], curves["plain"], rtol=1e-5, atol=1e-6)
    a, b = load_model(checkpoint_dir(tmp_path / "plain", 10)), load_model(checkpoint_dir(tmp_path / "fsdp1", 10))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)
    # What each run computed in: every matmul of the steps, float32 or bf16 (recorded by forward hooks).
    f32, bf16 = "torch.float32", "torch.bfloat16"
    for name in ("plain", "fsdp1"):
        assert dtypes[name].seen == {(f32, f32, f32)}, (name, dtypes[name].seen)
    assert dtypes["autocast-bf16"].column(1) == {f32} and dtypes["autocast-bf16"].column(2) == {bf16}  # autocast: float32 weights, bf16 matmuls
    assert dtypes["fsdp1-bf16"].seen == {(bf16, bf16, bf16)}, dtypes["fsdp1-bf16"].seen  # FSDP's policy: bf16 parameters in compute
    master = load_model(checkpoint_dir(tmp_path / "fsdp1-bf16", 10)).state_dict()
    assert {str(v.dtype) for v in master.values() if v.is_floating_point()} == {f32}  # float32 master weights
    # bf16 changed the numbers (close, not equal) ...
    assert not torch.equal(curves["fsdp1-bf16"], curves["plain"]) and not torch.equal(curves["autocast-bf16"], curves["plain"])
    # ... within bf16 tolerance
    torch.testing.assert_close(curves["fsdp1-bf16"], curves["autocast-bf16"], rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(curves["fsdp1-bf16"], curves["plain"], rtol=3e-2, atol=3e-2)


def test_average_of_the_last_checkpoints_of_the_decay(token_dirs, tmp_path, capsys):
    """checkpoint.average_last: RUN/average is the mean of the last K checkpoints saved in the LR decay."""
    from lmforge.checkpoint import load_model

    run = tmp_path / "soup"
    cfg = _cfg(token_dirs, run, schedule={"kind": "wsd", "total_steps": 10, "warmup_steps": 2, "decay_steps": 4},
               checkpoint={"every": 2, "keep_last": 4, "average_last": 3})
    assert cfg.schedule.decay_start() == 6
    train(cfg, quiet=True)
    assert [s for s, _ in list_checkpoints(run)] == [4, 6, 8, 10]
    assert "averaged step0000006, step0000008, step0000010" in capsys.readouterr().out
    soup = load_model(run / "average").state_dict()
    parts = [load_model(run / "checkpoints" / f"step{s:07d}").state_dict() for s in (6, 8, 10)]
    for name, tensor in soup.items():
        mean = sum(p[name].double() for p in parts) / 3
        assert torch.allclose(tensor.double(), mean, atol=1e-7, rtol=0), name
    with pytest.raises(ConfigError, match="average_last .3. exceeds checkpoint.keep_last .2."):
        _cfg(token_dirs, run, checkpoint={"keep_last": 2, "average_last": 3}).validate()


def test_anneal_from_a_checkpoint_on_a_new_mix_carries_the_optimizer(token_dirs, tmp_path, capsys):
    """`lmforge train CONFIG --init-from CKPT --keep-optimizer`: a new run on another data mixture with a
    linear decay to zero starts from the checkpoint's weights and AdamW moments, with its own LR and data order."""
    from lmforge.checkpoint import CheckpointError, load_model, load_pretrained
    from lmforge.checkpoint.sharded import load_checkpoint
    from lmforge.release import export_hf
    from lmforge.train.trainer import DATA_ORDER

    stage1 = tmp_path / "stage1"
    train(_cfg(token_dirs, stage1, schedule={"total_steps": 6}), quiet=True)
    ckpt = list_checkpoints(stage1)[-1][1]
    anneal = dict(data={"sources": [{"paths": [str(token_dirs["val"])], "name": "new-mix"}], "seed": 11},
                  optim={"lr": 1.0e-3}, schedule={"kind": "linear", "warmup_steps": 0, "total_steps": 4, "final_lr_ratio": 0.0})
    path = write_run_config(token_dirs, tmp_path / "stage2", **anneal)

    # what the new run starts from: stage 1's weights and moments, its own hyperparameters
    cfg = TrainConfig.from_yaml(path).merged({"run": {"init_from": str(stage1), "keep_optimizer": True}})
    trainer = build_trainer(cfg, quiet=True)
    reference = build_trainer(_cfg(token_dirs, tmp_path / "ref"), quiet=True)
    load_checkpoint(ckpt, model=reference.module.model, optimizer=reference.module.optimizer)
    mine, theirs = trainer.module.optimizer, reference.module.optimizer
    for p, q in zip((p for g in mine.param_groups for p in g["params"]), (q for g in theirs.param_groups for q in g["params"])):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(mine.state[p][key], theirs.state[q][key]), key
    assert [g["lr"] for g in mine.param_groups] == [1.0e-3] * len(mine.param_groups)  # this run's LR, not stage 1's
    assert theirs.param_groups[0]["lr"] != 1.0e-3
    fresh = build_trainer(TrainConfig.from_yaml(path).merged({"run": {"init_from": str(stage1)}}), quiet=True)
    assert not fresh.module.optimizer.state  # without keep_optimizer: new moments

    # the run itself, from the command line
    assert main(["train", str(path), "--init-from", str(stage1), "--keep-optimizer"]) == 0
    records = _train_records(tmp_path / "stage2")
    lrs = [r["lr"] for r in records]
    assert len(records) == 4 and lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(1.0e-3) and lrs[-1] < 0.3e-3
    order = json.loads((tmp_path / "stage2" / DATA_ORDER).read_text())
    assert "new-mix" in json.dumps(order) and str(token_dirs["val"]) in json.dumps(order)
    annealed, start = load_model(list_checkpoints(tmp_path / "stage2")[-1][1]).state_dict(), load_model(ckpt).state_dict()
    assert any(not torch.equal(annealed[k], start[k]) for k in start)  # it trained on

    # an HF export has no optimizer state: one line that says so
    export_hf(*load_pretrained(ckpt), tmp_path / "hf")
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        build_trainer(TrainConfig.from_yaml(path).merged({"run": {"init_from": str(tmp_path / "hf"), "keep_optimizer": True}}), quiet=True)
    with pytest.raises(ConfigError, match="run.keep_optimizer needs run.init_from"):
        TrainConfig.from_yaml(path).merged({"run": {"keep_optimizer": True}})


def test_the_anneal_recipe_runs_on_the_cpu(token_dirs, tmp_path):
    """configs/train/olmo2-1b-anneal.yaml as shipped, pointed at a tiny stage-1 run and tiny data."""
    from pathlib import Path as _P

    from lmforge.train.trainer import DATA_ORDER

    stage1 = tmp_path / "stage1"  # grouped as OLMo-2 groups (decay_norms): the groups must match to carry the state
    train(_cfg(token_dirs, stage1, schedule={"total_steps": 4}, optim={"lr": 3e-3, "decay_norms": True}), quiet=True)
    recipe = _P(__file__).resolve().parents[2] / "configs" / "train" / "olmo2-1b-anneal.yaml"
    cfg = TrainConfig.from_yaml(recipe).merged({
        "run": {"dir": str(tmp_path / "anneal"), "init_from": str(stage1), "device": "cpu"},
        "data": {"sources": [{"name": "new-mix", "paths": [str(token_dirs["val"])]}], "dtype": "uint16", "eos_id": 0},
        "schedule": {"total_steps": 3},
        "trainer": {"global_batch": 4, "micro_batch": 2, "seq_len": 32, "precision": "fp32", "parallel": "none"},
        "logging": {"progress": False, "plot": False, "every": 1},
    })
    assert cfg.run.keep_optimizer and cfg.schedule.kind == "linear" and cfg.schedule.final_lr_ratio == 0.0
    train(cfg, quiet=True)
    assert [r["step"] for r in _train_records(tmp_path / "anneal")] == [1, 2, 3]
    assert (tmp_path / "anneal" / DATA_ORDER).is_file()
