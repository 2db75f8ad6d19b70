"""Train a tiny OLMo model with the original OLMo trainer's code (``ai2-olmo``: its model, its
AdamW and param groups, its FullCheckpointer) for two steps on the CPU; run by the import tests in
a subprocess with ``ai2-olmo`` on PYTHONPATH. ``ARCH`` is olmo2 (RMSNorm after each sublayer,
QK-norm) or olmo1 (parameter-free LayerNorm before, tied embeddings). Writes into OUT:

    step1-unsharded, step2-unsharded   model.pt, optim.pt, train.pt, config.yaml (FullCheckpointer, DDP)
    batches.safetensors                the input ids of each step ("step1", "step2")
    probe.safetensors, probe.json      a probe batch, the step-2 model's logits and mean loss on it
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from olmo.checkpoint import FullCheckpointer
from olmo.config import ModelConfig, OptimizerConfig, TrainConfig
from olmo.model import OLMo
from olmo.optim import build_optimizer

out, arch = Path(sys.argv[1]), sys.argv[2]
out.mkdir(parents=True, exist_ok=True)
SEQ, BATCH, VOCAB = 64, 4, 380
olmo2 = arch == "olmo2"
model_cfg = ModelConfig(
    d_model=128, n_heads=4, n_layers=2, mlp_hidden_size=2 * 352, activation_type="swiglu", block_type="sequential",
    rope=True, rope_theta=500_000 if olmo2 else 10_000, attention_layer_norm=olmo2, layer_norm_type="rms" if olmo2 else "default",
    layer_norm_with_affine=olmo2, attention_layer_norm_with_affine=olmo2, layer_norm_eps=1e-6 if olmo2 else 1e-5,
    norm_after=olmo2, include_bias=False, weight_tying=not olmo2, vocab_size=VOCAB, embedding_size=384, max_sequence_length=SEQ,
    attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, init_device="cpu", flash_attention=False,
)
cfg = TrainConfig(model=model_cfg, save_folder=str(out), seed=3,
                  optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8,
                                            decay_norm_and_bias=olmo2, decay_embeddings=False))
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(3)
model = OLMo(model_cfg)
model.reset_parameters()
ddp = torch.nn.parallel.DistributedDataParallel(model)
optim = build_optimizer(cfg, model)
gen = torch.Generator().manual_seed(0)
batches = {}


def loss_of(m, ids):
    logits = m(ids).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


for step in (1, 2):
    ids = torch.randint(2, VOCAB, (BATCH, SEQ), generator=gen)
    batches[f"step{step}"] = ids
    loss_of(ddp, ids).backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    FullCheckpointer(cfg).save_checkpoint(out / f"step{step}-unsharded", ddp, optim, {"global_step": step})

save_file(batches, str(out / "batches.safetensors"))
probe = torch.randint(2, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(7))
model.eval()
with torch.no_grad():
    logits = model(probe).logits.float()
    loss = loss_of(model, probe)
save_file({"input_ids": probe, "logits": logits.contiguous()}, str(out / "probe.safetensors"))
(out / "probe.json").write_text(json.dumps({"loss": float(loss)}))
dist.destroy_process_group()
