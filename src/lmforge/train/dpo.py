"""Direct preference optimisation (Open Instruct / Tulu): a train module on the one Trainer.

For a pair (prompt x, chosen y_w, rejected y_l) with policy log-probabilities ``pc, pr`` of the
responses and the reference model's ``rc, rr``:

    sigmoid  (DPO, Rafailov et al.)    -log σ(β [(pc - rc) - (pr - rr)])              log-probs summed over tokens
    dpo_norm (Tulu 3)                  the same, on log-probs averaged over response tokens
    ipo      (Azar et al.)             ((pc - rc) - (pr - rr) - 1/(2β))²              averaged log-probs
    simpo    (Meng et al.)             -log σ(β (pc - pr) - β γ/β)                    averaged, no reference

Rewards (logged): ``β (p - r)`` (``β p`` for SimPO); their margin and how often chosen > rejected.

The reference model is the policy *before* training, so its log-probabilities are computed once,
with the policy's own weights, in a no-grad pass over the whole dataset at step 0, cached in
``RUN/reference_logps.safetensors`` (keyed by the data fingerprint) and never recomputed: no second
copy of the weights lives through training, and a resumed run reads the cache. Chosen and rejected
responses go through the policy in one forward pass (``2b`` rows).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lmforge.checkpoint.unsharded import atomic_save_safetensors
from lmforge.distributed import is_distributed
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.train.module import MicroBatch, TrainingError, TrainModule

__all__ = ["DPOTrainModule", "DPOHeldout", "preference_loss", "LOSS_TYPES", "REFERENCE_CACHE"]

LossType = Literal["sigmoid", "dpo_norm", "ipo", "simpo"]
LOSS_TYPES = ("sigmoid", "dpo_norm", "ipo", "simpo")
AVERAGED = {"dpo_norm", "ipo", "simpo"}  # losses on per-token averaged log-probs
REFERENCE_CACHE = "reference_logps.safetensors"


def preference_loss(
    policy_chosen: torch.Tensor,  # (b,) log-probs of the chosen responses (summed or averaged, per loss_type)
    policy_rejected: torch.Tensor,  # (b,)
    ref_chosen: torch.Tensor | None,  # (b,) same for the reference; unused by simpo
    ref_rejected: torch.Tensor | None,
    *,
    loss_type: LossType = "sigmoid",
    beta: float = 0.1,
    gamma_beta_ratio: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses, chosen rewards and rejected rewards, each (b,)."""
    if loss_type == "simpo":
        logits = policy_chosen - policy_rejected - gamma_beta_ratio
        losses = -F.logsigmoid(beta * logits)
        return losses, beta * policy_chosen.detach(), beta * policy_rejected.detach()
    if ref_chosen is None or ref_rejected is None:
        raise ValueError(f"loss_type {loss_type!r} needs reference log-probabilities")
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    logits = chosen_logratio - rejected_logratio
    if loss_type in ("sigmoid", "dpo_norm"):
        losses = -F.logsigmoid(beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


class DPOTrainModule(TrainModule):
    def __init__(self, *args, loss_type: LossType = "sigmoid", beta: float = 0.1, gamma_beta_ratio: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown DPO loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
        self.loss_type, self.beta, self.gamma_beta_ratio = loss_type, beta, gamma_beta_ratio
        self.reference: torch.Tensor | None = None  # (N, 4): chosen sum, rejected sum, chosen n, rejected n

    count_name = "pairs"

    def count(self, mb: MicroBatch) -> int:
        return int(mb.extra["pair_index"].numel())  # the loss is a mean over pairs

    # --- log-probabilities ------------------------------------------------------------------------
    def _sequence_logps(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of each row's label tokens and their counts, (2b,) each, one forward."""
        token_ce = self.model(mb.input_ids, labels=mb.labels, reduction="none")  # (2b, T) -log p, 0 where ignored
        n = (mb.labels != IGNORE_INDEX).sum(-1)  # (2b,)
        return -token_ce.sum(-1), n

    def _pick(self, sums: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return sums / n.clamp(min=1) if self.loss_type in AVERAGED else sums

    def loss_sum(self, mb: MicroBatch, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Summed per-pair losses of a micro-batch, and sums of the reward metrics. ``reference``:
        the (N, 4) table ``pair_index`` points into (default: the training set's)."""
        reference = self.reference if reference is None else reference
        sums, n = self._sequence_logps(mb)
        b = sums.shape[0] // 2
        logps = self._pick(sums.float(), n)
        pc, pr = logps[:b], logps[b:]  # (b,) chosen, rejected
        rc = rr = None
        if self.loss_type != "simpo":
            if reference is None:
                raise TrainingError("DPO reference log-probabilities are missing (the trainer computes them at the start)")
            ref = reference[mb.extra["pair_index"].to(reference.device)].to(device=sums.device, dtype=torch.float32)  # (b, 4)
            rc, rr = self._pick(ref[:, 0], ref[:, 2]), self._pick(ref[:, 1], ref[:, 3])
        losses, cr, rj = preference_loss(pc, pr, rc, rr, loss_type=self.loss_type, beta=self.beta, gamma_beta_ratio=self.gamma_beta_ratio)
        metrics = {
            "rewards_chosen": cr.sum(),
            "rewards_rejected": rj.sum(),
            "rewards_margin": (cr - rj).sum(),
            "rewards_accuracy": (cr > rj).float().sum(),
            "logps_chosen": pc.detach().sum(),
            "logps_rejected": pr.detach().sum(),
        }
        return losses.sum(), metrics

    # --- the reference cache ----------------------------------------------------------------------
    def prepare(self, trainer) -> None:
        """Load or compute the reference log-probabilities (before the first step)."""
        if self.loss_type == "simpo":
            return
        data = trainer.data.dataset  # the preference pairs (lmforge.train.data.ChatData wraps them)
        key = data.fingerprint()["sha256"]
        path = Path(trainer.run_dir) / REFERENCE_CACHE
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("data_sha256") == key:
                    self.reference = f.get_tensor("reference").to(torch.float64)
                    trainer.print(f"dpo: reference log-probabilities from {path}")
                    return
            if trainer.step > 0:
                raise TrainingError(f"{path} was computed for other data (fingerprint {meta.get('data_sha256')}, now {key}); restore the data or start a new run.dir")
        elif trainer.step > 0:
            raise TrainingError(
                f"{path} is missing, and the policy at step {trainer.step} is no longer the reference; restore the file "
                "from the run, or start the run again from its initial weights"
            )
        self.reference = self.compute_reference(data, trainer.micro_batch, trainer.dist.rank, trainer.dist.world_size, progress=trainer.print)
        if trainer.dist.is_main:
            atomic_save_safetensors({"reference": self.reference}, path, metadata={"data_sha256": key, "pairs": str(data.n)})
        trainer.print(f"dpo: reference log-probabilities of {data.n} pairs cached in {path}")

    @torch.no_grad()
    def compute_reference(self, data, micro_batch: int, rank: int = 0, world_size: int = 1, progress=None) -> torch.Tensor:
        """(N, 4) float64: summed log-probs and token counts of every pair's chosen and rejected
        response under the current weights. Each rank scores every ``world_size``-th micro-batch;
        ranks run the same number of forwards (FSDP needs it), then one all-reduce sums the table."""
        was_training = self.model.training
        self.model.eval()
        table = torch.zeros(data.n, 4, dtype=torch.float64, device=self.device)
        chunks = [list(range(s, min(s + micro_batch, data.n))) for s in range(0, data.n, micro_batch)]
        rounds = math.ceil(len(chunks) / world_size)
        for r in range(rounds):
            k = r * world_size + rank
            real = k < len(chunks)
            idx = chunks[k] if real else chunks[0]  # a rank with nothing left repeats a chunk, discarded
            arrays = data.pair_micro_batch(idx)
            mb = MicroBatch(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["labels"])).to(self.device)
            with self._autocast():
                sums, n = self._sequence_logps(mb)
            if real:
                b = len(idx)
                rows = torch.as_tensor(idx, device=self.device)
                table[rows] = torch.stack([sums[:b], sums[b:], n[:b], n[b:]], dim=1).double()
        if is_distributed():
            dist.all_reduce(table)
        self.model.train(was_training)
        return table.cpu()


class DPOHeldout:
    """In-loop evaluator: the DPO loss, reward margin and accuracy on held-out pairs.

    Their reference log-probabilities are taken when the evaluator is built, i.e. from the starting
    weights (the reference), before any checkpoint is loaded; at step 0 the margin is 0 by definition,
    so a positive margin later is what training moved."""

    def __init__(self, name: str, data, module: DPOTrainModule, batch_size: int, rank: int = 0, world_size: int = 1):
        self.name, self.data, self.module, self.batch_size = name, data, module, batch_size
        self.rank, self.world_size = rank, world_size
        self.reference = module.compute_reference(data, batch_size, rank, world_size)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        m = self.module
        was_training = model.training
        model.eval()
        chunks = [list(range(s, min(s + self.batch_size, self.data.n))) for s in range(0, self.data.n, self.batch_size)]
        totals = torch.zeros(4, dtype=torch.float64, device=m.device)  # loss, margin, accuracy, pairs
        for r in range(math.ceil(len(chunks) / self.world_size)):
            k = r * self.world_size + self.rank
            idx = chunks[k] if k < len(chunks) else chunks[0]
            a = self.data.pair_micro_batch(idx)
            mb = MicroBatch(torch.from_numpy(a["input_ids"]), torch.from_numpy(a["labels"]), extra={"pair_index": torch.from_numpy(a["pair_index"])}).to(m.device)
            with m._autocast():
                loss, parts = m.loss_sum(mb, reference=self.reference)
            if k < len(chunks):
                totals += torch.stack([loss.double(), parts["rewards_margin"].double(), parts["rewards_accuracy"].double(), torch.tensor(float(len(idx)), dtype=torch.float64, device=m.device)])
        if is_distributed():
            dist.all_reduce(totals)
        model.train(was_training)
        n = max(float(totals[3]), 1.0)
        return {"loss": float(totals[0]) / n, "rewards_margin": float(totals[1]) / n, "rewards_accuracy": float(totals[2]) / n}
