"""Train a tiny OLMo-2 with OLMo-core's own Trainer for two steps on the CPU (run by the import tests
in a subprocess, with OLMo-core on PYTHONPATH). Writes into OUT:

    run/step1, run/step2          OLMo-core checkpoints (its CheckpointerCallback, save_interval=1)
    batches.safetensors           the input ids OLMo-core trained on at each step ("step1", "step2")
    probe.safetensors             a fixed probe batch and the final (step-2) model's logits on it
    probe.json                    that model's mean next-token loss on the probe batch
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
from olmo_core.nn.transformer import TransformerConfig
from olmo_core.optim import AdamWConfig
from olmo_core.train import Duration, TrainerConfig, prepare_training_environment, teardown_training_environment
from olmo_core.train.callbacks import Callback, ConfigSaverCallback
from olmo_core.train.train_module import TransformerTrainModuleConfig

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
SEQ, BATCH, VOCAB = 64, 4, 380
tokens = out / "tokens.npy"
np.random.default_rng(0).integers(2, VOCAB, size=SEQ * 40, dtype=np.uint16).tofile(tokens)


class RecordBatches(Callback):
    seen: dict = {}

    def pre_step(self, batch):
        self.seen[f"step{self.trainer.global_step}"] = batch["input_ids"].clone().contiguous()


prepare_training_environment(backend="gloo")
model_cfg = TransformerConfig.olmo2_30M(vocab_size=384, n_layers=2)
dataset_cfg = NumpyFSLDatasetConfig(paths=[str(tokens)], sequence_length=SEQ, tokenizer=TokenizerConfig(vocab_size=VOCAB, eos_token_id=0, pad_token_id=1),
                                    work_dir=str(out / "work"))
module_cfg = TransformerTrainModuleConfig(rank_microbatch_size=BATCH * SEQ, max_sequence_length=SEQ,
                                          optim=AdamWConfig(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, fused=False))
trainer_cfg = TrainerConfig(save_folder=str(out / "run"), max_duration=Duration.steps(2), device="cpu", metrics_collect_interval=1)
model = model_cfg.build(init_device="cpu")
module = module_cfg.build(model, device=torch.device("cpu"))
loader = NumpyDataLoaderConfig(global_batch_size=BATCH * SEQ, seed=1, num_workers=0).build(dataset_cfg.build(), dp_process_group=None)
trainer = trainer_cfg.build(module, loader)
trainer.callbacks["checkpointer"].save_interval = 1
recorder = RecordBatches()
trainer.add_callback("record", recorder)
saver = ConfigSaverCallback()
trainer.add_callback("config_saver", saver)
saver.config = {"model": model_cfg.as_config_dict(), "dataset": dataset_cfg.as_config_dict(), "train_module": module_cfg.as_config_dict()}
trainer.fit()

save_file(dict(recorder.seen), str(out / "batches.safetensors"))
probe = torch.from_numpy(np.random.default_rng(7).integers(2, VOCAB, size=(2, SEQ)).astype(np.int64))
model.eval()
with torch.no_grad():
    logits = model(probe).float()
loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), probe[:, 1:].reshape(-1))
save_file({"input_ids": probe, "logits": logits.contiguous()}, str(out / "probe.safetensors"))
(out / "probe.json").write_text(json.dumps({"loss": float(loss)}))
teardown_training_environment()
