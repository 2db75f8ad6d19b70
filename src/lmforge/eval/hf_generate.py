"""Other generation backends for evaluation, on a stock transformers directory (an lmforge export).

    backend = hf_backend("exports/step1000", batch_size=8)       # transformers' generate
    backend = vllm_backend("exports/step1000")                   # vLLM (a CUDA GPU)
    gens = backend(prompts)                                      # [Generation], as generate_all

Both take the prompts lmforge's engine takes (:class:`lmforge.eval.generation.Prompt`) and return
the same :class:`Generation` records, so ``lmforge eval downstream --backend hf|vllm`` scores their
text with the same code: a difference in the results is a difference in the generated text.

transformers: prompts are left-padded in batches of the same order as lmforge's (length-sorted);
a row's stop sequences are checked on its decoded text after every step (a stopping criterion per
row), and the text is cut before the first stop sequence, as lm-evaluation-harness does. Prompts are
left-truncated to fit the context with their budget, as in lmforge's engine.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from lmforge.config import ConfigError
from lmforge.eval.generation import Generation, Prompt, fit_budget, plan_batches

__all__ = ["hf_backend", "vllm_backend", "cut_at_stops"]


def cut_at_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` before the first occurrence of any stop sequence; and whether one occurred."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def hf_backend(path: str | os.PathLike, *, batch_size: int = 16, device: str | None = None, dtype: torch.dtype | None = None,
               progress: bool = True):
    """Generation through ``transformers.AutoModelForCausalLM.generate`` (greedy or sampled)."""
    import transformers

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=dtype or torch.float32).to(device).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    max_length = int(model.config.max_position_embeddings)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos

    def run(prompts: Sequence[Prompt]) -> list[Generation]:
        from tqdm.auto import tqdm

        ids, cut, budgets = [], [], []
        for p in prompts:
            full = tok(p.text, add_special_tokens=False)["input_ids"] or [eos]
            budgets.append(fit_budget(len(full), p.max_new_tokens, max_length))
            keep = max_length - budgets[-1]
            ids.append(full[-keep:])
            cut.append(max(0, len(full) - keep))
        out: dict[int, Generation] = {}
        batches = plan_batches(prompts, ids, batch_size)
        for batch in tqdm(batches, desc="generate (transformers)", unit="batch", disable=not progress):
            rows = [prompts[i] for i in batch]
            for i, g in zip(batch, _hf_batch(model, tok, rows, [ids[i] for i in batch], [budgets[i] for i in batch], pad, eos, device)):
                out[i] = Generation(g[0], g[1], g[2], prompt_tokens=len(ids[i]), truncated=cut[i])
        return [out[i] for i in range(len(prompts))]

    return run


class _RowStops:
    """A stopping criterion per row: True once the row's new text holds one of its stop sequences."""

    def __init__(self, tok, stops: list[tuple[str, ...]], prompt_len: int):
        self.tok, self.stops, self.prompt_len = tok, stops, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs) -> torch.Tensor:
        done = []
        for row, stops in zip(input_ids, self.stops):
            text = self.tok.decode(row[self.prompt_len :], skip_special_tokens=True) if stops else ""
            done.append(any(s in text for s in stops))
        return torch.tensor(done, device=input_ids.device)


def _hf_batch(model, tok, prompts: Sequence[Prompt], ids: Sequence[list[int]], budgets: Sequence[int], pad: int, eos: int,
              device: str) -> list[tuple[str, int, str]]:
    import transformers

    L = max(map(len, ids))
    input_ids = torch.full((len(ids), L), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), L), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, L - len(x) :] = torch.tensor(x)
        mask[r, L - len(x) :] = 1
    first = prompts[0]
    kwargs: dict[str, Any] = dict(do_sample=first.do_sample)
    if first.do_sample:
        torch.manual_seed(first.seed)
        kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
    budget = max(budgets)
    stopping = transformers.StoppingCriteriaList([_RowStops(tok, [p.stop for p in prompts], L)])
    with torch.inference_mode():
        seqs = model.generate(
            input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=budget, min_new_tokens=0, eos_token_id=eos,
            pad_token_id=pad, stopping_criteria=stopping, **kwargs,
        )
    out = []
    for r, (p, b) in enumerate(zip(prompts, budgets)):
        new = seqs[r, L:].tolist()[:b]
        finish = "length"
        if eos in new:
            new = new[: new.index(eos) + 1]
            finish = "eos"
        text, stopped = cut_at_stops(tok.decode([t for t in new if t != eos], skip_special_tokens=True), p.stop)
        if stopped:
            finish = "stop"
        out.append((text, len(new), finish))
    return out


def vllm_backend(path: str | os.PathLike, *, dtype: str = "auto", max_model_len: int | None = None):
    """Generation through vLLM (needs ``pip install vllm`` and a CUDA GPU); the model directory is a
    stock transformers export, which vLLM loads as it is."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ConfigError("--backend vllm: vllm is not installed (pip install vllm; it needs a CUDA GPU)") from None
    llm = LLM(model=str(path), dtype=dtype, max_model_len=max_model_len)

    def run(prompts: Sequence[Prompt]) -> list[Generation]:
        params = [
            SamplingParams(temperature=p.temperature if p.do_sample else 0.0, top_p=p.top_p if p.do_sample else 1.0,
                           max_tokens=p.max_new_tokens, stop=list(p.stop), seed=p.seed if p.do_sample else None)
            for p in prompts
        ]
        outs = llm.generate([p.text for p in prompts], params, use_tqdm=True)
        gens = []
        for o in outs:
            c = o.outputs[0]
            finish = {"stop": "stop", "length": "length"}.get(c.finish_reason, c.finish_reason)
            if finish == "stop" and c.stop_reason is None:
                finish = "eos"
            gens.append(Generation(c.text, len(c.token_ids), finish, prompt_tokens=len(o.prompt_token_ids)))
        return gens

    return run
