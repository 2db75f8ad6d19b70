"""Training throughput of the OLMo-2-1B architecture on one GPU: lmforge vs OLMo-core vs HF, side by side.

One process, the same random token batches for everyone (lmforge's own micro-batches, handed to
the peers), a full step each (forward, backward, clip at 1.0, AdamW): tokens/s, MFU in both FLOPs
conventions, peak memory, and the ratio lmforge / OLMo-core.

* lmforge: the trainer's real code path: ``build_trainer`` on a ``TrainConfig`` (preset olmo2-1b,
  the settings under ``--lmforge``), then ``trainer.micro_batches(step)`` and
  ``trainer.module.train_batch(...)``, exactly what ``Trainer.fit`` runs each step.
* OLMo-core 3.0.0: ``TransformerConfig.olmo2_1B_v2``, its ``apply_compile()``, bf16 autocast,
  fused AdamW (installed from wheels: see ../shared/bench/README.md; ``PYTHONPATH`` must reach it).
* HF transformers: ``Olmo2ForCausalLM`` (sdpa) under ``torch.compile``, bf16 autocast, fused AdamW.

MFU: ``6 N + 12 L d s`` per token (lmforge/PaLM: attention not halved) and ``6 N + 6 L d s``
(OLMo-core: attention halved for causality), over the GPU's dense bf16 peak (989.4 TFLOP/s for
H100/H200). ``--tiny`` runs a 2-layer model at seq 128 on the CPU to check the script.

Agreement: lmforge's first step must report as its cross-entropy what the model's plain logits give
on that batch under the initial weights (``F.cross_entropy``, same precision; relative tolerance
1e-4 in float32, 2e-2 in bf16), and every loss must be finite. A failed check, or a requested
variant that raised, makes the script exit 1 (after writing the JSON).

    python bench/train_speed_gpu.py [--tiny] [--steps 10] [--only lmforge,olmo_core,hf_compile] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PEAK = 989.4e12  # H100/H200 SXM dense bf16


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (checks the script)")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per step for the peers (and lmforge unless --lmforge-micro-batch)")
    p.add_argument("--lmforge-micro-batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated subset of lmforge,olmo_core,hf_compile")
    p.add_argument("--lmforge", action="append", default=[], help="extra TrainConfig override for lmforge, e.g. trainer.activation_checkpointing=true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args()
    if a.tiny:
        a.seq, a.micro_batch, a.steps, a.warmup = 128, 2, 3, 1
    return a


def shapes(tiny: bool) -> dict:
    if tiny:
        return dict(d_model=64, n_layers=2, n_heads=4, mlp_hidden=256, vocab_size=512)
    return dict(d_model=2048, n_layers=16, n_heads=16, mlp_hidden=8192, vocab_size=100278)  # olmo2-1b


def flops_per_token(n_matmul_params: int, n_layers: int, d_model: int, seq: int) -> tuple[float, float]:
    """(lmforge/PaLM convention, OLMo-core convention) training FLOPs per token."""
    return 6 * n_matmul_params + 12 * n_layers * d_model * seq, 6 * n_matmul_params + 6 * n_layers * d_model * seq


class Timer:
    def __init__(self, dev: str):
        self.dev = dev

    def sync(self):
        if self.dev == "cuda":
            torch.cuda.synchronize()

    def reset_memory(self):
        if self.dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return torch.cuda.max_memory_allocated() / 2**30 if self.dev == "cuda" else None


def token_file(tmp: Path, vocab: int, seq: int, n_instances: int) -> Path:
    """Random uint32 tokens for ``n_instances`` instances of ``seq`` tokens (lmforge's raw format)."""
    rng = np.random.default_rng(0)
    toks = rng.integers(1, vocab, size=n_instances * seq, dtype=np.uint32)
    path = tmp / "tokens" / "random.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    toks.tofile(path)
    return path


def lmforge_trainer(a, tmp: Path, dev: str):
    from lmforge.models.presets import get_preset
    from lmforge.train.config import TrainConfig
    from lmforge.train.run import build_trainer

    s = shapes(a.tiny)
    model = get_preset("olmo2-1b").to_dict()
    model.update(s, max_seq_len=a.seq)
    mb = a.lmforge_micro_batch or a.micro_batch
    path = token_file(tmp, s["vocab_size"], a.seq, 64 * mb)
    cfg = TrainConfig.from_dict(
        {
            "run": {"name": "bench", "dir": str(tmp / "run"), "seed": 0, "device": dev},
            "model": model,
            "data": {"sources": [{"paths": [str(path)]}], "dtype": "uint32", "eos_id": 0},
            "optim": {"lr": 1e-4},
            "schedule": {"kind": "constant", "warmup_steps": 0, "total_steps": 10_000},
            "trainer": {"global_batch": mb, "micro_batch": mb, "precision": "bf16" if dev == "cuda" else "fp32", "compile": dev == "cuda", "z_loss": 1e-5},
            "checkpoint": {"every": None, "at_end": False},
            "logging": {"progress": False, "plot": False},
        }
    ).merged(a.lmforge)
    return build_trainer(cfg, quiet=True), cfg


def plain_first_step_ce(trainer) -> float:
    """Cross-entropy of step 0's batch under the current (initial) weights, from the model's plain
    logits in the trainer's precision: what the trainer's first step must report as ``ce``."""
    from lmforge.nn.loss import IGNORE_INDEX

    module = trainer.module
    total, n = 0.0, 0
    with torch.no_grad(), module._autocast():
        for mb in trainer.micro_batches(0):
            mb = mb.to(module.device)
            logits = module.model(mb.input_ids).float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), mb.labels.reshape(-1),
                                                       ignore_index=IGNORE_INDEX, reduction="sum").item()  # fmt: skip
            n += int((mb.labels != IGNORE_INDEX).sum())
            del logits
    return total / n


def run_lmforge(a, trainer, timer: Timer) -> dict:
    module = trainer.module
    plain_ce = plain_first_step_ce(trainer)
    times, loss, losses, first_ce = [], None, [], None
    for i in range(a.warmup + a.steps):
        mbs = trainer.micro_batches(i)
        timer.sync()
        t = time.perf_counter()
        if trainer.async_metrics:  # as Trainer.fit runs it: no host sync inside the step
            metrics = module.train_batch(mbs, i, defer=True)
        else:
            metrics = module.train_batch(mbs, i)
        timer.sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
        m = metrics.resolve() if trainer.async_metrics else metrics
        loss = m["loss"]
        losses.append(loss)
        if i == 0:
            first_ce = m["ce"]
    model = module.model
    n = sum(p.numel() for p in model.parameters()) - model.embed.weight.numel() + (model.embed.weight.numel() if model.lm_head is None else 0)
    rtol = 2e-2 if module.autocast_dtype is not None or trainer_precision_is_bf16(module) else 1e-4
    agree = {"first_step_ce": first_ce, "plain_ce": plain_ce, "rel_diff": abs(first_ce - plain_ce) / plain_ce, "rtol": rtol,
             "losses_finite": all(np.isfinite(losses))}  # fmt: skip
    agree["ok"] = bool(agree["rel_diff"] <= rtol and agree["losses_finite"])
    return {"times": times, "loss": loss, "matmul_params": n, "batch": trainer.micro_batch, "agreement": agree}


def trainer_precision_is_bf16(module) -> bool:
    """bf16 compute without autocast: FSDP's mixed-precision policy (parameters in bf16 in the forward)."""
    return any(p.dtype == torch.bfloat16 for p in module.model.parameters())


def peer_batches(trainer, n: int) -> list[torch.Tensor]:
    """The token ids of lmforge's first ``n`` steps: (b, seq) each, inputs; labels are them shifted."""
    return [trainer.micro_batches(i)[0].input_ids for i in range(n)]


def run_peer(a, model, loss_fn, batches, dev: str, timer: Timer) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=dev == "cuda")
    times, loss = [], None
    for i in range(a.warmup + a.steps):
        x = batches[i % len(batches)].to(dev)
        timer.sync()
        t = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = loss_fn(model, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    return {"times": times, "loss": loss.item(), "batch": batches[0].shape[0]}


def shifted_ce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))


def hf_model(a, dev: str):
    from transformers import Olmo2Config, Olmo2ForCausalLM

    s = shapes(a.tiny)
    c = Olmo2Config(
        vocab_size=s["vocab_size"], hidden_size=s["d_model"], intermediate_size=s["mlp_hidden"], num_hidden_layers=s["n_layers"],
        num_attention_heads=s["n_heads"], max_position_embeddings=a.seq, rope_theta=500000, rms_norm_eps=1e-6,
        tie_word_embeddings=False, attn_implementation="sdpa", eos_token_id=0, pad_token_id=1, bos_token_id=None,
    )  # fmt: skip
    m = Olmo2ForCausalLM(c).to(dev)
    n = sum(p.numel() for p in m.parameters()) - m.model.embed_tokens.weight.numel()
    return torch.compile(m), n


def olmo_core_model(a, dev: str):
    from olmo_core.nn.transformer import TransformerConfig

    s = shapes(a.tiny)
    if a.tiny:
        c = TransformerConfig.olmo2_1B_v2(vocab_size=s["vocab_size"])
        c.d_model, c.n_layers = s["d_model"], s["n_layers"]
        c.block.sequence_mixer.n_heads = s["n_heads"]
        c.block.feed_forward.hidden_size = s["mlp_hidden"]
    else:
        c = TransformerConfig.olmo2_1B_v2(vocab_size=s["vocab_size"])
    m = c.build(init_device=dev)
    if dev == "cuda":
        m.apply_compile()
    n = sum(p.numel() for p in m.parameters()) - m.embeddings.weight.numel()
    return m, n


def olmo_core_loss(m, x):
    return shifted_ce(m(x), x)


def main() -> int:
    a = parse()
    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    timer = Timer(dev)
    s = shapes(a.tiny)
    only = set(a.only.split(",")) if a.only else {"lmforge", "olmo_core", "hf_compile"}
    results: dict = {
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__, "seq": a.seq,
        "steps": a.steps, "warmup": a.warmup, "shapes": s, "lmforge_overrides": a.lmforge,
        "command": "python bench/train_speed_gpu.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = lmforge_trainer(a, Path(tmp), dev)
        batches = peer_batches(trainer, 4)
        variants = {
            "lmforge": lambda: run_lmforge(a, trainer, timer),
            "olmo_core": lambda: (lambda mn: {**run_peer(a, mn[0], olmo_core_loss, batches, dev, timer), "matmul_params": mn[1]})(olmo_core_model(a, dev)),
            "hf_compile": lambda: (lambda mn: {**run_peer(a, mn[0], lambda m, x: shifted_ce(m(input_ids=x).logits, x), batches, dev, timer), "matmul_params": mn[1]})(hf_model(a, dev)),
        }
        for name, fn in variants.items():
            if name not in only:
                continue
            timer.reset_memory()
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported, the others still run
                traceback.print_exc()
                results[name] = {"error": repr(e)[:500]}
                continue
            med = sorted(r["times"])[len(r["times"]) // 2]
            tps = r["batch"] * a.seq / med
            f_ours, f_core = flops_per_token(r["matmul_params"], s["n_layers"], s["d_model"], a.seq)
            results[name] = {
                **({"agreement": r["agreement"]} if "agreement" in r else {}),
                "tokens_per_s": tps, "step_s_median": med, "batch": r["batch"], "loss_last": r["loss"],
                "mfu_lmforge_convention": tps * f_ours / PEAK, "mfu_olmo_core_convention": tps * f_core / PEAK,
                "peak_memory_gib": timer.peak_gib(),
            }  # fmt: skip
            mem = f"{results[name]['peak_memory_gib']:.1f} GiB" if dev == "cuda" else "n/a"
            print(f"{name:12s} {tps:10.0f} tok/s  MFU {100 * results[name]['mfu_lmforge_convention']:5.1f}% (ours) "
                  f"{100 * results[name]['mfu_olmo_core_convention']:5.1f}% (OLMo-core)  peak {mem}  loss {r['loss']:.3f}", flush=True)  # fmt: skip
            if name == "lmforge":
                g = r["agreement"]
                print(f"{'':12s} agreement: first step's cross-entropy {g['first_step_ce']:.6f}, from plain logits {g['plain_ce']:.6f} "
                      f"(relative difference {g['rel_diff']:.1e}, tolerance {g['rtol']:g})" + ("" if g["ok"] else "  << FAILED"), flush=True)  # fmt: skip
                del trainer
    if "tokens_per_s" in results.get("lmforge", {}) and "tokens_per_s" in results.get("olmo_core", {}):
        results["ratio_lmforge_over_olmo_core"] = results["lmforge"]["tokens_per_s"] / results["olmo_core"]["tokens_per_s"]
        print(f"lmforge / OLMo-core: {results['ratio_lmforge_over_olmo_core']:.3f}x tokens/s", flush=True)
    (out / "train_speed_gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    failed = [name for name in only if name in variants and "error" in results.get(name, {})]
    if failed:
        print(f"failed: {', '.join(sorted(failed))} (see above)", flush=True)
    lmforge_ok = "lmforge" not in only or results.get("lmforge", {}).get("agreement", {}).get("ok", False)
    return 0 if lmforge_ok and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
